//! Attention's backward pass, flash-attention style (FlashAttention-2's split): the
//! probabilities `P = exp(q·kᵀ·scale − lse)` are recomputed tile by tile from q, k and
//! the saved row log-sum-exp, so the T×S matrix never reaches global memory. The IR is
//! single-output, so each adjoint is its own kernel, all of one shape: a block of 4
//! warps owns 4 rows (a warp per row, the row staged in shared memory), and the other
//! side streams through shared memory in tiles of 32 rows, each lane scoring one row
//! of the tile; a weight per lane then meets the tile's rows in shuffles, each lane
//! accumulating its output columns (`lane`, `lane + 32`, ...) in registers.
//!
//! | kernel | owned rows | streamed tiles | lane weight | accumulates |
//! |---|---|---|---|---|
//! | `attention_grad_q` | queries (q, dy, lse, delta) | keys (k, v) | `dS = P (dy·v − delta)` | `dS · k`, then `× scale` |
//! | `attention_grad_k` | keys (k, v) | queries (q, dy, lse, delta) | `dS` | `dS · q`, then `× scale` |
//! | `attention_grad_v` | keys (k) | queries (q, dy, lse) | `P` | `P · dy` |
//!
//! dQ has its own pass over the keys rather than atomics from the dK/dV pass: a kernel
//! writes only its first argument, and this way the sums have a fixed order (results
//! are deterministic) and no buffer has to start zeroed. With `causal`, query rows see
//! keys at or before them, so the dQ pass stops after the block's last query and the
//! dK/dV passes start at the block's first key.

use super::attention::{
    accumulate, dot, for_each_row_block, load_if, stage_row, stage_tile, store_row, Dims, RowItem,
    ROWS, TILE,
};
use super::{elem_of, KernelCall, Role, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Elem, Kernel, Reg, Space, Special};
use crate::gpu::math;
use crate::ir::ops::AttentionPart;
use crate::ir::{Graph, ValueId};

/// Lowers `attention_grad_q`, `attention_grad_k` or `attention_grad_v` (operands as in
/// [`crate::ir::ops::attention`]) to one kernel call.
#[allow(clippy::too_many_arguments)]
pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    out: ValueId,
    operands: &[ValueId],
    part: AttentionPart,
    causal: bool,
    scale: f64,
) -> Result<KernelCall, String> {
    let shape = |v: ValueId| shapes[v.index()].as_slice();
    // The output's adjoint `dy` has the values' head size.
    let dy = operands[if part == AttentionPart::GradV { 2 } else { 3 }];
    let d = Dims::of(shape(operands[0]), shape(operands[1]), Some(shape(dy)));
    let mut elems = vec![elem_of(g.ty(out).dtype)?];
    for o in operands {
        elems.push(elem_of(g.ty(*o).dtype)?);
    }
    let kernel = kernel(name, &d, &elems, part, causal, scale as f32);
    let owned = if part == AttentionPart::GradQ {
        d.t
    } else {
        d.s
    };
    // Products per visible (query, key) pair: the score, dy·v where needed, and the
    // accumulation.
    let per_pair = match part {
        AttentionPart::GradV => d.e + d.f,
        _ => 2 * d.e + d.f,
    };
    let pairs = (d.batch * d.t * d.s) as f64 * if causal { 0.5 } else { 1.0 };
    let mut args = vec![out];
    args.extend_from_slice(operands);
    Ok(KernelCall {
        kernel,
        args,
        work_blocks: (d.batch * owned.div_ceil(ROWS)).clamp(1, i32::MAX as usize) as u32,
        role: Role::Compute,
        flops: 2.0 * pairs * per_pair as f64,
    })
}

/// One side of the product: `rows` rows per batch entry of the buffer `a` (q or k,
/// `e` wide) and, where the kernel needs it, `b` (dy or v, `f` wide).
struct Side {
    rows: usize,
    a: Space,
    b: Option<Space>,
}

/// Where the row statistics live: the owned query rows' in registers, or the streamed
/// query tile's in shared memory.
#[derive(Clone, Copy)]
enum Stats {
    /// Loaded once per owned query row.
    Owned { lse: Space, delta: Space },
    /// Staged with each query tile (`delta` only for dK).
    Tiled { lse: Space, delta: Option<Space> },
}

/// The kernel; `elems` are the element types of the output and then of the operands.
fn kernel(
    name: &str,
    d: &Dims,
    elems: &[Elem],
    part: AttentionPart,
    causal: bool,
    scale: f32,
) -> Kernel {
    let threads = (ROWS * 32) as u32;
    let mut b = KernelBuilder::new(name, threads);
    let (qe, ke, se) = (d.batch * d.t * d.e, d.batch * d.s * d.e, d.batch * d.t);
    let out_len = match part {
        AttentionPart::GradQ => qe,
        AttentionPart::GradK => ke,
        _ => d.batch * d.s * d.f,
    };
    let out = b.param("out", elems[0], out_len);
    let q = b.param("q", elems[1], qe);
    let k = b.param("k", elems[2], ke);
    // Sides, statistics, and which tile operand the weights multiply.
    let (own, tile, stats, width) = match part {
        AttentionPart::GradQ | AttentionPart::GradK => {
            let v = b.param("v", elems[3], d.batch * d.s * d.f);
            let dy = b.param("dy", elems[4], d.batch * d.t * d.f);
            let lse = b.param("lse", elems[5], se);
            let delta = b.param("delta", elems[6], se);
            let queries = Side {
                rows: d.t,
                a: q,
                b: Some(dy),
            };
            let keys = Side {
                rows: d.s,
                a: k,
                b: Some(v),
            };
            if part == AttentionPart::GradQ {
                (queries, keys, Stats::Owned { lse, delta }, d.e)
            } else {
                let stats = Stats::Tiled {
                    lse,
                    delta: Some(delta),
                };
                (keys, queries, stats, d.e)
            }
        }
        AttentionPart::Lse => unreachable!("attention_lse is the forward kernel's"),
        AttentionPart::GradV => {
            let dy = b.param("dy", elems[3], d.batch * d.t * d.f);
            let lse = b.param("lse", elems[4], se);
            let keys = Side {
                rows: d.s,
                a: k,
                b: None,
            };
            let queries = Side {
                rows: d.t,
                a: q,
                b: Some(dy),
            };
            (keys, queries, Stats::Tiled { lse, delta: None }, d.f)
        }
    };
    // dy·v is needed for dS (dQ and dK), not for dV.
    let with_dp = part != AttentionPart::GradV;
    let own_a = b.shared("own_a", Elem::F32, ROWS * d.e);
    let own_b = with_dp.then(|| b.shared("own_b", Elem::F32, ROWS * d.f));
    // Tile rows padded by one so the lanes' reads of one row each hit different banks.
    let tile_a = b.shared("tile_a", Elem::F32, TILE * (d.e + 1));
    let tile_b = b.shared("tile_b", Elem::F32, TILE * (d.f + 1));
    let tile_stats = match stats {
        Stats::Tiled { delta, .. } => Some((
            b.shared("tile_lse", Elem::F32, TILE),
            delta.map(|_| b.shared("tile_delta", Elem::F32, TILE)),
        )),
        Stats::Owned { .. } => None,
    };
    let tid = b.special(Special::Tid);
    let warp = b.div(tid, 32);
    let lane = b.rem(tid, 32);
    let columns = width.div_ceil(32);
    for_each_row_block(&mut b, warp, (d.batch, own.rows), threads, |b, item| {
        let RowItem {
            bi,
            first: r0,
            row,
            live,
        } = item;
        let own_row = b.mul(bi, own.rows as i32);
        let own_row = b.add(own_row, row);
        let a_base = b.mul(own_row, d.e as i32);
        let a_at = b.mul(warp, d.e as i32);
        stage_row(b, (own.a, own_a), live, (a_base, a_at), d.e, lane);
        let b_at = b.mul(warp, d.f as i32);
        if let (Some(src), Some(dst)) = (own.b, own_b) {
            let b_base = b.mul(own_row, d.f as i32);
            stage_row(b, (src, dst), live, (b_base, b_at), d.f, lane);
        }
        let owned_stats = match stats {
            Stats::Owned { lse, delta } => Some((
                load_if(b, live, lse, own_row, 0),
                load_if(b, live, delta, own_row, 0),
            )),
            Stats::Tiled { .. } => None,
        };
        let acc: Vec<Reg> = (0..columns).map(|_| b.mov(0.0f32)).collect();
        // The tiles with a visible (query, key) pair for some owned row.
        let (from, to) = match (causal, &stats) {
            (false, _) => (b.mov(0), b.mov(tile.rows as i32)),
            // Owned queries see keys up to the block's last one.
            (true, Stats::Owned { .. }) => {
                let last = b.add(r0, ROWS as i32);
                (b.mov(0), b.bin(BinOp::Min, last, tile.rows as i32))
            }
            // Owned keys are seen by queries from the block's first one on.
            (true, Stats::Tiled { .. }) => (r0, b.mov(tile.rows as i32)),
        };
        let tile_base = b.mul(bi, tile.rows as i32);
        b.for_range(from, to, TILE as i32, |b, t0| {
            // The previous tile (and the owned rows) are fully read and written.
            b.bar();
            let staged = (tile_base, t0);
            stage_tile(
                b,
                (tile.a, tile_a),
                staged,
                tile.rows,
                d.e,
                d.e + 1,
                tid,
                threads,
            );
            if let Some(src) = tile.b {
                stage_tile(
                    b,
                    (src, tile_b),
                    staged,
                    tile.rows,
                    d.f,
                    d.f + 1,
                    tid,
                    threads,
                );
            }
            if let (Stats::Tiled { lse, delta }, Some((lse_s, delta_s))) = (&stats, tile_stats) {
                stage_tile(b, (*lse, lse_s), staged, tile.rows, 1, 1, tid, threads);
                if let (Some(delta), Some(delta_s)) = (delta, delta_s) {
                    stage_tile(b, (*delta, delta_s), staged, tile.rows, 1, 1, tid, threads);
                }
            }
            b.bar();
            // Lane j takes row t0 + j of the tile.
            let other = b.add(t0, lane);
            let mut valid = b.setp(Cmp::Lt, other, tile.rows as i32);
            if causal {
                // Visible: query >= key.
                let cmp = match stats {
                    Stats::Owned { .. } => Cmp::Le,
                    Stats::Tiled { .. } => Cmp::Ge,
                };
                let seen = b.setp(cmp, other, row);
                valid = b.bin(BinOp::And, valid, seen);
            }
            let (lse, delta) = match (owned_stats, tile_stats) {
                (Some((lse, delta)), _) => (lse, Some(delta)),
                (None, Some((lse_s, delta_s))) => {
                    let lse = b.ld(lse_s, lane);
                    (lse, delta_s.map(|s| b.ld(s, lane)))
                }
                (None, None) => unreachable!("statistics are owned or tiled"),
            };
            let score = dot(b, (own_a, a_at), (tile_a, lane, d.e + 1), d.e);
            let scaled = b.mul(score, scale);
            let centred = b.bin(BinOp::Sub, scaled, lse);
            let centred = b.selp(valid, centred, 0.0f32);
            let p = math::exp(b, centred);
            let p = b.selp(valid, p, 0.0f32);
            let weight = match (own_b, delta) {
                (Some(own_b), Some(delta)) => {
                    let dp = dot(b, (own_b, b_at), (tile_b, lane, d.f + 1), d.f);
                    let dp = b.bin(BinOp::Sub, dp, delta);
                    b.mul(p, dp)
                }
                _ => p,
            };
            let weighted = if with_dp {
                (tile_a, d.e + 1)
            } else {
                (tile_b, d.f + 1)
            };
            accumulate(b, &acc, weight, weighted, width, lane);
        });
        store_row(b, out, (live, own_row), &acc, width, lane, |b, a| {
            if with_dp {
                b.mul(a, scale)
            } else {
                b.mov(a)
            }
        });
    });
    b.finish()
}
