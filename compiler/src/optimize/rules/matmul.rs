//! Matrix-product algebra: association order, factoring shared operands, and moving
//! scalar factors to the smaller side of a product. The extractor picks whichever form
//! the target's cost model says is cheapest.
//!
//! Invariant: equal in exact arithmetic; in floating point the summation order of the
//! rewritten products changes, so results agree to rounding (about `K·ε` relative for a
//! contraction of length `K`), not bit for bit.

use super::super::analysis::node_type;
use super::{constant, node_rule, nodes_where, ty, Build, TensorGraph};
use crate::ir::ops::BinaryOp;
use crate::ir::Op;
use egg::{Id, Rewrite};

use super::super::{TensorAnalysis, TensorNode};

fn mm(a: Build, b: Build) -> Build {
    Build::op(Op::MatMul, vec![a, b])
}

/// `(x, splat value)` for `mul` nodes by a constant in class `id`.
fn scaled(egraph: &TensorGraph, id: Id) -> Option<(Id, f64)> {
    nodes_where(egraph, id, |op| *op == Op::Binary(BinaryOp::Mul)).find_map(|n| {
        let (x, c) = (n.children[0], n.children[1]);
        match (constant(egraph, c), constant(egraph, x)) {
            (Some(k), _) => Some((x, k)),
            (None, Some(k)) => Some((c, k)),
            _ => None,
        }
    })
}

fn matmuls(egraph: &TensorGraph, id: Id) -> impl Iterator<Item = (Id, Id)> + '_ {
    nodes_where(egraph, id, |op| *op == Op::MatMul).map(|n| (n.children[0], n.children[1]))
}

/// The rules.
pub fn rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    vec![
        node_rule("matmul/assoc-left-to-right", &["matmul"], |eg, n| {
            let Op::MatMul = n.op()? else { return None };
            let (ab, c) = (n.children[0], n.children[1]);
            let (a, b) = matmuls(eg, ab).next()?;
            Some(mm(Build::Class(a), mm(Build::Class(b), Build::Class(c))))
        }),
        node_rule("matmul/assoc-right-to-left", &["matmul"], |eg, n| {
            let Op::MatMul = n.op()? else { return None };
            let (a, bc) = (n.children[0], n.children[1]);
            let (b, c) = matmuls(eg, bc).next()?;
            Some(mm(mm(Build::Class(a), Build::Class(b)), Build::Class(c)))
        }),
        node_rule("matmul/factor-shared-operand", &["add"], |eg, n| {
            let Op::Binary(BinaryOp::Add) = n.op()? else {
                return None;
            };
            let (l, r) = (n.children[0], n.children[1]);
            for (a, b) in matmuls(eg, l) {
                for (c, d) in matmuls(eg, r) {
                    let same = |x: Id, y: Id| eg.find(x) == eg.find(y);
                    if same(a, c) && ty(eg, b) == ty(eg, d) {
                        let sum = Build::op(
                            Op::Binary(BinaryOp::Add),
                            vec![Build::Class(b), Build::Class(d)],
                        );
                        return Some(mm(Build::Class(a), sum));
                    }
                    if same(b, d) && ty(eg, a) == ty(eg, c) {
                        let sum = Build::op(
                            Op::Binary(BinaryOp::Add),
                            vec![Build::Class(a), Build::Class(c)],
                        );
                        return Some(mm(sum, Build::Class(b)));
                    }
                }
            }
            None
        }),
        node_rule("matmul/pull-scalar-out", &["matmul"], |eg, n| {
            let Op::MatMul = n.op()? else { return None };
            let (a, b) = (n.children[0], n.children[1]);
            let (inner, k, other_left) = match (scaled(eg, a), scaled(eg, b)) {
                (Some((x, k)), _) => (x, k, true),
                (None, Some((x, k))) => (x, k, false),
                _ => return None,
            };
            let product = if other_left {
                mm(Build::Class(inner), Build::Class(b))
            } else {
                mm(Build::Class(a), Build::Class(inner))
            };
            let out_ty = node_type(eg, n).ok()?;
            Some(Build::op(
                Op::Binary(BinaryOp::Mul),
                vec![product, Build::splat(k, out_ty)],
            ))
        }),
        node_rule("matmul/push-scalar-in", &["mul"], |eg, n| {
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            let (x, c) = (n.children[0], n.children[1]);
            let k = constant(eg, c)?;
            let (a, b) = matmuls(eg, x).next()?;
            // Scale the smaller operand.
            let smaller_left = numel(eg, a) <= numel(eg, b);
            let scale = |v: Id| {
                Build::op(
                    Op::Binary(BinaryOp::Mul),
                    vec![Build::Class(v), Build::splat(k, ty(eg, v).clone())],
                )
            };
            Some(if smaller_left {
                mm(scale(a), Build::Class(b))
            } else {
                mm(Build::Class(a), scale(b))
            })
        }),
    ]
}

fn numel(egraph: &TensorGraph, id: Id) -> u64 {
    ty(egraph, id)
        .dims()
        .iter()
        .map(|d| d.coeff() * if d.syms().is_empty() { 1 } else { 32 })
        .product()
}
