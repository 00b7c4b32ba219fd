//! Reductions: `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin` (as `-max(-x)`),
//! with `keepdims` and `noop_with_empty_axes`.

use super::movement::axes_operand;
use super::one;
use crate::onnx::import::{norm_axis, Importer, NodeCtx, OpResult, Out};
use smelt_compiler::ir::ops::{ReduceOp, UnaryOp};
use smelt_compiler::ir::{DType, Op};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    // (IR reduction, negate around it, opset from which axes are an input)
    let (rop, negate, axes_input_from) = match op {
        "ReduceSum" => (ReduceOp::Sum, false, 13),
        "ReduceMean" => (ReduceOp::Mean, false, 18),
        "ReduceMax" => (ReduceOp::Max, false, 18),
        "ReduceMin" => (ReduceOp::Max, true, 18),
        _ => return Ok(None),
    };
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let rank = ty.rank();
    let axes = axes_operand(im, node, axes_input_from)?.unwrap_or_default();
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<OpResult<Vec<usize>>>()?;
    if axes.is_empty() {
        if node.int_or("noop_with_empty_axes", 0)? != 0 {
            return one(x);
        }
        axes = (0..rank).collect();
    }
    axes.sort_unstable();
    axes.dedup();
    // Booleans reduce as 0/1 integers (max is "any", min is "all").
    let work = if ty.dtype == DType::Bool {
        im.cast(x, DType::I32)?
    } else {
        x
    };
    let mut y = work;
    if negate {
        y = im.op(Op::Unary(UnaryOp::Neg), &[y])?;
    }
    y = im.op(
        Op::Reduce {
            op: rop,
            axes: axes.clone(),
        },
        &[y],
    )?;
    if negate {
        y = im.op(Op::Unary(UnaryOp::Neg), &[y])?;
    }
    let y = im.cast(y, ty.dtype)?;
    let y = if node.int_or("keepdims", 1)? != 0 {
        im.keep_dims(y, rank, &axes)?
    } else {
        y
    };
    one(y)
}
