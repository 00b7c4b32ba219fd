//! CPU kernels of the routing ops (`compiler::ir::ops::routing`): `top_k`, and the
//! grouped products as one `gemm` per group over rows sorted by group.
//!
//! Rows are counting-sorted by group (stable, so each group keeps token order), each
//! group's rows are gathered into one contiguous block, multiplied, and the result rows
//! are scattered back. Groups are independent, so they run on both cores.

use super::buffers::Out;
use super::kernels::{gemm_into, Matrix, GEMM_PARALLEL_MIN};
use super::{Buf, Val};
use crate::interp::ranks_before;
use rayon::prelude::*;

pub(super) fn top_k(out: Out, k: usize, x: &Val) -> Buf {
    let n = *x.shape.last().expect("rank >= 1 (verified)");
    let mut out = out.int(x.f32().len() / n.max(1) * k);
    for row in x.f32().chunks(n) {
        let mut order: Vec<(f64, usize)> = row.iter().map(|&v| f64::from(v)).zip(0..).collect();
        order.select_nth_unstable_by(k - 1, |&a, &b| ranks_before(a, b));
        order[..k].sort_unstable_by(|&a, &b| ranks_before(a, b));
        out.extend(order[..k].iter().map(|&(_, i)| i as i64));
    }
    Buf::Int(out)
}

/// Rows sorted by group: `rows[starts[e]..starts[e + 1]]` are group `e`'s rows in order.
struct Sorted {
    rows: Vec<usize>,
    starts: Vec<usize>,
}

impl Sorted {
    /// Counting-sorts the rows of `group` into `groups` groups; a group outside the
    /// range is an error, as in the interpreter.
    fn new(group: &Val, groups: usize) -> Result<Sorted, String> {
        let Buf::Int(ids) = group.buf() else {
            unreachable!("groups are integers (verified)")
        };
        let mut starts = vec![0usize; groups + 1];
        for &e in ids {
            if e < 0 || e as usize >= groups {
                return Err(format!("group {e} is out of range 0..{groups}"));
            }
            starts[e as usize + 1] += 1;
        }
        for e in 0..groups {
            starts[e + 1] += starts[e];
        }
        let mut next = starts.clone();
        let mut rows = vec![0; ids.len()];
        for (t, &e) in ids.iter().enumerate() {
            rows[next[e as usize]] = t;
            next[e as usize] += 1;
        }
        Ok(Sorted { rows, starts })
    }

    fn group(&self, e: usize) -> &[usize] {
        &self.rows[self.starts[e]..self.starts[e + 1]]
    }

    /// The rows of a `[T, width]` buffer in sorted order, one contiguous block.
    fn gather(&self, x: &[f32], width: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows.len() * width);
        for &t in &self.rows {
            out.extend_from_slice(&x[t * width..(t + 1) * width]);
        }
        out
    }
}

/// Runs `f(e, output block of group e, parallel)` for every group of `sorted`, where
/// `out` is split into consecutive blocks of `sizes[e]` elements. With several groups and enough work
/// the groups share the cores (one product per thread); a lone group's product uses
/// them itself.
fn per_group(
    sorted: &Sorted,
    out: &mut [f32],
    sizes: &[usize],
    work: usize,
    f: impl Fn(usize, &mut [f32], bool) + Sync,
) {
    let mut blocks = Vec::with_capacity(sizes.len());
    let mut rest = out;
    for &s in sizes {
        let (head, tail) = rest.split_at_mut(s);
        blocks.push(head);
        rest = tail;
    }
    let busy = (0..sizes.len())
        .filter(|&e| !sorted.group(e).is_empty())
        .count();
    let large = work >= GEMM_PARALLEL_MIN;
    if large && busy > 1 {
        blocks
            .into_par_iter()
            .enumerate()
            .for_each(|(e, b)| f(e, b, false));
    } else {
        for (e, b) in blocks.into_iter().enumerate() {
            f(e, b, large);
        }
    }
}

/// `y[t] = x[t] @ w[group[t]]` for `x: [T, K]`, `w: [E, K, N]`.
pub(super) fn grouped_matmul(out: Out, x: &Val, w: &Val, group: &Val) -> Result<Buf, String> {
    let (e, k, n) = (w.shape[0], w.shape[1], w.shape[2]);
    let sorted = Sorted::new(group, e)?;
    let xs = sorted.gather(x.f32(), k);
    let w = w.f32();
    let sizes: Vec<usize> = (0..e).map(|g| sorted.group(g).len() * n).collect();
    let mut ys = vec![0f32; sorted.rows.len() * n];
    per_group(
        &sorted,
        &mut ys,
        &sizes,
        sorted.rows.len() * k * n,
        |g, dst, parallel| {
            let (lo, c) = (sorted.starts[g], sorted.group(g).len());
            gemm_into(
                dst,
                Matrix {
                    data: &xs[lo * k..(lo + c) * k],
                    row_stride: k,
                    col_stride: 1,
                },
                Matrix {
                    data: &w[g * k * n..(g + 1) * k * n],
                    row_stride: n,
                    col_stride: 1,
                },
                (c, n, k),
                parallel,
                false,
            );
        },
    );
    // Scatter the sorted result rows back to token order.
    // Every row is written (each token has one group, checked by the sort).
    let mut out = out.f32_overwritten(ys.len());
    for (i, &t) in sorted.rows.iter().enumerate() {
        out[t * n..(t + 1) * n].copy_from_slice(&ys[i * n..(i + 1) * n]);
    }
    Ok(Buf::F32(out))
}

/// `dw[e] = Σ_{t: group[t] = e} x[t]ᵀ dy[t]` for `x: [T, K]`, `dy: [T, N]`.
pub(super) fn grouped_weight_grad(
    out: Out,
    x: &Val,
    dy: &Val,
    group: &Val,
    groups: usize,
) -> Result<Buf, String> {
    let (k, n) = (x.shape[1], dy.shape[1]);
    let sorted = Sorted::new(group, groups)?;
    let xs = sorted.gather(x.f32(), k);
    let dys = sorted.gather(dy.f32(), n);
    // Groups without rows stay zero.
    let mut out = out.f32_filled(groups * k * n, 0.0);
    let sizes = vec![k * n; groups];
    per_group(
        &sorted,
        &mut out,
        &sizes,
        sorted.rows.len() * k * n,
        |g, dst, parallel| {
            let (lo, c) = (sorted.starts[g], sorted.group(g).len());
            if c == 0 {
                return; // no rows: the block stays zero
            }
            // xsᵀ: the group's [c, K] block read as K × c through strides.
            gemm_into(
                dst,
                Matrix {
                    data: &xs[lo * k..(lo + c) * k],
                    row_stride: 1,
                    col_stride: k,
                },
                Matrix {
                    data: &dys[lo * n..(lo + c) * n],
                    row_stride: n,
                    col_stride: 1,
                },
                (k, n, c),
                parallel,
                false,
            );
        },
    );
    Ok(Buf::F32(out))
}
