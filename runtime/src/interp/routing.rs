//! Meaning of `top_k`, `grouped_matmul` and `grouped_matmul_weight_grad` (see
//! `compiler::ir::ops::routing`). Sums accumulate in f64; a group outside `0..E` is an
//! error.

use super::Ctx;
use crate::tensor::{Data, Tensor};
use smelt_compiler::ir::DType;
use std::cmp::Ordering;

/// `top_k`'s order: larger first, NaN as `+inf`, then the lower index first.
pub(crate) fn ranks_before(a: (f64, usize), b: (f64, usize)) -> Ordering {
    let key = |x: f64| if x.is_nan() { f64::INFINITY } else { x };
    key(b.0)
        .partial_cmp(&key(a.0))
        .expect("no NaN after the key")
        .then(a.1.cmp(&b.1))
}

pub(super) fn top_k(k: usize, x: &Tensor, shape: Vec<usize>) -> Tensor {
    let n = *x.shape.last().expect("rank >= 1 (verified)");
    let values = x.to_f64_vec();
    let mut out = Vec::with_capacity(shape.iter().product());
    for row in values.chunks(n) {
        let mut order: Vec<(f64, usize)> = row.iter().copied().zip(0..).collect();
        order.sort_by(|&a, &b| ranks_before(a, b));
        out.extend(order[..k].iter().map(|&(_, i)| i as i64));
    }
    Tensor {
        dtype: DType::I64,
        shape,
        data: Data::Int(out),
    }
}

/// The groups as indices, each checked to lie in `0..groups`.
fn groups(group: &Tensor, groups: usize) -> Result<Vec<usize>, String> {
    let Data::Int(ids) = &group.data else {
        unreachable!("groups are integers (verified)")
    };
    ids.iter()
        .map(|&e| {
            usize::try_from(e)
                .ok()
                .filter(|&e| e < groups)
                .ok_or_else(|| format!("group {e} is out of range 0..{groups}"))
        })
        .collect()
}

pub(super) fn grouped_matmul(
    ctx: Ctx,
    x: &Tensor,
    w: &Tensor,
    group: &Tensor,
    shape: Vec<usize>,
) -> Result<Tensor, String> {
    let (e, k, n) = (w.shape[0], w.shape[1], w.shape[2]);
    let rows = groups(group, e)?;
    let (a, b) = (x.to_f64_vec(), w.to_f64_vec());
    let mut out = vec![0.0; rows.len() * n];
    for (t, &g) in rows.iter().enumerate() {
        for p in 0..k {
            let s = a[t * k + p];
            for j in 0..n {
                out[t * n + j] += s * b[(g * k + p) * n + j];
            }
        }
    }
    Ok(ctx.floats(x.dtype, shape, out))
}

pub(super) fn grouped_weight_grad(
    ctx: Ctx,
    x: &Tensor,
    dy: &Tensor,
    group: &Tensor,
    shape: Vec<usize>,
) -> Result<Tensor, String> {
    let (e, k, n) = (shape[0], shape[1], shape[2]);
    let rows = groups(group, e)?;
    let (a, d) = (x.to_f64_vec(), dy.to_f64_vec());
    let mut out = vec![0.0; e * k * n];
    for (t, &g) in rows.iter().enumerate() {
        for p in 0..k {
            let s = a[t * k + p];
            for j in 0..n {
                out[(g * k + p) * n + j] += s * d[t * n + j];
            }
        }
    }
    Ok(ctx.floats(x.dtype, shape, out))
}
