//! `paged_attention` (see `compiler::ir::ops::paged_attention`) as a library step.
//!
//! Each query row reads its sequence's cached keys block by block through the block
//! table, where they lie, then the new tokens' keys up to its own. Its scores go to a
//! scratch row; one softmax pass (maximum, `exp(s − max)`, sum) follows, and the values
//! are summed with those weights, again read in place. The decomposition instead
//! gathers every row's blocks into a contiguous copy (and permutes it) on every step.
//!
//! Every row is computed on its own, so a sequence's result does not depend on the
//! batch it runs in. (Key/value head, sequence) pairs run in parallel when the work is
//! large enough to pay for waking another thread.

use super::buffers::Out;
use super::kernels::indices;
use super::{Buf, Val};
use rayon::prelude::*;

/// Score-and-value multiply-adds below which the step runs on one thread.
const PARALLEL_FROM: usize = 1 << 15;

/// Runs `paged_attention {scale}` on operands `x` (`q, k, v, cache_k, cache_v,
/// block_table, past_len`); `shape` is the result's, `[B, G, R, Dv]`.
pub(super) fn eval(scale: f32, x: &[&Val], shape: &[usize], out: Out) -> Result<Buf, String> {
    let [q, k, v, cache_k, cache_v, table, past] = [x[0], x[1], x[2], x[3], x[4], x[5], x[6]];
    let [batch, groups, rows, width] = [0, 1, 2, 3].map(|i| q.shape[i]);
    let (tokens, value_width) = (k.shape[2], v.shape[3]);
    let (blocks, block) = (cache_k.shape[0], cache_k.shape[2]);
    let pages = table.shape[1];
    let table = indices(table, blocks, 0)?;
    let Buf::Int(past) = past.buf() else {
        unreachable!("lengths are integers (verified)")
    };
    let geometry = Geometry {
        groups,
        rows,
        tokens,
        width,
        value_width,
        block,
        pages,
    };
    let mut out = out.f32_overwritten(shape.iter().product());
    let per_pair = rows * value_width;
    if per_pair == 0 {
        return Ok(Buf::F32(out));
    }
    let operands = Operands {
        q: q.f32(),
        k: k.f32(),
        v: v.f32(),
        cache_k: cache_k.f32(),
        cache_v: cache_v.f32(),
        table,
        past,
    };
    let run = |(pair, dst): (usize, &mut [f32])| {
        geometry.pair(&operands, pair / groups, pair % groups, scale, dst)
    };
    let visible: usize = past.iter().map(|&l| l.max(0) as usize + tokens).sum();
    if visible * groups * rows * (width + value_width) < PARALLEL_FROM {
        out.chunks_mut(per_pair).enumerate().for_each(run);
    } else {
        out.par_chunks_mut(per_pair).enumerate().for_each(run);
    }
    debug_assert_eq!(out.len(), batch * groups * per_pair);
    Ok(Buf::F32(out))
}

/// The sizes of one `paged_attention` step.
struct Geometry {
    groups: usize,
    rows: usize,
    tokens: usize,
    width: usize,
    value_width: usize,
    block: usize,
    pages: usize,
}

/// The operands' data, row-major.
struct Operands<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    cache_k: &'a [f32],
    cache_v: &'a [f32],
    table: &'a [i64],
    past: &'a [i64],
}

impl Geometry {
    /// The rows of sequence `b` for key/value head `g`, into `dst` (`[R, Dv]`).
    fn pair(&self, x: &Operands, b: usize, g: usize, scale: f32, dst: &mut [f32]) {
        let (d, dv, p) = (self.width, self.value_width, self.block);
        // Positions past the table's pages do not exist (the definition masks
        // positions at or after `past_len` among those the table lists).
        let cached = (x.past[b].max(0) as usize).min(self.pages * p);
        let pages = &x.table[b * self.pages..(b + 1) * self.pages];
        // Where cached position `i`'s key or value row starts in its cache.
        let cached_row = |i: usize, row_width: usize| {
            let blk = pages[i / p] as usize;
            ((blk * self.groups + g) * p + i % p) * row_width
        };
        let new_row =
            |j: usize, row_width: usize| ((b * self.groups + g) * self.tokens + j) * row_width;
        let mut scores = Vec::with_capacity(cached + self.tokens);
        for (r, out) in dst.chunks_exact_mut(dv).enumerate() {
            // Row `h·T + t` is a query head at new token `t`: it sees keys up to `t`.
            let seen = r % self.tokens + 1;
            let query = &x.q[((b * self.groups + g) * self.rows + r) * d..][..d];
            scores.clear();
            scores.extend(
                (0..cached).map(|i| dot(query, &x.cache_k[cached_row(i, d)..][..d]) * scale),
            );
            scores.extend((0..seen).map(|j| dot(query, &x.k[new_row(j, d)..][..d]) * scale));
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0.0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            out.fill(0.0);
            for (i, &e) in scores[..cached].iter().enumerate() {
                add_scaled(out, e, &x.cache_v[cached_row(i, dv)..][..dv]);
            }
            for (j, &e) in scores[cached..].iter().enumerate() {
                add_scaled(out, e, &x.v[new_row(j, dv)..][..dv]);
            }
            out.iter_mut().for_each(|o| *o /= sum);
        }
    }
}

/// `Σ a·b` in eight lanes (so it vectorises), then across them.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out += e · row`.
fn add_scaled(out: &mut [f32], e: f32, row: &[f32]) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o += e * v;
    }
}
