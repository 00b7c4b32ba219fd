//! Reductions over a set of axes. The reduced axes are removed from the shape
//! (no keep-dims form: `broadcast` restores them where needed).

use super::{expect_arity, ShapeResult};
use crate::ir::{Shape, TensorType};

super::elementwise::named_enum! {
    /// How a reduction combines elements.
    ReduceOp {
        /// Sum.
        Sum = "reduce_sum",
        /// Maximum (`-inf` for an empty reduction).
        Max = "reduce_max",
        /// Arithmetic mean.
        Mean = "reduce_mean",
    }
}

/// Checks that `axes` is strictly increasing and within `rank`.
pub(crate) fn check_axes(axes: &[usize], rank: usize) -> Result<(), String> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!("axis {a} is out of range for rank {rank}"));
        }
        if i > 0 && axes[i - 1] >= a {
            return Err(format!("axes must be strictly increasing, found {axes:?}"));
        }
    }
    Ok(())
}

pub(super) fn infer_reduce(op: ReduceOp, axes: &[usize], x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    check_axes(axes, x[0].rank())?;
    if op == ReduceOp::Mean && !x[0].dtype.is_float() {
        return Err(format!(
            "'reduce_mean' needs a float operand, found {}",
            x[0]
        ));
    }
    if x[0].dtype == crate::ir::DType::Bool {
        return Err(format!("'{}' is not defined on bool", op.name()));
    }
    let dims = x[0]
        .dims()
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    Ok(x[0].with_shape(Shape(dims)))
}

// Gradients: the adjoint is spread back over the reduced axes.

use crate::ir::ops::{BinaryOp, CompareOp, Op};
use crate::ir::{Builder, ValueId};

pub(super) fn vjp_reduce(
    op: ReduceOp,
    axes: &[usize],
    b: &mut Builder,
    x: ValueId,
    y: ValueId,
    g: ValueId,
) -> ValueId {
    let xt = b.ty(x).clone();
    let kept: Vec<usize> = (0..xt.rank()).filter(|a| !axes.contains(a)).collect();
    let spread = b.broadcast(g, kept.clone(), xt.clone());
    match op {
        ReduceOp::Sum => spread,
        ReduceOp::Mean => divide_by_count(b, spread, &xt, &kept, axes),
        ReduceOp::Max => {
            // Every position equal to the maximum receives the adjoint.
            let ymax = b.broadcast(y, kept, xt);
            let hit = b.compare(CompareOp::Eq, x, ymax);
            let zero = b.zeros_like(spread);
            b.add(Op::Select, &[hit, spread, zero])
        }
    }
}

/// The adjoint of `reduce_mean` over `axes` of a value of type `xt`: `g` (the mean's
/// adjoint) spread over `xt` and divided by the number of elements averaged.
pub(super) fn spread_mean(b: &mut Builder, g: ValueId, xt: &TensorType, axes: &[usize]) -> ValueId {
    let kept: Vec<usize> = (0..xt.rank()).filter(|a| !axes.contains(a)).collect();
    let spread = b.broadcast(g, kept.clone(), xt.clone());
    divide_by_count(b, spread, xt, &kept, axes)
}

/// `spread` (of type `xt`) divided by the number of elements along `axes`.
fn divide_by_count(
    b: &mut Builder,
    spread: ValueId,
    xt: &TensorType,
    kept: &[usize],
    axes: &[usize],
) -> ValueId {
    let count = Shape(axes.iter().map(|&a| xt.dims()[a].clone()).collect())
        .numel()
        .expect("verified types have element counts that fit");
    match count.as_static() {
        Some(n) => b.binary_scalar(BinaryOp::Mul, spread, 1.0 / n as f64),
        None => {
            // A symbolic count (mean over the batch) is known only at run time: count
            // it by summing ones.
            let ones = b.splat(1.0, xt.clone());
            let n = b.reduce(ReduceOp::Sum, ones, axes.to_vec());
            let n = b.broadcast(n, kept.to_vec(), xt.clone());
            b.binary(BinaryOp::Div, spread, n)
        }
    }
}
