//! Batched matrix products, tiled through shared memory. 16-bit float operands run on
//! tensor cores (`mma.sync` m16n8k16, f32 accumulators); f32 operands on CUDA cores.
//! Both tile the output in 64×64 blocks, walk K in steps of 16 with the tiles of A and
//! B staged in shared memory between two barriers, and zero-fill edges, so any M, N, K
//! work.

use super::{elem_of, wgmma_matmul, KernelCall, Role, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{Cmp, Elem, Inst, Operand, Reg, Space, Special};
use crate::gpu::target::Arch;
use crate::ir::{Graph, ValueId};
use crate::schedule::MatMulOperand;

const TILE: usize = 64;
const KSTEP: usize = 16;

/// The sizes of one product.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// The operand buffers hold Aᵀ (K × M) or Bᵀ (N × K): a transpose folded into
    /// the loads.
    pub a_transposed: bool,
    pub b_transposed: bool,
}

impl Dims {
    /// Output tiles of `tm × tn`, over all batches.
    pub fn tiles_of(&self, (tm, tn): (usize, usize)) -> usize {
        self.batch * self.m.div_ceil(tm) * self.n.div_ceil(tn)
    }

    fn tiles(&self) -> usize {
        self.tiles_of((TILE, TILE))
    }
}

pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    lhs: MatMulOperand,
    rhs: MatMulOperand,
    arch: Arch,
) -> Result<KernelCall, String> {
    let (a, bv) = (lhs.value, rhs.value);
    let sc = &shapes[v.index()];
    let r = sc.len();
    let sa = &shapes[a.index()];
    let k = if lhs.transposed { sa[r - 2] } else { sa[r - 1] };
    let dims = Dims {
        batch: sc[..r - 2].iter().product(),
        m: sc[r - 2],
        k,
        n: sc[r - 1],
        a_transposed: lhs.transposed,
        b_transposed: rhs.transposed,
    };
    let in_elem = elem_of(g.ty(a).dtype)?;
    let out_elem = elem_of(g.ty(v).dtype)?;
    let (kernel, work_blocks) = match in_elem {
        Elem::F32 => (simt(name, dims, out_elem), dims.tiles()),
        Elem::F16 | Elem::BF16 if arch == Arch::Sm90a && wgmma_matmul::fits(&dims) => (
            wgmma_matmul::kernel(name, dims, in_elem, out_elem),
            wgmma_matmul::tiles(&dims),
        ),
        Elem::F16 | Elem::BF16 => (tensor_core(name, dims, in_elem, out_elem), dims.tiles()),
        _ => {
            return Err(format!(
                "integer 'matmul' (%{}) has no GPU kernel yet",
                g.value(v).name
            ))
        }
    };
    Ok(KernelCall {
        kernel,
        args: vec![v, a, bv],
        work_blocks: work_blocks.clamp(1, i32::MAX as usize) as u32,
        role: Role::Compute,
        flops: 2.0 * (dims.batch * dims.m * dims.n * dims.k) as f64,
    })
}

/// The registers every tile loop needs: which tile, and where its batch starts.
pub(super) struct TileOrigin {
    pub batch: Reg,
    pub m0: Reg,
    pub n0: Reg,
    pub a_base: Reg,
    pub b_base: Reg,
    pub c_base: Reg,
}

/// Where output tile `tile` of `rows × cols` tiles starts.
pub(super) fn tile_origin(
    b: &mut KernelBuilder,
    d: Dims,
    tile: Reg,
    (rows, cols): (usize, usize),
) -> TileOrigin {
    let (tm, tn) = (d.m.div_ceil(rows) as i32, d.n.div_ceil(cols) as i32);
    let per_batch = b.mov(tm * tn);
    let batch = b.div(tile, per_batch);
    let within = b.rem(tile, per_batch);
    let ti = b.div(within, tn);
    let tj = b.rem(within, tn);
    TileOrigin {
        batch,
        m0: b.mul(ti, rows as i32),
        n0: b.mul(tj, cols as i32),
        a_base: b.mul(batch, (d.m * d.k) as i32),
        b_base: b.mul(batch, (d.k * d.n) as i32),
        c_base: b.mul(batch, (d.m * d.n) as i32),
    }
}

/// Loads element (`row`, `col`) of a `rows × cols` matrix at `base`, or 0 outside it;
/// `transposed`: the buffer holds the matrix transposed (`cols × rows`).
#[allow(clippy::too_many_arguments)]
fn load_or_zero(
    b: &mut KernelBuilder,
    src: Space,
    base: Reg,
    row: Reg,
    col: Reg,
    (rows, cols): (usize, usize),
    transposed: bool,
) -> Reg {
    let in_rows = b.setp(Cmp::Lt, row, rows as i32);
    let in_cols = b.setp(Cmp::Lt, col, cols as i32);
    let inside = b.bin(crate::gpu::kir::BinOp::And, in_rows, in_cols);
    b.ld_if(inside, src, |b| {
        let at = if transposed {
            let at = b.mul(col, rows as i32);
            b.add(at, row)
        } else {
            let at = b.mul(row, cols as i32);
            b.add(at, col)
        };
        b.add(at, base).into()
    })
}

/// Stages one k-step into shared memory: A's 64 × 16 tile at rows `m0..`, columns
/// `k0..` and B's 16 × 64 tile at rows `k0..`, columns `n0..`, zeros past the edges;
/// each thread of the block copies its share, and `a_at(m, k)` / `b_at(k, n)` say where
/// an element goes in the shared tiles.
fn stage_k_step(
    b: &mut KernelBuilder,
    (d, o, k0): (&Dims, &TileOrigin, Reg),
    (tid, threads): (Reg, u32),
    [(a, sa), (bm, sb)]: [(Space, Space); 2],
    a_at: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Reg,
    b_at: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Reg,
) {
    for i in 0..(TILE * KSTEP) / threads as usize {
        let e = b.add(tid, i as i32 * threads as i32);
        let (m, kk) = (b.div(e, KSTEP as i32), b.rem(e, KSTEP as i32));
        let (row, col) = (b.add(o.m0, m), b.add(k0, kk));
        let x = load_or_zero(b, a, o.a_base, row, col, (d.m, d.k), d.a_transposed);
        let at = a_at(b, m, kk);
        b.st(sa, at, x);
        let (kk, n) = (b.div(e, TILE as i32), b.rem(e, TILE as i32));
        let (row, col) = (b.add(k0, kk), b.add(o.n0, n));
        let y = load_or_zero(b, bm, o.b_base, row, col, (d.k, d.n), d.b_transposed);
        let at = b_at(b, kk, n);
        b.st(sb, at, y);
    }
}

/// Stores `value` to `dst[base + row * cols + col]` if inside `rows × cols`.
pub(super) fn store_inside(
    b: &mut KernelBuilder,
    dst: Space,
    base: Reg,
    (row, col): (Reg, Reg),
    (rows, cols): (usize, usize),
    value: Reg,
) {
    let in_rows = b.setp(Cmp::Lt, row, rows as i32);
    let in_cols = b.setp(Cmp::Lt, col, cols as i32);
    let inside = b.bin(crate::gpu::kir::BinOp::And, in_rows, in_cols);
    b.if_then(inside, |b| {
        let at = b.mul(row, cols as i32);
        let at = b.add(at, col);
        let at = b.add(at, base);
        b.st(dst, at, value);
    });
}

/// CUDA-core f32 product: 256 threads per 64×64 tile, 4×4 outputs each.
fn simt(name: &str, d: Dims, out_elem: Elem) -> crate::gpu::kir::Kernel {
    const THREADS: u32 = 256;
    let mut b = KernelBuilder::new(name, THREADS);
    let c = b.param("c", out_elem, d.batch * d.m * d.n);
    let a = b.param("a", Elem::F32, d.batch * d.m * d.k);
    let bm = b.param("b", Elem::F32, d.batch * d.k * d.n);
    // k-major tiles, so a thread's 4 rows (or columns) are one 16-byte shared load.
    let sa = b.shared("a", Elem::F32, KSTEP * TILE);
    let sb = b.shared("b", Elem::F32, KSTEP * TILE);
    let tid = b.special(Special::Tid);
    let ty = b.div(tid, 16);
    let tx = b.rem(tid, 16);
    let row4 = b.mul(ty, 4);
    let col4 = b.mul(tx, 4);
    b.grid_stride_by(d.tiles(), THREADS, |b, tile| {
        let o = tile_origin(b, d, tile, (TILE, TILE));
        let acc: Vec<Reg> = (0..16).map(|_| b.mov(0.0f32)).collect();
        b.for_range(0, d.k as i32, KSTEP as i32, |b, k0| {
            // k-major tiles: A at `k * 64 + m`, B at `k * 64 + n`.
            let k_major = |b: &mut KernelBuilder, k: Reg, mn: Reg| {
                let at = b.mul(k, TILE as i32);
                b.add(at, mn)
            };
            stage_k_step(
                b,
                (&d, &o, k0),
                (tid, THREADS),
                [(a, sa), (bm, sb)],
                &|b, m, k| k_major(b, k, m),
                &k_major,
            );
            b.bar();
            b.for_range(0, KSTEP as i32, 1, |b, kk| {
                let base = b.mul(kk, TILE as i32);
                let ai = b.add(base, row4);
                let bi = b.add(base, col4);
                let av = b.ld_vec(sa, ai, 4);
                let bv = b.ld_vec(sb, bi, 4);
                for i in 0..4 {
                    for j in 0..4 {
                        let r = acc[i * 4 + j];
                        b.push(Inst::Fma {
                            dst: r,
                            a: av[i].into(),
                            b: bv[j].into(),
                            c: r.into(),
                        });
                    }
                }
            });
            b.bar();
        });
        for i in 0..4 {
            for j in 0..4 {
                let row = b.add(o.m0, row4);
                let row = b.add(row, i as i32);
                let col = b.add(o.n0, col4);
                let col = b.add(col, j as i32);
                store_inside(b, c, o.c_base, (row, col), (d.m, d.n), acc[i * 4 + j]);
            }
        }
    });
    b.finish()
}

/// Tensor-core product: 4 warps per 64×64 tile, each warp a 32×32 quarter made of
/// 2×4 `mma.sync` m16n8k16 tiles. Shared tiles are row-major A (m × k) and n-major B
/// (n × k), with rows padded to 24 elements so the fragment loads of a warp hit 32
/// different banks.
fn tensor_core(name: &str, d: Dims, in_elem: Elem, out_elem: Elem) -> crate::gpu::kir::Kernel {
    const THREADS: u32 = 128;
    const ROW: usize = 24;
    let mut b = KernelBuilder::new(name, THREADS);
    let c = b.param("c", out_elem, d.batch * d.m * d.n);
    let a = b.param("a", in_elem, d.batch * d.m * d.k);
    let bm = b.param("b", in_elem, d.batch * d.k * d.n);
    let sa = b.shared("a", in_elem, TILE * ROW);
    let sb = b.shared("b", in_elem, TILE * ROW);
    let tid = b.special(Special::Tid);
    let warp = b.div(tid, 32);
    let lane = b.rem(tid, 32);
    let group = b.div(lane, 4);
    let quad = b.rem(lane, 4);
    let q2 = b.mul(quad, 2);
    let wr = b.div(warp, 2);
    let wm = b.mul(wr, 32);
    let wc = b.rem(warp, 2);
    let wn = b.mul(wc, 32);
    b.grid_stride_by(d.tiles(), THREADS, |b, tile| {
        let o = tile_origin(b, d, tile, (TILE, TILE));
        let acc: Vec<[Reg; 4]> = (0..8).map(|_| [0; 4].map(|_| b.mov(0.0f32))).collect();
        b.for_range(0, d.k as i32, KSTEP as i32, |b, k0| {
            // Row-major A (m × k) and n-major B (n × k), rows padded to `ROW`.
            let padded = |b: &mut KernelBuilder, mn: Reg, k: Reg| {
                let at = b.mul(mn, ROW as i32);
                b.add(at, k)
            };
            stage_k_step(
                b,
                (&d, &o, k0),
                (tid, THREADS),
                [(a, sa), (bm, sb)],
                &padded,
                &|b, k, n| padded(b, n, k),
            );
            b.bar();
            let pair = |b: &mut KernelBuilder, s: Space, row: Reg, col: Operand| {
                let at = b.mul(row, ROW as i32);
                let at = b.add(at, col);
                b.ld_pair(s, at)
            };
            let mut frag_a = Vec::new();
            for mi in 0..2 {
                let r0 = b.add(wm, mi * 16);
                let r0 = b.add(r0, group);
                let r8 = b.add(r0, 8);
                let c8 = b.add(q2, 8);
                frag_a.push([
                    pair(b, sa, r0, q2.into()),
                    pair(b, sa, r8, q2.into()),
                    pair(b, sa, r0, c8.into()),
                    pair(b, sa, r8, c8.into()),
                ]);
            }
            for ni in 0..4 {
                let col = b.add(wn, (ni * 8) as i32);
                let col = b.add(col, group);
                let k8 = b.add(q2, 8);
                let frag_b = [pair(b, sb, col, q2.into()), pair(b, sb, col, k8.into())];
                for (mi, fa) in frag_a.iter().enumerate() {
                    let acc = acc[mi * 4 + ni];
                    b.push(Inst::Mma {
                        d: acc,
                        a: *fa,
                        b: frag_b,
                        c: acc,
                        elem: in_elem,
                    });
                }
            }
            b.bar();
        });
        for mi in 0..2 {
            for ni in 0..4 {
                let r0 = b.add(o.m0, wm);
                let r0 = b.add(r0, (mi * 16) as i32);
                let r0 = b.add(r0, group);
                let c0 = b.add(o.n0, wn);
                let c0 = b.add(c0, (ni * 8) as i32);
                let c0 = b.add(c0, q2);
                for (r, (dr, dc)) in [(0, 0), (0, 1), (8, 0), (8, 1)].into_iter().enumerate() {
                    let row = b.add(r0, dr);
                    let col = b.add(c0, dc);
                    store_inside(b, c, o.c_base, (row, col), (d.m, d.n), acc[mi * 4 + ni][r]);
                }
            }
        }
    });
    b.finish()
}
