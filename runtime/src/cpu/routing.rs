//! CPU kernels of the routing ops (`compiler::ir::ops::routing`): `top_k`, and the
//! grouped products as `gemm` calls over rows sorted by group.
//!
//! Rows are counting-sorted by group (stable, so each group keeps token order). The
//! work is then cut into pieces of about equal cost, however unevenly the groups are
//! filled, so that both cores stay busy to the end:
//!
//! - `grouped_matmul`: the sorted rows are cut into equal chunks. A chunk gathers its
//!   rows, multiplies each group's run of them by that group's matrix (read transposed
//!   in place when the schedule folded a transpose into the weight), and writes the
//!   result rows straight to their rows in token order.
//! - `grouped_matmul_weight_grad`: both operands' rows are gathered in sorted order, and
//!   each group's `[K, N]` result is cut into slices of rows, one product each.

use super::buffers::Out;
use super::kernels::{gemm_into, Matrix, GEMM_PARALLEL_MIN};
use super::{Buf, Val};
use crate::interp::ranks_before;
use rayon::prelude::*;
use std::ops::Range;

/// `grouped_matmul`'s chunks of rows per thread: more than one, so that work stealing
/// can even out a core slowed by other processes; few, because every chunk boundary
/// inside a group splits one product into two smaller ones (W4: 4 chunks of 512 rows
/// over 8 groups of about 256).
const PIECES_PER_THREAD: usize = 2;

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

    /// The groups met in the sorted positions `span`, each with its part of the span.
    fn runs(&self, span: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        self.starts
            .windows(2)
            .enumerate()
            .filter_map(move |(e, w)| {
                let (lo, hi) = (w[0].max(span.start), w[1].min(span.end));
                (lo < hi).then_some((e, lo..hi))
            })
    }
}

/// The rows `from` of a `[_, width]` buffer, in that order.
fn gather_rows(src: &[f32], from: &[usize], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(from.len() * width);
    for &t in from {
        out.extend_from_slice(&src[t * width..(t + 1) * width]);
    }
    out
}

/// A row-major `[rows, width]` output whose rows are written by several tasks at once,
/// each row exactly once (the rows go to the tasks by a permutation), before the
/// buffer is read or its length set.
struct RowWriter {
    base: *mut f32,
    rows: usize,
    width: usize,
}

// SAFETY: tasks write disjoint rows (see `write`), so sharing the pointer is sound.
unsafe impl Sync for RowWriter {}

impl RowWriter {
    /// Writes `row` as row `r`.
    ///
    /// # Safety
    /// No other task writes row `r`, and nothing reads the buffer until every task is
    /// done.
    unsafe fn write(&self, r: usize, row: &[f32]) {
        assert!(
            r < self.rows && row.len() == self.width,
            "row inside the output"
        );
        // SAFETY: in bounds (checked above); no other access to the row (caller).
        unsafe {
            std::ptr::copy_nonoverlapping(row.as_ptr(), self.base.add(r * self.width), self.width)
        };
    }
}

/// Runs `f(i, chunk i)` over the consecutive `len`-element chunks of `out` (`len` > 0),
/// on every core when `parallel`.
fn for_chunks(
    out: &mut [f32],
    len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    if parallel {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// How many pieces a product of `work` multiply-adds is cut into (1: too small to be
/// worth sharing the cores).
fn pieces(work: usize) -> usize {
    if work < GEMM_PARALLEL_MIN {
        1
    } else {
        rayon::current_num_threads() * PIECES_PER_THREAD
    }
}

/// `y[t] = x[t] @ w[group[t]]` for `x: [T, K]` and `w: [E, K, N]`, or `w: [E, N, K]`
/// read as its transpose when `w_transposed`.
pub(super) fn grouped_matmul(
    out: Out,
    x: &Val,
    w: &Val,
    w_transposed: bool,
    group: &Val,
) -> Result<Buf, String> {
    let (e, k, n) = if w_transposed {
        (w.shape[0], w.shape[2], w.shape[1])
    } else {
        (w.shape[0], w.shape[1], w.shape[2])
    };
    let sorted = Sorted::new(group, e)?;
    let t = sorted.rows.len();
    if t * n == 0 {
        return Ok(Buf::F32(vec![0.0; t * n]));
    }
    let (x, w) = (x.f32(), w.f32());
    let (w_rs, w_cs) = if w_transposed { (1, k) } else { (n, 1) };
    let parts = pieces(t * k * n);
    let chunk = t.div_ceil(parts);
    // Filled below, every row exactly once, before its length is set: no zero-fill.
    let mut out = out.f32(t * n);
    let writer = RowWriter {
        base: out.as_mut_ptr(),
        rows: t,
        width: n,
    };
    let piece = |i: usize| {
        let span = i * chunk..((i + 1) * chunk).min(t);
        let xs = gather_rows(x, &sorted.rows[span.clone()], k);
        let mut ys = vec![0f32; span.len() * n];
        for (g, run) in sorted.runs(span.clone()) {
            let (lo, hi) = (run.start - span.start, run.end - span.start);
            gemm_into(
                &mut ys[lo * n..hi * n],
                Matrix {
                    data: &xs[lo * k..hi * k],
                    row_stride: k,
                    col_stride: 1,
                },
                Matrix {
                    data: &w[g * k * n..(g + 1) * k * n],
                    row_stride: w_rs,
                    col_stride: w_cs,
                },
                (hi - lo, n, k),
                false,
                false,
            );
        }
        // Straight to token order.
        for (y, &r) in ys.chunks_exact(n).zip(&sorted.rows[span]) {
            // SAFETY: sorted positions are a permutation of the rows and the pieces'
            // spans are disjoint, so each row is written by exactly one piece.
            unsafe { writer.write(r, y) };
        }
    };
    let count = t.div_ceil(chunk);
    if parts > 1 {
        (0..count).into_par_iter().for_each(piece);
    } else {
        (0..count).for_each(piece);
    }
    // SAFETY: the pieces wrote all `t` rows of `n` elements.
    unsafe { out.set_len(t * n) };
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
    let t = sorted.rows.len();
    // Groups without rows stay zero.
    let mut out = out.f32_filled(groups * k * n, 0.0);
    if out.is_empty() {
        return Ok(Buf::F32(out));
    }
    let parallel = t * k * n >= GEMM_PARALLEL_MIN;
    let gather = |v: &Val, width| gather_rows(v.f32(), &sorted.rows, width);
    let (xs, dys) = if parallel {
        rayon::join(|| gather(x, k), || gather(dy, n))
    } else {
        (gather(x, k), gather(dy, n))
    };
    // Each group's result in one slice of rows (of K) per thread: every thread gets an
    // equal share of every group, however uneven the groups.
    let slice = k.div_ceil(if parallel {
        rayon::current_num_threads().min(k)
    } else {
        1
    });
    for_chunks(&mut out, k * n, parallel, |g, block| {
        let (lo, hi) = (sorted.starts[g], sorted.starts[g + 1]);
        if lo == hi {
            return; // no rows: the block stays zero
        }
        for_chunks(block, slice * n, parallel, |s, dst| {
            let rows = dst.len() / n;
            // This slice of xsᵀ: columns s·slice.. of the group's [c, K] block, read as
            // rows × c through strides.
            gemm_into(
                dst,
                Matrix {
                    data: &xs[lo * k + s * slice..hi * k],
                    row_stride: 1,
                    col_stride: k,
                },
                Matrix {
                    data: &dys[lo * n..hi * n],
                    row_stride: n,
                    col_stride: 1,
                },
                (rows, n, hi - lo),
                false,
                false,
            );
        });
    });
    Ok(Buf::F32(out))
}
