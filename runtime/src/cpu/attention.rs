//! `attention` and its backward pieces (`attention_lse`, `attention_grad_q/k/v`; see
//! `compiler::ir::ops::attention`) as library steps. Per batch entry (batch × heads,
//! in parallel through rayon): the scores `q kᵀ · scale` are one `gemm` product reading
//! k transposed in place; one pass over each score row applies the causal mask and the
//! softmax (or `exp(s − lse)` from the saved statistic, or the log-sum-exp itself);
//! what follows is `gemm` products again, reading the probabilities transposed in
//! place where the formula needs `Pᵀ` or `dSᵀ`. The decomposition instead materialises
//! a permuted copy of k, the mask, and several reductions and pointwise passes over
//! the T×S scores.

use super::kernels::gemm_f32;
use super::{Buf, Val};
use rayon::prelude::*;
use smelt_compiler::ir::ops::{AttentionPart, Composite};

/// Runs attention composite `c` on operands `x`; `shape` is the result's shape.
pub(super) fn eval(c: &Composite, x: &[&Val], shape: &[usize]) -> Buf {
    let (part, causal, scale) = match c {
        Composite::Attention { causal, scale } => (None, *causal, *scale as f32),
        Composite::AttentionGrad {
            part,
            causal,
            scale,
        } => (Some(*part), *causal, *scale as f32),
        other => unreachable!(
            "the cpu schedule keeps only attention composites whole, not '{}'",
            other.name()
        ),
    };
    let r = x[0].shape.len();
    let batch: usize = x[0].shape[..r - 2].iter().product();
    let (t, s, e) = (x[0].shape[r - 2], x[1].shape[r - 2], x[0].shape[r - 1]);
    let mut out = vec![0f32; shape.iter().product()];
    if out.is_empty() || batch == 0 {
        return Buf::F32(out);
    }
    // Operand `i`'s part for batch entry `bi` (every operand has the batch axes first).
    let entry = |i: usize, bi: usize| {
        let v = x[i].f32();
        let n = v.len() / batch;
        &v[bi * n..(bi + 1) * n]
    };
    // Batch entries in parallel; a single large entry parallelises its products.
    let threads = rayon::current_num_threads();
    let parallelism = if batch >= threads || t * s * e < 1 << 18 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    let per_entry = out.len() / batch;
    out.par_chunks_mut(per_entry)
        .enumerate()
        .for_each(|(bi, dst)| {
            let (q, k) = (entry(0, bi), entry(1, bi));
            let mut p = vec![0f32; t * s];
            // p = q kᵀ · scale (k read transposed in place).
            gemm_f32(&mut p, (t, s, e), (q, e, 1), (k, 1, e), scale, parallelism);
            let rows = Rows { t, s, causal };
            match part {
                None => {
                    rows.softmax(&mut p);
                    let v = entry(2, bi);
                    let f = v.len() / s.max(1);
                    gemm_f32(dst, (t, f, s), (&p, s, 1), (v, f, 1), 1.0, parallelism);
                }
                Some(AttentionPart::Lse) => rows.log_sum_exp(&p, dst),
                Some(AttentionPart::GradV) => {
                    rows.probabilities(&mut p, entry(3, bi));
                    let dy = entry(2, bi);
                    let f = dy.len() / t.max(1);
                    // dv = Pᵀ dy.
                    gemm_f32(dst, (s, f, t), (&p, 1, s), (dy, f, 1), 1.0, parallelism);
                }
                Some(part @ (AttentionPart::GradQ | AttentionPart::GradK)) => {
                    let (v, dy, lse, delta) =
                        (entry(2, bi), entry(3, bi), entry(4, bi), entry(5, bi));
                    let f = dy.len() / t.max(1);
                    rows.probabilities(&mut p, lse);
                    // dP = dy vᵀ, then dS = P ∘ (dP − delta) in place of P.
                    let mut dp = vec![0f32; t * s];
                    gemm_f32(&mut dp, (t, s, f), (dy, f, 1), (v, 1, f), 1.0, parallelism);
                    let rows = p.chunks_mut(s.max(1)).zip(dp.chunks(s.max(1)));
                    for ((p_row, dp_row), d) in rows.zip(delta) {
                        for (pij, dpij) in p_row.iter_mut().zip(dp_row) {
                            *pij *= dpij - d;
                        }
                    }
                    if part == AttentionPart::GradQ {
                        // dq = scale · dS k.
                        gemm_f32(dst, (t, e, s), (&p, s, 1), (k, e, 1), scale, parallelism);
                    } else {
                        // dk = scale · dSᵀ q.
                        gemm_f32(dst, (s, e, t), (&p, 1, s), (q, e, 1), scale, parallelism);
                    }
                }
            }
        });
    Buf::F32(out)
}

/// The rows of one batch entry's `t × s` score matrix, with the causal mask.
struct Rows {
    t: usize,
    s: usize,
    causal: bool,
}

impl Rows {
    /// How many leading keys row `i` sees.
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            (i + 1).min(self.s)
        } else {
            self.s
        }
    }

    /// Scores to probabilities, in place (masked keys get 0).
    fn softmax(&self, p: &mut [f32]) {
        let s = self.s;
        for i in 0..self.t {
            let n = self.visible(i);
            let row = &mut p[i * s..(i + 1) * s];
            let max = row_max(&row[..n]);
            let mut sum = 0.0;
            for x in &mut row[..n] {
                *x = (*x - max).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            row[..n].iter_mut().for_each(|x| *x *= inv);
            row[n..].fill(0.0);
        }
    }

    /// Each row's log-sum-exp into `dst`.
    fn log_sum_exp(&self, scores: &[f32], dst: &mut [f32]) {
        for (i, lse) in dst.iter_mut().enumerate().take(self.t) {
            let row = &scores[i * self.s..i * self.s + self.visible(i)];
            let max = row_max(row);
            let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
            *lse = max + sum.ln();
        }
    }

    /// Scores to `exp(score − lse)` with each row's saved statistic, in place (masked
    /// keys get 0).
    fn probabilities(&self, p: &mut [f32], lse: &[f32]) {
        let s = self.s;
        for i in 0..self.t {
            let n = self.visible(i);
            let row = &mut p[i * s..(i + 1) * s];
            row[..n].iter_mut().for_each(|x| *x = (*x - lse[i]).exp());
            row[n..].fill(0.0);
        }
    }
}

/// The largest element (−∞ for none).
fn row_max(row: &[f32]) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}
