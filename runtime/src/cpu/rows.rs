//! The row composites along the last axis (softmax, log_softmax, layer_norm, rms_norm,
//! cross_entropy and their gradients), each a few passes over one row at a time instead
//! of their decomposition's reductions and pointwise kernels: a row's statistics stay in
//! registers and the row in cache. Rows run on both cores when the input is large.
//!
//! Sums accumulate in `f64` over [`LANES`] independent partial sums, so the loops
//! vectorise and round-off stays at the level of the decomposition's `f64` reductions.
//! Their meaning is the decomposition's (`compiler/src/ir/ops/composite.rs` and
//! `row_grad.rs`); `runtime/tests/cpu_vs_interp.rs` holds them to the interpreter.

use super::buffers::Out;
use super::kernels::PARALLEL_MIN;
use super::{Buf, Val};
use rayon::prelude::*;
use smelt_compiler::ir::ops::Composite;

/// Independent partial sums per row reduction.
const LANES: usize = 8;

/// `Σ_i f(a[i], b[i], c[i])` over equal-length rows (pass a row twice when fewer are
/// needed), in `LANES` partial sums over fixed-size chunks, which the compiler vectorises.
#[inline(always)]
fn sum3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f64) -> f64 {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let mut acc = [0.0f64; LANES];
    let (ac, bc, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder())
        .map(|((&x, &y), &z)| f(x, y, z))
        .sum();
    for ((x, y), z) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l], z[l]);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `Σ_i f(x[i])`, writing each `f(x[i])` to `out[i]` in the same pass.
#[inline(always)]
fn sum_writing(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) -> f64 {
    let out = &mut out[..x.len()];
    let mut acc = [0.0f64; LANES];
    let mut xc = x.chunks_exact(LANES);
    let mut oc = out.chunks_exact_mut(LANES);
    for (x, o) in (&mut xc).zip(&mut oc) {
        for l in 0..LANES {
            o[l] = f(x[l]);
            acc[l] += f64::from(o[l]);
        }
    }
    let mut tail = 0.0;
    for (&x, o) in xc.remainder().iter().zip(oc.into_remainder()) {
        *o = f(x);
        tail += f64::from(*o);
    }
    acc.iter().sum::<f64>() + tail
}

/// `Σ_i f(x[i])`.
#[inline(always)]
fn sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    sum3(x, x, x, |v, _, _| f(v))
}

/// `e^x` in branch-free f32 arithmetic that vectorises (`f32::exp` is a library call per
/// element): `2^n · e^r` with `n = round(x / ln 2)`, `|r| ≤ ln 2 / 2`, and `e^r` by its
/// degree-6 Taylor polynomial (relative error below 2e-7). Below −86 it gives 0 (the
/// true value is under 5e-38), above 88.72 infinity, and NaN stays NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    let xc = x.clamp(-86.0, 88.72);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^(n−1) from the integer in `t`'s low bits (n − 1 + 127 ≥ 1 for x ≥ −86), then ·2
    // so that n = 128 does not overflow the exponent.
    let k = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let scale = f32::from_bits(((k + 126) as u32) << 23);
    let y = p * scale * 2.0;
    // Independent selects (no branches), so the loop still vectorises.
    let y = if x < -86.0 { 0.0 } else { y };
    let y = if x > 88.72 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
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
    (m, sum(x, |v| f64::from(exp(v - m))))
}

/// The mean (0 unless `centre`) and `1/√(mean (x − mean)² + eps)` of a row.
fn norm_stats(x: &[f32], centre: bool, eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = if centre {
        (sum(x, f64::from) / n) as f32
    } else {
        0.0
    };
    let ms = sum(x, |v| {
        let d = f64::from(v - mean);
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
/// `x` into `out`; the result has `n` elements.
pub(super) fn eval(c: &Composite, x: &[&Val], n: usize, out: Out) -> Buf {
    let len = x[0].shape.last().copied().unwrap_or(1);
    let input = x[0].f32();
    if let Composite::CrossEntropy = c {
        let mut out = out.f32(1);
        out.push(cross_entropy(input, x[1], len));
        return Buf::F32(out);
    }
    let mut out = out.f32_filled(n, 0.0);
    match c {
        Composite::Softmax { .. } => each_row(&mut out, len, |r, o| {
            // One exponential per element: written, summed, then scaled.
            let x = row(input, r, len);
            let m = max(x);
            let s = sum_writing(x, o, |v| exp(v - m));
            let inv = (1.0 / s) as f32;
            for o in o.iter_mut() {
                *o *= inv;
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
                match beta {
                    Some(beta) => {
                        for (((o, &x), &g), &b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                            *o = (x - mean) * rs * g + b;
                        }
                    }
                    None => {
                        for ((o, &x), &g) in o.iter_mut().zip(x).zip(gamma) {
                            *o = (x - mean) * rs * g;
                        }
                    }
                }
            })
        }
        Composite::CrossEntropy => unreachable!("handled above"),
        Composite::SoftmaxGrad { .. } => {
            let dy = x[1].f32();
            each_row(&mut out, len, |r, o| {
                let (y, dy) = (row(input, r, len), row(dy, r, len));
                let s = sum3(y, dy, dy, |y, dy, _| f64::from(y) * f64::from(dy)) as f32;
                for ((o, &y), &dy) in o.iter_mut().zip(y).zip(dy) {
                    *o = y * (dy - s);
                }
            })
        }
        Composite::LogSoftmaxGrad { .. } => {
            let dy = x[1].f32();
            each_row(&mut out, len, |r, o| {
                let (y, dy) = (row(input, r, len), row(dy, r, len));
                let s = sum(dy, f64::from) as f32;
                for ((o, &y), &dy) in o.iter_mut().zip(y).zip(dy) {
                    *o = dy - exp(y) * s;
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
                let n = len as f64;
                let mg = if centre {
                    (sum3(dy, gamma, gamma, |dy, g, _| f64::from(dy * g)) / n) as f32
                } else {
                    0.0
                };
                let mgx = sum3(x, dy, gamma, |x, dy, g| {
                    f64::from(dy * g) * f64::from((x - mean) * rs)
                }) / n;
                let mgx = mgx as f32;
                for (((o, &x), &dy), &g) in o.iter_mut().zip(x).zip(dy).zip(gamma) {
                    *o = rs * (dy * g - (x - mean) * rs * mgx - mg);
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
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = exp(v - m) * weight * share;
                }
                if let Some(l) = label {
                    o[l] -= share;
                }
            })
        }
        other => unreachable!("{} has no row kernel", other.name()),
    }
    Buf::F32(out)
}

fn int(v: &Val) -> &[i64] {
    match v.buf() {
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

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_across_its_range() {
        for i in -10_000..=10_000 {
            let x = i as f32 * 0.0086;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            if x >= -86.0 {
                assert!(
                    (got - want).abs() <= 3e-7 * want,
                    "exp({x}) = {got}, want {want}"
                );
            } else {
                assert_eq!(got, 0.0, "exp({x})");
            }
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }
}
