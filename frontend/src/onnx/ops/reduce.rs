//! Reductions: `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin` (as `-max(-x)`), and
//! the sums of a map, `ReduceL1` (of `|x|`), `ReduceL2` (`sqrt` of the sum of `x²`),
//! `ReduceSumSquare`, `ReduceLogSum` and `ReduceLogSumExp` (`log` of the sum of `eˣ`),
//! with `keepdims` and `noop_with_empty_axes` (which still applies the maps).

use super::movement::axes_operand;
use super::one;
use crate::onnx::import::{norm_axis, unsupported, Importer, NodeCtx, OpResult, Out};
use crate::onnx::tensor::Const;
use smelt_compiler::ir::ops::{BinaryOp, ReduceOp, UnaryOp};
use smelt_compiler::ir::{DType, Op, ValueId};

/// An elementwise map applied before a sum.
#[derive(Clone, Copy)]
enum Map {
    Abs,
    Square,
    Exp,
}

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    if op == "ArgMax" || op == "ArgMin" {
        return one(arg_extreme(im, node, op == "ArgMin")?);
    }
    // (IR reduction, negate around it, opset from which axes are an input)
    let (rop, negate, axes_input_from) = match op {
        "ReduceSum" => (ReduceOp::Sum, false, 13),
        "ReduceMean" => (ReduceOp::Mean, false, 18),
        "ReduceMax" => (ReduceOp::Max, false, 18),
        "ReduceMin" => (ReduceOp::Max, true, 18),
        "ReduceL1" | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => {
            (ReduceOp::Sum, false, 18)
        }
        _ => return Ok(None),
    };
    // The map before the sum and the one after it.
    let (before, after): (Option<Map>, Option<UnaryOp>) = match op {
        "ReduceL1" => (Some(Map::Abs), None),
        "ReduceL2" => (Some(Map::Square), Some(UnaryOp::Sqrt)),
        "ReduceSumSquare" => (Some(Map::Square), None),
        "ReduceLogSum" => (None, Some(UnaryOp::Log)),
        "ReduceLogSumExp" => (Some(Map::Exp), Some(UnaryOp::Log)),
        _ => (None, None),
    };
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let float_only = matches!(before, Some(Map::Exp)) || after.is_some();
    if float_only && !ty.dtype.is_float() {
        return unsupported(format!("{op} of integers is not supported"));
    }
    let x = match before {
        Some(Map::Abs) => im.op(Op::Unary(UnaryOp::Abs), &[x])?,
        Some(Map::Exp) => im.op(Op::Unary(UnaryOp::Exp), &[x])?,
        Some(Map::Square) => im.op(Op::Binary(BinaryOp::Mul), &[x, x])?,
        None => x,
    };
    let finish = |im: &mut Importer, y: ValueId| match after {
        Some(u) => im.op(Op::Unary(u), &[y]),
        None => Ok(y),
    };
    let rank = ty.rank();
    let axes = axes_operand(im, node, axes_input_from)?.unwrap_or_default();
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<OpResult<Vec<usize>>>()?;
    if axes.is_empty() {
        if node.int_or("noop_with_empty_axes", 0)? != 0 {
            return one(finish(im, x)?);
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
    let y = finish(im, y)?;
    let y = im.cast(y, ty.dtype)?;
    let y = if node.int_or("keepdims", 1)? != 0 {
        im.keep_dims(y, rank, &axes)?
    } else {
        y
    };
    one(y)
}

/// `ArgMax` / `ArgMin` along one axis: the IR's `top_k` with k = 1 (ties go to the first
/// index, as ONNX's default; `select_last_index` reverses the axis first), after moving
/// the axis last (and negating, for the min).
fn arg_extreme(im: &mut Importer, node: &NodeCtx, min: bool) -> OpResult<ValueId> {
    let last = node.int_or("select_last_index", 0)? != 0;
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    if !ty.dtype.is_float() {
        return unsupported(format!("ArgMax/ArgMin of {} is not supported", ty.dtype));
    }
    let rank = ty.rank();
    let axis = norm_axis(node.int_or("axis", 0)?, rank)?;
    let mut perm: Vec<usize> = (0..rank).filter(|&a| a != axis).collect();
    perm.push(axis);
    let mut y = im.permute(x, perm)?;
    if min {
        y = im.op(Op::Unary(UnaryOp::Neg), &[y])?;
    }
    // Ties to the last index: pick from the axis reversed, then map the index back.
    let n = im.static_dims(y, "ArgMax/ArgMin's axis")?[rank - 1] as i64;
    if last {
        let reversed = im.constant(&Const::ints((0..n).rev().collect()))?;
        y = im.op(Op::Gather { axis: rank - 1 }, &[y, reversed])?;
    }
    let mut picked = im.op(Op::TopK { k: 1 }, &[y])?;
    if last {
        let top = im.splat_like((n - 1) as f64, picked)?;
        picked = im.op(Op::Binary(BinaryOp::Sub), &[top, picked])?;
    }
    // [..., 1] with the reduced axis last: put it back where it was, or drop it.
    let mut dims = im.dims(picked);
    let one_axis = dims.pop().expect("top_k keeps the last axis");
    if node.int_or("keepdims", 1)? != 0 {
        dims.insert(axis, one_axis);
    }
    let y = im.reshape(picked, dims)?;
    im.cast(y, DType::I64)
}
