//! Algebraic identities.
//!
//! Invariant: every rule here gives bit-for-bit the same result for every input,
//! NaN and infinities included (IEEE 754 semantics, `-0 + 0 = +0` counted as equal
//! to `-0` since it compares equal), except the rules of [`finite_rules`], which assume
//! finite values (`x - x` is NaN for an infinite `x`; `x * 0` is NaN for an infinite
//! or NaN `x`) and are only used when the caller opts in. Division by a constant
//! becomes a multiplication only when the reciprocal is exact (a power of two).
//! Constant folding itself happens in the analysis ([`super::super::analysis`]).

use super::{constant, node_rule, ty, Build, TensorGraph};
use crate::ir::ops::{BinaryOp, UnaryOp};
use crate::ir::{DType, Op};
use egg::{Id, Rewrite};

use super::super::{TensorAnalysis, TensorNode};

fn is_const(egraph: &TensorGraph, id: Id, value: f64) -> bool {
    constant(egraph, id) == Some(value)
}

fn binary(n: &TensorNode) -> Option<(BinaryOp, Id, Id)> {
    match n.op()? {
        Op::Binary(b) => Some((*b, n.children[0], n.children[1])),
        _ => None,
    }
}

/// The operand of `neg` nodes in class `id`, if any.
fn negated(egraph: &TensorGraph, id: Id) -> Option<Id> {
    egraph[id]
        .nodes
        .iter()
        .find(|n| n.op() == Some(&Op::Unary(UnaryOp::Neg)))
        .map(|n| n.children[0])
}

fn neg(x: Build) -> Build {
    Build::op(Op::Unary(UnaryOp::Neg), vec![x])
}

fn bin(op: BinaryOp, a: Build, b: Build) -> Build {
    Build::op(Op::Binary(op), vec![a, b])
}

/// The rules that hold for all values.
pub fn rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    use BinaryOp::*;
    vec![
        node_rule("algebra/mul-one", &["mul"], |eg, n| match binary(n)? {
            (Mul, x, c) | (Mul, c, x) if is_const(eg, c, 1.0) => Some(Build::Class(x)),
            _ => None,
        }),
        node_rule("algebra/mul-minus-one", &["mul"], |eg, n| {
            match binary(n)? {
                (Mul, x, c) | (Mul, c, x) if is_const(eg, c, -1.0) => Some(neg(Build::Class(x))),
                _ => None,
            }
        }),
        node_rule("algebra/add-zero", &["add"], |eg, n| match binary(n)? {
            (Add, x, c) | (Add, c, x) if is_const(eg, c, 0.0) => Some(Build::Class(x)),
            _ => None,
        }),
        node_rule("algebra/sub-zero", &["sub"], |eg, n| match binary(n)? {
            (Sub, x, c) if is_const(eg, c, 0.0) => Some(Build::Class(x)),
            _ => None,
        }),
        node_rule("algebra/zero-sub", &["sub"], |eg, n| match binary(n)? {
            (Sub, c, x) if is_const(eg, c, 0.0) => Some(neg(Build::Class(x))),
            _ => None,
        }),
        node_rule("algebra/div-one", &["div"], |eg, n| match binary(n)? {
            (Div, x, c) if is_const(eg, c, 1.0) => Some(Build::Class(x)),
            _ => None,
        }),
        node_rule("algebra/div-pow2-to-mul", &["div"], |eg, n| {
            match binary(n)? {
                (Div, x, c) => {
                    let k = constant(eg, c)?;
                    let exact = k != 0.0 && k.is_finite() && (1.0 / k).is_finite() && {
                        let (m, _) = frexp(k.abs());
                        m == 0.5
                    };
                    (exact && ty(eg, x).dtype == DType::F32).then(|| {
                        bin(
                            Mul,
                            Build::Class(x),
                            Build::splat(1.0 / k, ty(eg, c).clone()),
                        )
                    })
                }
                _ => None,
            }
        }),
        node_rule("algebra/neg-neg", &["neg"], |eg, n| match n.op()? {
            Op::Unary(UnaryOp::Neg) => negated(eg, n.children[0]).map(Build::Class),
            _ => None,
        }),
        node_rule("algebra/sub-neg", &["sub"], |eg, n| match binary(n)? {
            (Sub, x, y) => negated(eg, y).map(|y| bin(Add, Build::Class(x), Build::Class(y))),
            _ => None,
        }),
        node_rule("algebra/add-neg", &["add"], |eg, n| match binary(n)? {
            (Add, x, y) => match (negated(eg, x), negated(eg, y)) {
                (_, Some(y)) => Some(bin(Sub, Build::Class(x), Build::Class(y))),
                (Some(x), None) => Some(bin(Sub, Build::Class(y), Build::Class(x))),
                _ => None,
            },
            _ => None,
        }),
        node_rule("algebra/neg-times-neg", &["mul"], |eg, n| {
            match binary(n)? {
                (Mul, x, y) => {
                    let (x, y) = (negated(eg, x)?, negated(eg, y)?);
                    Some(bin(Mul, Build::Class(x), Build::Class(y)))
                }
                _ => None,
            }
        }),
        node_rule(
            "algebra/idempotent-max-min",
            &["max", "min"],
            |eg, n| match binary(n)? {
                (Max | Min, x, y) if eg.find(x) == eg.find(y) => Some(Build::Class(x)),
                _ => None,
            },
        ),
        node_rule("algebra/select-same", &["select"], |eg, n| {
            match n.op()? {
                Op::Select if eg.find(n.children[1]) == eg.find(n.children[2]) => {
                    Some(Build::Class(n.children[1]))
                }
                _ => None,
            }
        }),
        node_rule("algebra/cast-same-type", &["cast"], |eg, n| {
            match n.op()? {
                Op::Cast if n.key.declared() == Some(ty(eg, n.children[0])) => {
                    Some(Build::Class(n.children[0]))
                }
                _ => None,
            }
        }),
    ]
}

/// Rules that hold only for finite values; the caller opts in.
pub fn finite_rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    use BinaryOp::*;
    vec![
        node_rule("algebra/sub-self", &["sub"], |eg, n| match binary(n)? {
            (Sub, x, y) if eg.find(x) == eg.find(y) && ty(eg, x).dtype.is_float() => {
                Some(Build::splat(0.0, ty(eg, x).clone()))
            }
            _ => None,
        }),
        node_rule("algebra/mul-zero", &["mul"], |eg, n| match binary(n)? {
            (Mul, x, c) | (Mul, c, x) if is_const(eg, c, 0.0) && ty(eg, x).dtype.is_float() => {
                Some(Build::splat(0.0, ty(eg, x).clone()))
            }
            _ => None,
        }),
    ]
}

/// `x = m * 2^e` with `0.5 <= m < 1` (for finite non-zero `x`).
fn frexp(x: f64) -> (f64, i32) {
    let e = x.abs().log2().floor() as i32 + 1;
    (x / 2f64.powi(e), e)
}
