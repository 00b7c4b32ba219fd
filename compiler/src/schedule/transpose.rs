//! Folding transposes into matrix products: a `permute` that swaps the last two axes
//! and feeds a `matmul` (either operand) or a `grouped_matmul` (its `[E, N, K]` weight)
//! is not materialised; the product reads the permute's operand with swapped strides
//! instead (the CPU backend's `gemm` takes arbitrary strides, and the GPU kernels index
//! through them).
//!
//! The permute stays in the graph; it only gets a kernel of its own when some other
//! step reads it.

use super::MatMulOperand;
use crate::ir::ops::movement::swaps_last_two;
use crate::ir::{Def, Graph, Op, ValueId};

/// How a matrix product reads its operand `v`: through a transpose when `v` is one.
pub fn matmul_operand(g: &Graph, v: ValueId) -> MatMulOperand {
    match &g.value(v).def {
        Def::Node {
            op: Op::Permute { perm },
            operands,
        } if swaps_last_two(perm) => MatMulOperand {
            value: operands[0],
            transposed: true,
        },
        _ => MatMulOperand {
            value: v,
            transposed: false,
        },
    }
}

/// How the step computing node `v` reads each of its operands, in operand order, after
/// folding transposes into products (empty for leaves).
pub fn operands(g: &Graph, v: ValueId) -> Vec<MatMulOperand> {
    let Def::Node { op, operands } = &g.value(v).def else {
        return Vec::new();
    };
    operands
        .iter()
        .enumerate()
        .map(|(i, &o)| match op {
            Op::MatMul => matmul_operand(g, o),
            Op::GroupedMatMul if i == 1 => matmul_operand(g, o),
            _ => MatMulOperand {
                value: o,
                transposed: false,
            },
        })
        .collect()
}

/// The values the step computing node `v` reads, after folding transposes into
/// products (empty for leaves).
pub fn reads(g: &Graph, v: ValueId) -> Vec<ValueId> {
    operands(g, v).into_iter().map(|o| o.value).collect()
}
