//! Fused attention, flash-attention style: `softmax(q·kᵀ·scale [causal]) · v` without
//! ever writing the T×S score matrix. A block of 4 warps takes 4 query rows of one
//! batch entry (a warp per row); keys and values stream through shared memory in tiles
//! of 32, each lane scoring one key of the tile; a running maximum and sum (the online
//! softmax) rescale the partial output, which each lane keeps for its output columns
//! (`lane`, `lane + 32`, ...). With `causal`, tiles past the block's last row are
//! skipped.

use super::{elem_of, KernelCall, Role, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Elem, Inst, Kernel, Operand, Reg, Space, Special};
use crate::gpu::math;
use crate::ir::{Graph, TensorType, ValueId};

/// Query rows per block (one per warp).
const ROWS: usize = 4;
/// Keys per shared-memory tile (one per lane).
const TILE: usize = 32;
/// The largest head size kept in registers and shared memory.
pub const MAX_HEAD: usize = 128;

/// True if the fused kernel handles attention over these operand types: static head
/// sizes of at most [`MAX_HEAD`] and floats the GPU stores.
pub fn supported(types: &[&TensorType]) -> bool {
    types.len() == 3
        && types.iter().all(|t| {
            elem_of(t.dtype).is_ok_and(|e| matches!(e, Elem::F32 | Elem::F16 | Elem::BF16))
                && t.dims()
                    .last()
                    .and_then(|d| d.as_static())
                    .is_some_and(|n| (1..=MAX_HEAD as u64).contains(&n))
        })
}

/// The sizes of one attention.
struct Dims {
    batch: usize,
    t: usize,
    s: usize,
    e: usize,
    f: usize,
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
    let (q, k, v) = (operands[0], operands[1], operands[2]);
    let (sq, sk, sv) = (&shapes[q.index()], &shapes[k.index()], &shapes[v.index()]);
    let r = sq.len();
    let d = Dims {
        batch: sq[..r - 2].iter().product(),
        t: sq[r - 2],
        s: sk[r - 2],
        e: sq[r - 1],
        f: sv[r - 1],
    };
    let elems = [
        elem_of(g.ty(q).dtype)?,
        elem_of(g.ty(k).dtype)?,
        elem_of(g.ty(v).dtype)?,
        elem_of(g.ty(out).dtype)?,
    ];
    let kernel = kernel(name, &d, elems, causal, scale as f32);
    let pairs = (d.batch * d.t * d.s) as f64 * if causal { 0.5 } else { 1.0 };
    Ok(KernelCall {
        kernel,
        args: vec![out, q, k, v],
        work_blocks: (d.batch * d.t.div_ceil(ROWS)).clamp(1, i32::MAX as usize) as u32,
        role: Role::Compute,
        flops: 2.0 * pairs * (d.e + d.f) as f64,
    })
}

fn kernel(name: &str, d: &Dims, [eq, ek, ev, eo]: [Elem; 4], causal: bool, scale: f32) -> Kernel {
    let threads = (ROWS * 32) as u32;
    let mut b = KernelBuilder::new(name, threads);
    let out = b.param("out", eo, d.batch * d.t * d.f);
    let q = b.param("q", eq, d.batch * d.t * d.e);
    let k = b.param("k", ek, d.batch * d.s * d.e);
    let v = b.param("v", ev, d.batch * d.s * d.f);
    let qs = b.shared("q", Elem::F32, ROWS * d.e);
    // Rows padded by one so the lanes' reads of one column hit different banks.
    let ks = b.shared("k", Elem::F32, TILE * (d.e + 1));
    let vs = b.shared("v", Elem::F32, TILE * d.f);
    let tid = b.special(Special::Tid);
    let warp = b.div(tid, 32);
    let lane = b.rem(tid, 32);
    let qblocks = d.t.div_ceil(ROWS);
    let columns = d.f.div_ceil(32);
    b.grid_stride_by(d.batch * qblocks, threads, |b, item| {
        let bi = b.div(item, qblocks as i32);
        let qb = b.rem(item, qblocks as i32);
        let q0 = b.mul(qb, ROWS as i32);
        let row = b.add(q0, warp);
        let live = b.setp(Cmp::Lt, row, d.t as i32);
        // The previous item's last tile is fully read before its query rows are
        // replaced.
        b.bar();
        // This warp's query row into shared memory (zeros past the end).
        let q_row = b.mul(bi, d.t as i32);
        let q_row = b.add(q_row, row);
        let q_base = b.mul(q_row, d.e as i32);
        let qs_base = b.mul(warp, d.e as i32);
        b.for_range(lane, d.e as i32, 32, |b, e| {
            let x = load_if(b, live, q, q_base, e);
            let at = b.add(qs_base, e);
            b.st(qs, at, x);
        });
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
            stage_tile(b, (v, vs), (kv_base, k0), d.s, d.f, d.f, tid, threads);
            b.bar();
            // Lane j scores key k0 + j.
            let key = b.add(k0, lane);
            let score = b.mov(0.0f32);
            let k_row = b.mul(lane, (d.e + 1) as i32);
            b.for_range(0, d.e as i32, 1, |b, e| {
                let qi = b.add(qs_base, e);
                let x = b.ld(qs, qi);
                let ki = b.add(k_row, e);
                let y = b.ld(ks, ki);
                b.push(Inst::Fma {
                    dst: score,
                    a: x.into(),
                    b: y.into(),
                    c: score.into(),
                });
            });
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
            b.for_range(0, TILE as i32, 1, |b, j| {
                let pj = b.shfl_idx(p, j);
                let v_row = b.mul(j, d.f as i32);
                for (c, &a) in acc.iter().enumerate() {
                    let col = b.add(lane, (32 * c) as i32);
                    let inside = b.setp(Cmp::Lt, col, d.f as i32);
                    let at = b.add(v_row, col);
                    let x = load_if(b, inside, vs, at, 0);
                    b.push(Inst::Fma {
                        dst: a,
                        a: pj.into(),
                        b: x.into(),
                        c: a.into(),
                    });
                }
            });
        });
        let out_base = b.mul(q_row, d.f as i32);
        for (c, &a) in acc.iter().enumerate() {
            let col = b.add(lane, (32 * c) as i32);
            let inside = b.setp(Cmp::Lt, col, d.f as i32);
            let store = b.bin(BinOp::And, live, inside);
            b.if_then(store, |b| {
                let y = b.div(a, l);
                let at = b.add(out_base, col);
                b.st(out, at, y);
            });
        }
    });
    b.finish()
}

/// `src[base + offset]` where `cond` holds, else 0.
fn load_if(
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
fn stage_tile(
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
fn warp_all(b: &mut KernelBuilder, op: BinOp, x: Reg) -> Reg {
    let acc = b.mov(x);
    b.warp_combine(op, acc);
    acc
}
