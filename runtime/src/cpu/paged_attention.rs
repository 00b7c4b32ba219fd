//! `paged_attention` (see `compiler::ir::ops::paged_attention`) as a library step.
//!
//! The query rows of one new token (one per stacked query head) read their sequence's
//! cached keys block by block through the block table, where they lie, then the new
//! tokens' keys up to their own; each key row is read once for all of them. Each row's
//! scores go to a scratch row; one softmax pass (maximum, `exp(s − max)`, sum)
//! follows, and the values are summed with those weights, again read in place. The
//! decomposition instead gathers every row's blocks into a contiguous copy (and
//! permutes it) on every step.
//!
//! Every row is computed on its own, so a sequence's result does not depend on the
//! batch it runs in. (Key/value head, sequence) pairs run in parallel when the work is
//! large enough to pay for waking another thread.

use super::buffers::Out;
use super::kernels::indices;
use super::{Buf, Val};
use rayon::prelude::*;
use std::slice::ChunksExact;

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
    // Lengths come from the caller: counted only up to the positions the table lists.
    let visible: usize = past
        .iter()
        .map(|&l| (l.max(0) as usize).min(pages * block) + tokens)
        .sum();
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
    /// The rows of sequence `b` for key/value head `g`, into `dst` (`[R, Dv]`). The
    /// rows of one new token (one per stacked query head) go together, so each key
    /// and value row is read once for all of them; every row still sums its keys in
    /// position order, whatever the split between cached and new.
    fn pair(&self, x: &Operands, b: usize, g: usize, scale: f32, dst: &mut [f32]) {
        let (d, dv, p, t) = (self.width, self.value_width, self.block, self.tokens);
        let heads = self.rows / t;
        // Positions past the table's pages do not exist (the definition masks
        // positions at or after `past_len` among those the table lists).
        let cached = (x.past[b].max(0) as usize).min(self.pages * p);
        let pages = &x.table[b * self.pages..(b + 1) * self.pages];
        let queries = &x.q[(b * self.groups + g) * self.rows * d..][..self.rows * d];
        // Per stacked head, its scores over the positions its token sees.
        let mut scores = vec![Vec::with_capacity(cached + t); heads];
        let mut sums = vec![0.0f32; heads];
        for token in 0..t {
            let seen = cached + token + 1;
            let row = |h: usize| h * t + token;
            for s in scores.iter_mut() {
                s.clear();
            }
            let keys = self
                .cached_rows(x.cache_k, pages, g, d, cached)
                .chain(self.new_rows(x.k, b, g, d).take(token + 1));
            for key in keys {
                for (h, s) in scores.iter_mut().enumerate() {
                    s.push(dot(&queries[row(h) * d..][..d], key) * scale);
                }
            }
            for (s, sum) in scores.iter_mut().zip(sums.iter_mut()) {
                let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                *sum = 0.0;
                for v in s.iter_mut() {
                    *v = (*v - max).exp();
                    *sum += *v;
                }
            }
            for h in 0..heads {
                dst[row(h) * dv..][..dv].fill(0.0);
            }
            let values = self
                .cached_rows(x.cache_v, pages, g, dv, cached)
                .chain(self.new_rows(x.v, b, g, dv).take(token + 1));
            for (i, value) in values.enumerate().take(seen) {
                for (h, s) in scores.iter().enumerate() {
                    add_scaled(&mut dst[row(h) * dv..][..dv], s[i], value);
                }
            }
            for (h, &sum) in sums.iter().enumerate() {
                dst[row(h) * dv..][..dv].iter_mut().for_each(|o| *o /= sum);
            }
        }
    }

    /// The first `cached` rows (of width `w`) of key/value head `g` in `cache`, in
    /// position order, block by block through `pages`.
    fn cached_rows<'a>(
        &'a self,
        cache: &'a [f32],
        pages: &'a [i64],
        g: usize,
        w: usize,
        cached: usize,
    ) -> impl Iterator<Item = &'a [f32]> + 'a {
        let p = self.block;
        pages
            .iter()
            .flat_map(move |&blk| {
                let start = (blk as usize * self.groups + g) * p * w;
                cache[start..start + p * w].chunks_exact(w)
            })
            .take(cached)
    }

    /// The new tokens' rows (of width `w`) of sequence `b`, key/value head `g`.
    fn new_rows<'a>(&self, data: &'a [f32], b: usize, g: usize, w: usize) -> ChunksExact<'a, f32> {
        let start = (b * self.groups + g) * self.tokens * w;
        data[start..start + self.tokens * w].chunks_exact(w)
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
