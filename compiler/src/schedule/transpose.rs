//! Folding transposes into matrix products: a `permute` that swaps the last two axes
//! and feeds a `matmul` is not materialised; the product reads the permute's operand
//! with swapped strides instead (the CPU backend's `gemm` takes arbitrary strides).
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

/// The values a step computing node `v` reads, after folding transposes into
/// products (empty for leaves).
pub fn reads(g: &Graph, v: ValueId) -> Vec<ValueId> {
    match &g.value(v).def {
        Def::Node {
            op: Op::MatMul,
            operands,
        } => operands
            .iter()
            .map(|&o| matmul_operand(g, o).value)
            .collect(),
        Def::Node { operands, .. } => operands.clone(),
        _ => Vec::new(),
    }
}
