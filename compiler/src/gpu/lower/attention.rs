//! Fused attention, flash-attention style: `softmax(q·kᵀ·scale [causal]) · v` without
//! ever writing the T×S score matrix. A block of 4 warps takes 4 query rows of one
//! batch entry (a warp per row); keys and values stream through shared memory in tiles
//! of 32, each lane scoring one key of the tile; a running maximum and sum (the online
//! softmax) rescale the partial output, which each lane keeps for its output columns
//! (`lane`, `lane + 32`, ...). With `causal`, tiles past the block's last row are
//! skipped.
//!
//! The same kernel without values computes `attention_lse`, each query row's
//! log-sum-exp `m + log l` from the online softmax's final maximum and sum: the row
//! statistic the backward kernels (`attention_bwd.rs`) recompute probabilities from.

use super::{elem_of, KernelCall, Role, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Elem, Inst, Kernel, Operand, Reg, Space, Special};
use crate::gpu::math;
use crate::ir::ops::{AttentionPart, Composite, UnaryOp};
use crate::ir::{Graph, TensorType, ValueId};

/// Rows per block (one per warp): query rows here, key rows in the backward kernels.
pub(super) const ROWS: usize = 4;
/// Rows of the streamed operand per shared-memory tile (one per lane).
pub(super) const TILE: usize = 32;
/// The largest head size kept in registers and shared memory.
pub const MAX_HEAD: usize = 128;

/// True if a fused kernel handles the attention composite `c` (`attention` or one of
/// its backward pieces) over these operand types: static head sizes of at most
/// [`MAX_HEAD`] and floats the GPU stores.
pub fn supported(c: &Composite, types: &[&TensorType]) -> bool {
    // The operands with a head axis last: all but the row statistics lse and delta.
    let matrices = match c {
        Composite::Attention { .. } => 3,
        Composite::AttentionGrad { part, .. } => match part {
            AttentionPart::Lse => 2,
            AttentionPart::GradQ | AttentionPart::GradK => 4,
            AttentionPart::GradV => 3,
        },
        _ => return false,
    };
    let stored = |t: &&TensorType| {
        elem_of(t.dtype).is_ok_and(|e| matches!(e, Elem::F32 | Elem::F16 | Elem::BF16))
    };
    let head_fits = |t: &&TensorType| {
        t.dims()
            .last()
            .and_then(|d| d.as_static())
            .is_some_and(|n| (1..=MAX_HEAD as u64).contains(&n))
    };
    types.len() >= matrices && types.iter().all(stored) && types[..matrices].iter().all(head_fits)
}

/// The sizes of one attention: `batch` entries of `t` queries and `s` keys, head size
/// `e` for queries and keys, `f` for values.
pub(super) struct Dims {
    pub batch: usize,
    pub t: usize,
    pub s: usize,
    pub e: usize,
    pub f: usize,
}

impl Dims {
    /// The sizes from the shapes of q `[..., t, e]`, k `[..., s, e]` and a value-like
    /// operand `[..., _, f]` (v, or the output's adjoint).
    pub(super) fn of(q: &[usize], k: &[usize], value_like: Option<&[usize]>) -> Dims {
        let r = q.len();
        Dims {
            batch: q[..r - 2].iter().product(),
            t: q[r - 2],
            s: k[r - 2],
            e: q[r - 1],
            f: value_like.map_or(0, |v| v[r - 1]),
        }
    }
}

/// What the forward kernel writes.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    /// The attention output `[batch, t, f]`.
    Attention,
    /// The row log-sum-exp `[batch, t]` (no values are read).
    Lse,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    out: ValueId,
    operands: &[ValueId],
    causal: bool,
    scale: f64,
) -> Result<KernelCall, String> {
    let output = if operands.len() == 3 {
        Output::Attention
    } else {
        Output::Lse
    };
    let shape = |v: &ValueId| shapes[v.index()].as_slice();
    let d = Dims::of(
        shape(&operands[0]),
        shape(&operands[1]),
        operands.get(2).map(shape),
    );
    let mut elems = vec![elem_of(g.ty(out).dtype)?];
    for o in operands {
        elems.push(elem_of(g.ty(*o).dtype)?);
    }
    let kernel = kernel(name, &d, &elems, output, causal, scale as f32);
    let pairs = (d.batch * d.t * d.s) as f64 * if causal { 0.5 } else { 1.0 };
    let mut args = vec![out];
    args.extend_from_slice(operands);
    Ok(KernelCall {
        kernel,
        args,
        work_blocks: (d.batch * d.t.div_ceil(ROWS)).clamp(1, i32::MAX as usize) as u32,
        role: Role::Compute,
        flops: 2.0 * pairs * (d.e + d.f) as f64,
    })
}

/// The kernel; `elems` are the element types of the output and then of the operands.
fn kernel(
    name: &str,
    d: &Dims,
    elems: &[Elem],
    output: Output,
    causal: bool,
    scale: f32,
) -> Kernel {
    let threads = (ROWS * 32) as u32;
    let mut b = KernelBuilder::new(name, threads);
    let out_len = match output {
        Output::Attention => d.batch * d.t * d.f,
        Output::Lse => d.batch * d.t,
    };
    let out = b.param("out", elems[0], out_len);
    let q = b.param("q", elems[1], d.batch * d.t * d.e);
    let k = b.param("k", elems[2], d.batch * d.s * d.e);
    let v = (output == Output::Attention).then(|| b.param("v", elems[3], d.batch * d.s * d.f));
    let qs = b.shared("q", Elem::F32, ROWS * d.e);
    // Rows padded by one so the lanes' reads of one column hit different banks.
    let ks = b.shared("k", Elem::F32, TILE * (d.e + 1));
    let vs = v.map(|_| b.shared("v", Elem::F32, TILE * d.f));
    let tid = b.special(Special::Tid);
    let warp = b.div(tid, 32);
    let lane = b.rem(tid, 32);
    let columns = d.f.div_ceil(32);
    for_each_row_block(&mut b, warp, (d.batch, d.t), threads, |b, item| {
        let RowItem {
            bi,
            first: q0,
            row,
            live,
        } = item;
        // This warp's query row into shared memory (zeros past the end).
        let q_row = b.mul(bi, d.t as i32);
        let q_row = b.add(q_row, row);
        let q_base = b.mul(q_row, d.e as i32);
        let qs_base = b.mul(warp, d.e as i32);
        stage_row(b, (q, qs), live, (q_base, qs_base), d.e, lane);
        let m = b.mov(f32::NEG_INFINITY);
        let l = b.mov(0.0f32);
        let acc: Vec<Reg> = (0..columns).map(|_| b.mov(0.0f32)).collect();
        let key_end = if causal {
            let last = b.add(q0, ROWS as i32);
            b.bin(BinOp::Min, last, d.s as i32)
        } else {
            b.mov(d.s as i32)
        };
        let kv_base = b.mul(bi, d.s as i32);
        b.for_range(0, key_end, TILE as i32, |b, k0| {
            // The previous tile (and the query rows) are fully read and written.
            b.bar();
            stage_tile(b, (k, ks), (kv_base, k0), d.s, d.e, d.e + 1, tid, threads);
            if let (Some(v), Some(vs)) = (v, vs) {
                stage_tile(b, (v, vs), (kv_base, k0), d.s, d.f, d.f, tid, threads);
            }
            b.bar();
            // Lane j scores key k0 + j.
            let key = b.add(k0, lane);
            let score = dot(b, (qs, qs_base), (ks, lane, d.e + 1), d.e);
            let scaled = b.mul(score, scale);
            let mut valid = b.setp(Cmp::Lt, key, d.s as i32);
            if causal {
                let seen = b.setp(Cmp::Le, key, row);
                valid = b.bin(BinOp::And, valid, seen);
            }
            let s = b.selp(valid, scaled, f32::NEG_INFINITY);
            let tile_max = warp_all(b, BinOp::Max, s);
            let m_new = b.bin(BinOp::Max, m, tile_max);
            // Rescale what was summed under the old maximum (nothing yet: 0).
            let had = b.setp(Cmp::Gt, m, f32::NEG_INFINITY);
            let shift = b.bin(BinOp::Sub, m, m_new);
            let shift = b.selp(had, shift, 0.0f32);
            let alpha = math::exp(b, shift);
            let alpha = b.selp(had, alpha, 0.0f32);
            let centred = b.bin(BinOp::Sub, s, m_new);
            let centred = b.selp(valid, centred, 0.0f32);
            let p = math::exp(b, centred);
            let p = b.selp(valid, p, 0.0f32);
            let tile_sum = warp_all(b, BinOp::Add, p);
            let rescaled = b.mul(l, alpha);
            let new_l = b.add(rescaled, tile_sum);
            b.assign(l, new_l);
            b.assign(m, m_new);
            for &a in &acc {
                b.update(BinOp::Mul, a, alpha);
            }
            if let Some(vs) = vs {
                accumulate(b, &acc, p, (vs, d.f), d.f, lane);
            }
        });
        match output {
            Output::Attention => {
                store_row(b, out, (live, q_row), &acc, d.f, lane, |b, a| b.div(a, l));
            }
            Output::Lse => {
                let first = b.setp(Cmp::Eq, lane, 0);
                let store = b.bin(BinOp::And, live, first);
                b.if_then(store, |b| {
                    let log_l = math::unary(b, UnaryOp::Log, l);
                    let lse = b.add(m, log_l);
                    b.st(out, q_row, lse);
                });
            }
        }
    });
    b.finish()
}

/// Copies this warp's row (`width` elements from `src[base]`, zeros where `live` does
/// not hold) into the shared array `dst` at `at`, a lane per column.
/// The rows of one grid-stride item: a block of `ROWS` rows of batch entry `bi`
/// starting at `first`, one per warp; `live` says whether the warp's `row` exists.
pub(super) struct RowItem {
    pub bi: Reg,
    pub first: Reg,
    pub row: Reg,
    pub live: Reg,
}

/// Runs `body` for each grid-stride item over `batch` entries of `rows` rows, in blocks
/// of `ROWS` rows with one warp per row. Every item starts with a barrier, so no warp
/// replaces shared data that the previous item is still reading.
pub(super) fn for_each_row_block(
    b: &mut KernelBuilder,
    warp: Reg,
    (batch, rows): (usize, usize),
    threads: u32,
    body: impl FnOnce(&mut KernelBuilder, RowItem),
) {
    let blocks = rows.div_ceil(ROWS);
    b.grid_stride_by(batch * blocks, threads, |b, item| {
        let bi = b.div(item, blocks as i32);
        let block = b.rem(item, blocks as i32);
        let first = b.mul(block, ROWS as i32);
        let row = b.add(first, warp);
        let live = b.setp(Cmp::Lt, row, rows as i32);
        b.bar();
        body(
            b,
            RowItem {
                bi,
                first,
                row,
                live,
            },
        );
    });
}

pub(super) fn stage_row(
    b: &mut KernelBuilder,
    (src, dst): (Space, Space),
    live: Reg,
    (base, at): (Reg, Reg),
    width: usize,
    lane: Reg,
) {
    b.for_range(lane, width as i32, 32, |b, e| {
        let x = load_if(b, live, src, base, e);
        let i = b.add(at, e);
        b.st(dst, i, x);
    });
}

/// `Σ_e own[own_at + e] · tile[lane · stride + e]` over `n` elements: this warp's
/// staged row against the lane's row of a shared tile.
pub(super) fn dot(
    b: &mut KernelBuilder,
    (own, own_at): (Space, Reg),
    (tile, lane, stride): (Space, Reg, usize),
    n: usize,
) -> Reg {
    let acc = b.mov(0.0f32);
    let row = b.mul(lane, stride as i32);
    b.for_range(0, n as i32, 1, |b, e| {
        let i = b.add(own_at, e);
        let x = b.ld(own, i);
        let j = b.add(row, e);
        let y = b.ld(tile, j);
        b.push(Inst::Fma {
            dst: acc,
            a: x.into(),
            b: y.into(),
            c: acc.into(),
        });
    });
    acc
}

/// `acc[c] += Σ_j w_j · tile[j · stride + lane + 32c]` over the tile's rows `j`, where
/// lane `j` holds `w_j`: each lane accumulates its columns (`lane`, `lane + 32`, ...)
/// of the weighted sum of the tile's rows.
pub(super) fn accumulate(
    b: &mut KernelBuilder,
    acc: &[Reg],
    w: Reg,
    (tile, stride): (Space, usize),
    width: usize,
    lane: Reg,
) {
    b.for_range(0, TILE as i32, 1, |b, j| {
        let wj = b.shfl_idx(w, j);
        let row = b.mul(j, stride as i32);
        for (c, &a) in acc.iter().enumerate() {
            let col = b.add(lane, (32 * c) as i32);
            let inside = b.setp(Cmp::Lt, col, width as i32);
            let at = b.add(row, col);
            let x = load_if(b, inside, tile, at, 0);
            b.push(Inst::Fma {
                dst: a,
                a: wj.into(),
                b: x.into(),
                c: a.into(),
            });
        }
    });
}

/// Writes `finish(acc[c])` to row `row` (of `width` columns) of `out` where `live`
/// holds, each lane its columns.
pub(super) fn store_row(
    b: &mut KernelBuilder,
    out: Space,
    (live, row): (Reg, Reg),
    acc: &[Reg],
    width: usize,
    lane: Reg,
    finish: impl Fn(&mut KernelBuilder, Reg) -> Reg,
) {
    let out_base = b.mul(row, width as i32);
    for (c, &a) in acc.iter().enumerate() {
        let col = b.add(lane, (32 * c) as i32);
        let inside = b.setp(Cmp::Lt, col, width as i32);
        let store = b.bin(BinOp::And, live, inside);
        b.if_then(store, |b| {
            let y = finish(b, a);
            let at = b.add(out_base, col);
            b.st(out, at, y);
        });
    }
}

/// `src[base + offset]` where `cond` holds, else 0.
pub(super) fn load_if(
    b: &mut KernelBuilder,
    cond: Reg,
    src: Space,
    base: Reg,
    offset: impl Into<Operand>,
) -> Reg {
    let offset = offset.into();
    b.ld_if(cond, src, |b| b.add(base, offset).into())
}

/// Copies keys (or values) `k0 .. k0 + TILE` of batch entry `kv_base / s` into the
/// shared tile with row stride `stride`, zeros past the last key.
#[allow(clippy::too_many_arguments)]
pub(super) fn stage_tile(
    b: &mut KernelBuilder,
    (src, dst): (Space, Space),
    (kv_base, k0): (Reg, Reg),
    s: usize,
    width: usize,
    stride: usize,
    tid: Reg,
    threads: u32,
) {
    b.for_range(tid, (TILE * width) as i32, threads as i32, |b, idx| {
        let j = b.div(idx, width as i32);
        let col = b.rem(idx, width as i32);
        let key = b.add(k0, j);
        let inside = b.setp(Cmp::Lt, key, s as i32);
        let row = b.add(kv_base, key);
        let base = b.mul(row, width as i32);
        let x = load_if(b, inside, src, base, col);
        let at = b.mul(j, stride as i32);
        let at = b.add(at, col);
        b.st(dst, at, x);
    });
}

/// `op` over the warp's lanes, in every lane.
pub(super) fn warp_all(b: &mut KernelBuilder, op: BinOp, x: Reg) -> Reg {
    let acc = b.mov(x);
    b.warp_combine(op, acc);
    acc
}
