//! `attention` and its backward pieces (`attention_lse`, `attention_grad_q/k/v`; see
//! `compiler::ir::ops::attention`) as library steps. Per batch entry (batch × heads,
//! in parallel through rayon): the scores `q kᵀ · scale` are one `gemm` product reading
//! k transposed in place; one pass over each score row applies the causal mask and the
//! softmax (or `exp(s − lse)` from the saved statistic, or the log-sum-exp itself);
//! what follows is `gemm` products again, reading the probabilities transposed in
//! place where the formula needs `Pᵀ` or `dSᵀ`. With the causal mask, products go by
//! blocks of rows over only the keys they see. The decomposition instead materialises
//! a permuted copy of k, the mask, and several reductions and pointwise passes over
//! the T×S scores.

use super::buffers::Out;
use super::kernels::gemm_f32;
use super::{Buf, Val};
use rayon::prelude::*;
use smelt_compiler::ir::ops::{AttentionPart, Composite};

/// Runs attention composite `c` on operands `x`; `shape` is the result's shape.
pub(super) fn eval(c: &Composite, x: &[&Val], shape: &[usize], out: Out) -> Buf {
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
    let mut out = out.f32_filled(shape.iter().product(), 0.0);
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
    let rows = Rows {
        t,
        s,
        causal,
        parallelism,
    };
    out.par_chunks_mut(per_entry)
        .enumerate()
        .for_each(|(bi, dst)| {
            let (q, k) = (entry(0, bi), entry(1, bi));
            let mut p = vec![0f32; t * s];
            rows.product(&mut p, (q, e), (k, true), scale);
            match part {
                None => {
                    rows.softmax(&mut p);
                    let v = entry(2, bi);
                    rows.product(dst, (&p, s), (v, false), 1.0);
                }
                Some(AttentionPart::Lse) => rows.log_sum_exp(&p, dst),
                Some(AttentionPart::GradV) => {
                    rows.probabilities(&mut p, entry(3, bi));
                    rows.transposed_product(dst, &p, entry(2, bi), 1.0);
                }
                Some(part @ (AttentionPart::GradQ | AttentionPart::GradK)) => {
                    let (v, dy, lse, delta) =
                        (entry(2, bi), entry(3, bi), entry(4, bi), entry(5, bi));
                    rows.probabilities(&mut p, lse);
                    // dP = dy vᵀ, then dS = P ∘ (dP − delta) in place of P.
                    let mut dp = vec![0f32; t * s];
                    rows.product(&mut dp, (dy, dy.len() / t.max(1)), (v, true), 1.0);
                    let pairs = p.chunks_mut(s.max(1)).zip(dp.chunks(s.max(1)));
                    for ((p_row, dp_row), d) in pairs.zip(delta) {
                        for (pij, dpij) in p_row.iter_mut().zip(dp_row) {
                            *pij *= dpij - d;
                        }
                    }
                    if part == AttentionPart::GradQ {
                        // dq = scale · dS k.
                        rows.product(dst, (&p, s), (k, false), scale);
                    } else {
                        // dk = scale · dSᵀ q.
                        rows.transposed_product(dst, &p, q, scale);
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
    parallelism: gemm::Parallelism,
}

/// With the causal mask, products go by blocks of this many rows (or keys), each over
/// only the keys (or queries) it sees: about half the work of the whole square.
const BLOCK: usize = 32;

impl Rows {
    /// `(first row, end row, keys seen)` for blocks of query rows.
    fn row_blocks(&self) -> Vec<(usize, usize, usize)> {
        if !self.causal {
            return vec![(0, self.t, self.s)];
        }
        (0..self.t)
            .step_by(BLOCK)
            .map(|i0| {
                let i1 = (i0 + BLOCK).min(self.t);
                (i0, i1, i1.min(self.s))
            })
            .collect()
    }

    /// `dst = scale · a · b` (or `a · bᵀ`), by blocks of query rows, each over only
    /// the keys its rows see. `a` has `t` rows of `width_a`; `b` has the `s` keys as
    /// rows. Read as is (`a` holds probabilities or dS, zero past the keys seen), `dst`
    /// gets `b`'s width; `transposed` (`a` is q or dy), `dst` is a `t × s` score-like
    /// matrix, filled only where the block sees the keys.
    fn product(
        &self,
        dst: &mut [f32],
        (a, width_a): (&[f32], usize),
        (b, transposed): (&[f32], bool),
        scale: f32,
    ) {
        let width_b = b.len() / self.s.max(1);
        for (i0, i1, n) in self.row_blocks() {
            if n == 0 || i0 == i1 {
                continue;
            }
            // The inner size is the head size when b is transposed, else the keys seen.
            let (cols, inner, dst_rs, b_strides) = if transposed {
                (n, width_a, self.s, (1, width_b))
            } else {
                (width_b, n, width_b, (width_b, 1))
            };
            if inner == 0 {
                continue;
            }
            gemm_f32(
                (&mut dst[i0 * dst_rs..], dst_rs),
                (i1 - i0, cols, inner),
                (&a[i0 * width_a..], width_a, 1),
                (b, b_strides.0, b_strides.1),
                scale,
                false,
                self.parallelism,
            );
        }
    }

    /// `dst[j, :] = scale · Σ_i a[i, j] · x[i, :]` (`aᵀ x`, `a` the `t × s`
    /// probabilities or dS read transposed in place, `x` with `t` rows), by blocks of
    /// keys over only the queries that see them.
    fn transposed_product(&self, dst: &mut [f32], a: &[f32], x: &[f32], scale: f32) {
        let width = x.len() / self.t.max(1);
        let blocks: Vec<(usize, usize, usize)> = if self.causal {
            (0..self.s)
                .step_by(BLOCK)
                .map(|j0| (j0, (j0 + BLOCK).min(self.s), j0))
                .collect()
        } else {
            vec![(0, self.s, 0)]
        };
        for (j0, j1, first) in blocks {
            if first >= self.t || j0 == j1 || width == 0 {
                continue;
            }
            gemm_f32(
                (&mut dst[j0 * width..], width),
                (j1 - j0, width, self.t - first),
                (&a[first * self.s + j0..], 1, self.s),
                (&x[first * width..], width, 1),
                scale,
                false,
                self.parallelism,
            );
        }
    }

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
