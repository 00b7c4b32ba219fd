//! The row composites along the last axis (softmax, log_softmax, layer_norm, rms_norm,
//! cross_entropy and their gradients), each a few passes over one row at a time instead
//! of their decomposition's reductions and pointwise kernels: a row's statistics stay in
//! registers and the row in cache. Rows run on both cores when the input is large.
//!
//! Sums accumulate in `f64` over [`LANES`] independent partial sums, so the loops
//! vectorise and round-off stays at the level of the decomposition's `f64` reductions.
//! Their meaning is the decomposition's (`compiler/src/ir/ops/composite.rs` and
//! `row_grad.rs`); `runtime/tests/cpu_vs_interp.rs` holds them to the interpreter.

use super::kernels::PARALLEL_MIN;
use super::{Buf, Val};
use rayon::prelude::*;
use smelt_compiler::ir::ops::Composite;

/// Independent partial sums per row reduction.
const LANES: usize = 8;

/// `Σ_i f(i)` for `i < len`, in `LANES` partial sums.
#[inline(always)]
fn sum(len: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let full = len - len % LANES;
    for c in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(c + l);
        }
    }
    let tail: f64 = (full..len).map(&f).sum();
    acc.iter().sum::<f64>() + tail
}

/// The largest element (NaNs are skipped here; they reach the result through the sums).
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Runs `f(row, out_row)` for every row of `out` (rows of `len`), in parallel when large.
fn each_row(out: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if len == 0 {
        return;
    }
    if out.len() >= PARALLEL_MIN {
        out.par_chunks_mut(len)
            .enumerate()
            .for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// The max and `Σ exp(x − max)` of a row.
fn exp_stats(x: &[f32]) -> (f32, f64) {
    let m = max(x);
    (m, sum(x.len(), |i| f64::from((x[i] - m).exp())))
}

/// The mean (0 unless `centre`) and `1/√(mean (x − mean)² + eps)` of a row.
fn norm_stats(x: &[f32], centre: bool, eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = if centre {
        (sum(x.len(), |i| f64::from(x[i])) / n) as f32
    } else {
        0.0
    };
    let ms = sum(x.len(), |i| {
        let d = f64::from(x[i] - mean);
        d * d
    }) / n;
    (mean, (1.0 / (ms + eps).sqrt()) as f32)
}

/// Row `r` of rows of `len`.
fn row<T>(v: &[T], r: usize, len: usize) -> &[T] {
    &v[r * len..(r + 1) * len]
}

/// Whether `label` names one of `classes`; one outside picks nothing.
fn class(label: i64, classes: usize) -> Option<usize> {
    usize::try_from(label).ok().filter(|&l| l < classes)
}

/// Evaluates row composite `c` (kept whole by the schedule, so along the last axis) on
/// `x`; the result has `n` elements.
pub(super) fn eval(c: &Composite, x: &[&Val], n: usize) -> Buf {
    let len = x[0].shape.last().copied().unwrap_or(1);
    let input = x[0].f32();
    let mut out = vec![0.0f32; n];
    match c {
        Composite::Softmax { .. } => each_row(&mut out, len, |r, o| {
            let x = row(input, r, len);
            let (m, s) = exp_stats(x);
            let inv = (1.0 / s) as f32;
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (v - m).exp() * inv;
            }
        }),
        Composite::LogSoftmax { .. } => each_row(&mut out, len, |r, o| {
            let x = row(input, r, len);
            let (m, s) = exp_stats(x);
            let shift = m + s.ln() as f32;
            for (o, &v) in o.iter_mut().zip(x) {
                *o = v - shift;
            }
        }),
        Composite::LayerNorm { eps } | Composite::RmsNorm { eps } => {
            let centre = matches!(c, Composite::LayerNorm { .. });
            let gamma = x[1].f32();
            let beta = centre.then(|| x[2].f32());
            each_row(&mut out, len, |r, o| {
                let x = row(input, r, len);
                let (mean, rs) = norm_stats(x, centre, *eps);
                for (j, o) in o.iter_mut().enumerate() {
                    *o = (x[j] - mean) * rs * gamma[j] + beta.map_or(0.0, |b| b[j]);
                }
            })
        }
        Composite::CrossEntropy => return Buf::F32(vec![cross_entropy(input, x[1], len)]),
        Composite::SoftmaxGrad { .. } => {
            let dy = x[1].f32();
            each_row(&mut out, len, |r, o| {
                let (y, dy) = (row(input, r, len), row(dy, r, len));
                let s = sum(len, |i| f64::from(y[i]) * f64::from(dy[i])) as f32;
                for j in 0..len {
                    o[j] = y[j] * (dy[j] - s);
                }
            })
        }
        Composite::LogSoftmaxGrad { .. } => {
            let dy = x[1].f32();
            each_row(&mut out, len, |r, o| {
                let (y, dy) = (row(input, r, len), row(dy, r, len));
                let s = sum(len, |i| f64::from(dy[i])) as f32;
                for j in 0..len {
                    o[j] = dy[j] - y[j].exp() * s;
                }
            })
        }
        Composite::LayerNormGrad { eps } | Composite::RmsNormGrad { eps } => {
            let centre = matches!(c, Composite::LayerNormGrad { .. });
            let (gamma, dy) = (x[1].f32(), x[2].f32());
            each_row(&mut out, len, |r, o| {
                let (x, dy) = (row(input, r, len), row(dy, r, len));
                let (mean, rs) = norm_stats(x, centre, *eps);
                // ĝ = dy∘gamma and x̂ = (x − mean) r, recomputed in each pass.
                let ghat = |j: usize| dy[j] * gamma[j];
                let xhat = |j: usize| (x[j] - mean) * rs;
                let n = len as f64;
                let mg = if centre {
                    (sum(len, |j| f64::from(ghat(j))) / n) as f32
                } else {
                    0.0
                };
                let mgx = (sum(len, |j| f64::from(ghat(j)) * f64::from(xhat(j))) / n) as f32;
                for (j, o) in o.iter_mut().enumerate() {
                    *o = rs * (ghat(j) - xhat(j) * mgx - mg);
                }
            })
        }
        Composite::CrossEntropyGrad => {
            let labels = int(x[1]);
            let rows = (n / len.max(1)).max(1);
            let share = x[2].f32()[0] / rows as f32;
            each_row(&mut out, len, |r, o| {
                let x = row(input, r, len);
                let (m, s) = exp_stats(x);
                let label = class(labels[r], len);
                let weight = if label.is_some() {
                    (1.0 / s) as f32
                } else {
                    0.0
                };
                for (j, o) in o.iter_mut().enumerate() {
                    let onehot = if label == Some(j) { 1.0 } else { 0.0 };
                    *o = ((x[j] - m).exp() * weight - onehot) * share;
                }
            })
        }
        other => unreachable!("{} has no row kernel", other.name()),
    }
    Buf::F32(out)
}

fn int(v: &Val) -> &[i64] {
    match &v.buf {
        Buf::Int(v) => v,
        _ => unreachable!("labels are integers (verified types)"),
    }
}

/// Mean over rows of `−log_softmax(row)[label]` (rows with a label outside the classes
/// add 0).
fn cross_entropy(logits: &[f32], labels: &Val, len: usize) -> f32 {
    let labels = int(labels);
    let rows = labels.len();
    let loss = |r: usize| -> f64 {
        let x = row(logits, r, len);
        let Some(label) = class(labels[r], len) else {
            return 0.0;
        };
        let (m, s) = exp_stats(x);
        -(f64::from(x[label] - m) - s.ln())
    };
    let total: f64 = if logits.len() >= PARALLEL_MIN {
        (0..rows).into_par_iter().map(loss).sum()
    } else {
        (0..rows).map(loss).sum()
    };
    // A mean over no rows is NaN, as in the decomposition.
    (total / rows as f64) as f32
}
