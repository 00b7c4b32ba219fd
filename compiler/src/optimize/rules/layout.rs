//! Layout rules: cancel and combine `permute`, `reshape` and `broadcast`, sink
//! transposes through products so they cancel.
//!
//! Invariant: these rules only move elements, never change them, so results are
//! bit-for-bit equal. `(A B)ᵀ = Bᵀ Aᵀ` holds exactly too: each element is the same
//! dot product, summed in the same order.

use super::{node_rule, nodes_where, ty, Build, TensorGraph};
use crate::ir::Op;
use egg::{Id, Rewrite};

use super::super::{TensorAnalysis, TensorNode};

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

use crate::ir::ops::movement::swaps_last_two as is_last_swap;

fn last_swap(rank: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..rank).collect();
    p.swap(rank - 2, rank - 1);
    p
}

fn transpose(x: Build, rank: usize) -> Build {
    Build::op(
        Op::Permute {
            perm: last_swap(rank),
        },
        vec![x],
    )
}

/// Operands of the transposes (last two axes swapped) in class `id`.
fn transposed(egraph: &TensorGraph, id: Id) -> Option<Id> {
    nodes_where(
        egraph,
        id,
        |op| matches!(op, Op::Permute { perm } if is_last_swap(perm)),
    )
    .map(|n| n.children[0])
    .next()
}

/// The rules.
pub fn rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    vec![
        node_rule("layout/permute-identity", &["permute"], |_, n| {
            match n.op()? {
                Op::Permute { perm } if is_identity(perm) => Some(Build::Class(n.children[0])),
                _ => None,
            }
        }),
        node_rule("layout/permute-permute", &["permute"], |eg, n| {
            let Op::Permute { perm: outer } = n.op()? else {
                return None;
            };
            let inner_node =
                nodes_where(eg, n.children[0], |op| matches!(op, Op::Permute { .. })).next()?;
            let Some(Op::Permute { perm: inner }) = inner_node.op() else {
                return None;
            };
            // Result axis i is inner axis outer[i], which is source axis inner[outer[i]].
            let perm: Vec<usize> = outer.iter().map(|&o| inner[o]).collect();
            let x = Build::Class(inner_node.children[0]);
            Some(if is_identity(&perm) {
                x
            } else {
                Build::op(Op::Permute { perm }, vec![x])
            })
        }),
        node_rule("layout/reshape-identity", &["reshape"], |eg, n| {
            match n.op()? {
                Op::Reshape if n.key.declared() == Some(ty(eg, n.children[0])) => {
                    Some(Build::Class(n.children[0]))
                }
                _ => None,
            }
        }),
        node_rule("layout/reshape-reshape", &["reshape"], |eg, n| {
            let Op::Reshape = n.op()? else { return None };
            let inner = nodes_where(eg, n.children[0], |op| *op == Op::Reshape).next()?;
            let declared = n.key.declared()?.clone();
            Some(Build::typed(
                Op::Reshape,
                declared,
                vec![Build::Class(inner.children[0])],
            ))
        }),
        node_rule(
            "layout/broadcast-identity",
            &["broadcast"],
            |eg, n| match n.op()? {
                Op::Broadcast { dims }
                    if is_identity(dims) && n.key.declared() == Some(ty(eg, n.children[0])) =>
                {
                    Some(Build::Class(n.children[0]))
                }
                _ => None,
            },
        ),
        node_rule("layout/broadcast-broadcast", &["broadcast"], |eg, n| {
            let Op::Broadcast { dims: outer } = n.op()? else {
                return None;
            };
            let inner_node =
                nodes_where(eg, n.children[0], |op| matches!(op, Op::Broadcast { .. })).next()?;
            let Some(Op::Broadcast { dims: inner }) = inner_node.op() else {
                return None;
            };
            // Source axis i goes to middle axis inner[i], then to result axis outer[inner[i]].
            let dims: Vec<usize> = inner.iter().map(|&i| outer[i]).collect();
            let declared = n.key.declared()?.clone();
            Some(Build::typed(
                Op::Broadcast { dims },
                declared,
                vec![Build::Class(inner_node.children[0])],
            ))
        }),
        node_rule("layout/transpose-of-matmul", &["permute"], |eg, n| {
            let Op::Permute { perm } = n.op()? else {
                return None;
            };
            if !is_last_swap(perm) {
                return None;
            }
            let mm = nodes_where(eg, n.children[0], |op| *op == Op::MatMul).next()?;
            let (a, b) = (mm.children[0], mm.children[1]);
            let r = perm.len();
            Some(Build::op(
                Op::MatMul,
                vec![transpose(Build::Class(b), r), transpose(Build::Class(a), r)],
            ))
        }),
        node_rule("layout/matmul-of-transposes", &["matmul"], |eg, n| {
            let Op::MatMul = n.op()? else { return None };
            let a = transposed(eg, n.children[0])?;
            let b = transposed(eg, n.children[1])?;
            let r = ty(eg, a).rank();
            Some(transpose(
                Build::op(Op::MatMul, vec![Build::Class(b), Build::Class(a)]),
                r,
            ))
        }),
        node_rule(
            "layout/sink-permute-through-unary",
            &["permute"],
            |eg, n| {
                let Op::Permute { perm } = n.op()? else {
                    return None;
                };
                let u = nodes_where(eg, n.children[0], |op| matches!(op, Op::Unary(_))).next()?;
                let inner = Build::op(
                    Op::Permute { perm: perm.clone() },
                    vec![Build::Class(u.children[0])],
                );
                Some(Build::Node(u.key.clone(), vec![inner]))
            },
        ),
    ]
}
