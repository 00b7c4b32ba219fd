//! Meaning of the reductions (see `compiler::ir::ops::reduce`).

use super::{map_indices, strides, Ctx};
use crate::tensor::{Data, Tensor};
use smelt_compiler::ir::ops::ReduceOp;

pub(super) fn reduce(
    ctx: Ctx,
    op: ReduceOp,
    axes: &[usize],
    x: &Tensor,
    shape: Vec<usize>,
) -> Tensor {
    // Each input element goes to the output position with the reduced axes dropped.
    let out_strides = strides(&shape);
    let kept: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
    let target = map_indices(&x.shape, |idx| {
        kept.iter()
            .zip(&out_strides)
            .map(|(&a, s)| idx[a] * s)
            .sum::<usize>()
    });
    let n_out: usize = shape.iter().product();
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    match &x.data {
        Data::Int(v) => {
            let mut acc = vec![if op == ReduceOp::Max { i64::MIN } else { 0 }; n_out];
            for (&t, &e) in target.iter().zip(v) {
                acc[t] = if op == ReduceOp::Max {
                    acc[t].max(e)
                } else {
                    acc[t].wrapping_add(e)
                };
            }
            let acc = acc
                .into_iter()
                .map(|a| super::wrap_int(x.dtype, a))
                .collect();
            Tensor {
                dtype: x.dtype,
                shape,
                data: Data::Int(acc),
            }
        }
        _ => {
            let v = x.floats();
            let mut acc = vec![
                if op == ReduceOp::Max {
                    f64::NEG_INFINITY
                } else {
                    0.0
                };
                n_out
            ];
            for (&t, &e) in target.iter().zip(v) {
                acc[t] = match op {
                    ReduceOp::Max if e.is_nan() || acc[t].is_nan() => f64::NAN,
                    ReduceOp::Max => acc[t].max(e),
                    ReduceOp::Sum | ReduceOp::Mean => acc[t] + e,
                };
            }
            if op == ReduceOp::Mean {
                acc.iter_mut().for_each(|a| *a /= count as f64);
            }
            ctx.floats(x.dtype, shape, acc)
        }
    }
}
