//! The `sm_90a` tensor-core product: one warpgroup (128 threads) per 64 × `wn` output
//! tile, accumulating in registers with `wgmma.mma_async` m64n`wn`k16 while TMA
//! streams K in steps of `KT` through `STAGES` shared-memory buffers.
//!
//! Pipeline: thread 0 is the producer. Stage `s` has one mbarrier (`full[s]`, one
//! arrival: the producer's `arrive.expect_tx` of the stage's bytes); its TMA copies
//! complete the bytes. Every k-step, all threads wait for the stage's phase, issue the
//! stage's wgmmas, wait for them (`wait_group 0`) and meet at a barrier, after which the
//! producer refills that stage with the k-step `STAGES` ahead, so `STAGES - 1` copies
//! are in flight while the tensor cores work. Phases continue across the output tiles
//! of the grid-stride loop: the block's running k-step count `it` gives the stage
//! (`it % STAGES`) and the phase parity (`(it / STAGES) % 2`).
//!
//! Shared layout (no swizzle, see `wgmma.rs`): every TMA box is 8 elements (16 bytes)
//! wide, so each box row is one core-matrix row and a box of `r` rows is `r / 8` core
//! matrices stacked 128 bytes apart:
//! - a K-major operand (A, or Bᵀ as stored) takes boxes of 8 k × all its rows, one per
//!   8 k: SBO = 128, LBO = rows · 16;
//! - an MN-major operand (Aᵀ, or B as stored) takes boxes of 8 m (or n) × `KT` k, one
//!   per 8 rows: LBO = 128, SBO = `KT` · 16.
//!
//! Tensor maps are 3-D (inner, outer, batch), so edges and batch ends zero-fill. TMA
//! needs 16-byte global strides, hence [`fits`]: each operand's innermost extent is a
//! multiple of 8 elements.

use super::matmul::{store_inside, tile_origin, Dims};
use crate::gpu::build::{i32_of, KernelBuilder};
use crate::gpu::kir::{BinOp, Cmp, DescLayout, Elem, Inst, Kernel, Operand, Reg, Space, Special};
use crate::gpu::wgmma::{self, WARPGROUP};

/// K per stage.
const KT: usize = 32;
/// Shared-memory buffers (3 × 12 KiB at most: static shared memory stays below 48 KiB).
const STAGES: usize = 3;
/// Widest N tile.
const MAX_WN: usize = 128;

/// True if TMA can read both operands: their innermost extents are multiples of 8
/// (16-byte rows), and no extent is 0 (a tensor map's dimensions are positive).
pub(super) fn fits(d: &Dims) -> bool {
    let a_inner = if d.a_transposed { d.m } else { d.k };
    let b_inner = if d.b_transposed { d.k } else { d.n };
    let nonempty = [d.batch, d.m, d.n, d.k].iter().all(|&x| x > 0);
    nonempty && a_inner % 8 == 0 && b_inner % 8 == 0
}

/// The N of each tile: the product's N rounded up to 8, at most `MAX_WN`.
fn tile_n(d: &Dims) -> usize {
    d.n.next_multiple_of(8).min(MAX_WN)
}

/// Output tiles (one warpgroup each).
pub(super) fn tiles(d: &Dims) -> usize {
    d.tiles_of((wgmma::M, tile_n(d)))
}

/// One operand as TMA fetches and wgmma reads it.
struct Operand3 {
    /// The tensor map.
    map: usize,
    /// Its shared buffers (`STAGES` stages of `rows × KT`).
    shared: Space,
    /// Rows per tile (64 for A, `wn` for B).
    rows: usize,
    /// Stored with M (or N) fastest.
    mn_major: bool,
}

impl Operand3 {
    /// Declares the tensor map over `buffer` ([batch, outer, inner] as stored) and the
    /// shared stages.
    #[allow(clippy::too_many_arguments)]
    fn declare(
        b: &mut KernelBuilder,
        name: &str,
        buffer: Space,
        elem: Elem,
        (batch, rows_total, k): (usize, usize, usize),
        rows: usize,
        mn_major: bool,
    ) -> Operand3 {
        let (inner, outer) = if mn_major {
            (rows_total, k)
        } else {
            (k, rows_total)
        };
        let eb = elem.bytes() as u64;
        let box_dims = if mn_major {
            vec![8, KT as u32, 1]
        } else {
            vec![8, rows as u32, 1]
        };
        let map = b.tensor_map(
            name,
            buffer,
            vec![inner as u64, outer as u64, batch as u64],
            vec![inner as u64 * eb, (inner * outer) as u64 * eb],
            box_dims,
        );
        let shared = b.shared_aligned(name, elem, STAGES * rows * KT, 128);
        Operand3 {
            map,
            shared,
            rows,
            mn_major,
        }
    }

    fn stage_elems(&self) -> usize {
        self.rows * KT
    }

    /// Core-matrix offsets of this operand's tiles.
    fn layout(&self) -> DescLayout {
        let core = wgmma::CORE_ROW_BYTES * wgmma::CORE_ROWS;
        if self.mn_major {
            DescLayout {
                lbo: core,
                sbo: KT as u32 * wgmma::CORE_ROW_BYTES,
            }
        } else {
            DescLayout {
                lbo: self.rows as u32 * wgmma::CORE_ROW_BYTES,
                sbo: core,
            }
        }
    }

    /// Issues the copies of k-step `k0..k0 + KT` for rows `r0..` of batch `batch`
    /// into stage `stage`, completing on `full[stage]`.
    fn load(
        &self,
        b: &mut KernelBuilder,
        (k0, r0, batch): (Reg, Reg, Reg),
        stage: Reg,
        full: Space,
    ) {
        let base = b.mul(stage, i32_of(self.stage_elems()));
        // K-major: a box per 8 k; MN-major: a box per 8 rows.
        let boxes = if self.mn_major { self.rows / 8 } else { KT / 8 };
        let box_elems = self.stage_elems() / boxes;
        for j in 0..boxes {
            let index = b.add(base, i32_of(j * box_elems));
            let (inner, outer) = if self.mn_major { (r0, k0) } else { (k0, r0) };
            let inner = b.add(inner, i32_of(8 * j));
            b.push(Inst::TmaLoad {
                map: self.map,
                dst: self.shared,
                index: index.into(),
                coords: vec![inner.into(), outer.into(), batch.into()],
                bar: full,
                bar_index: stage.into(),
            });
        }
    }

    /// The descriptor of k16 step `step` of stage `stage`.
    fn desc(&self, b: &mut KernelBuilder, stage: Reg, step: usize) -> Reg {
        // Two core matrices along K per step: 16 rows of 8 (MN-major) or two 8-k
        // slabs of `rows` rows (K-major).
        let step_elems = if self.mn_major {
            16 * 8
        } else {
            2 * self.rows * 8
        };
        let base = b.mul(stage, i32_of(self.stage_elems()));
        let at = b.add(base, i32_of(step * step_elems));
        b.shared_desc(self.shared, at, self.layout())
    }
}

/// The kernel for `d` (which [`fits`]).
pub(super) fn kernel(name: &str, d: Dims, in_elem: Elem, out_elem: Elem) -> Kernel {
    let wn = tile_n(&d);
    let mut b = KernelBuilder::new(name, WARPGROUP as u32);
    let c = b.param("c", out_elem, d.batch * d.m * d.n);
    let a = b.param("a", in_elem, d.batch * d.m * d.k);
    let bm = b.param("b", in_elem, d.batch * d.k * d.n);
    let oa = Operand3::declare(
        &mut b,
        "a",
        a,
        in_elem,
        (d.batch, d.m, d.k),
        wgmma::M,
        d.a_transposed,
    );
    // B as stored is K × N (N fastest: MN-major) or, transposed, N × K (K-major).
    let ob = Operand3::declare(
        &mut b,
        "b",
        bm,
        in_elem,
        (d.batch, d.n, d.k),
        wn,
        !d.b_transposed,
    );
    let full = b.shared_aligned("full", Elem::I64, STAGES, 8);
    let stage_bytes = ((oa.stage_elems() + ob.stage_elems()) * in_elem.bytes()) as u32;
    let steps = d.k.div_ceil(KT);

    let tid = b.special(Special::Tid);
    let producer = b.setp(Cmp::Eq, tid, 0);
    b.if_then(producer, |b| {
        for s in 0..STAGES {
            b.push(Inst::MbarInit {
                bar: full,
                index: Operand::I32(s as i32),
                count: 1,
            });
        }
        b.push(Inst::FenceMbarInit);
    });
    b.bar();
    // The accumulator element of register r is (row0 + dr, col0 + dc) for the offsets
    // `wgmma::accumulator_position` gives (thread 0's are those offsets).
    let warp = b.div(tid, 32);
    let lane = b.rem(tid, 32);
    let row_in = b.mul(warp, 16);
    let group = b.div(lane, 4);
    let row_in = b.add(row_in, group);
    let quad = b.rem(lane, 4);
    let col_in = b.mul(quad, 2);
    let it = b.mov(0);
    b.grid_stride_by(tiles(&d), WARPGROUP as u32, |b, tile| {
        let o = tile_origin(b, d, tile, (wgmma::M, wn));
        let acc: Vec<Reg> = (0..wn / 2).map(|_| b.mov(0.0f32)).collect();
        let issue = |b: &mut KernelBuilder, step: Operand, stage: Reg| {
            b.push(Inst::MbarArriveExpectTx {
                bar: full,
                index: stage.into(),
                bytes: stage_bytes,
            });
            let k0 = b.mul(step, i32_of(KT));
            oa.load(b, (k0, o.m0, o.batch), stage, full);
            ob.load(b, (k0, o.n0, o.batch), stage, full);
        };
        b.if_then(producer, |b| {
            for j in 0..STAGES.min(steps) {
                let stage = b.add(it, j as i32);
                let stage = b.rem(stage, STAGES as i32);
                let step = b.mov(j as i32);
                issue(b, step.into(), stage);
            }
        });
        b.for_range(0, i32_of(steps), 1, |b, step| {
            let used = b.add(it, step);
            let stage = b.rem(used, STAGES as i32);
            let round = b.div(used, STAGES as i32);
            let parity = b.bin(BinOp::And, round, 1);
            b.mbar_wait(full, stage, parity);
            b.push(Inst::WgmmaFence);
            for k16 in 0..KT / wgmma::K {
                let da = oa.desc(b, stage, k16);
                let db = ob.desc(b, stage, k16);
                b.push(Inst::Wgmma {
                    d: acc.clone(),
                    a: da,
                    b: db,
                    elem: in_elem,
                    a_mn_major: oa.mn_major,
                    b_mn_major: ob.mn_major,
                });
            }
            b.push(Inst::WgmmaCommit);
            b.push(Inst::WgmmaWait { pending: 0 });
            // Every warp is done reading the stage before the producer refills it.
            b.bar();
            let next = b.add(step, STAGES as i32);
            let more = b.setp(Cmp::Lt, next, i32_of(steps));
            let refill = b.bin(BinOp::And, producer, more);
            b.if_then(refill, |b| issue(b, next.into(), stage));
        });
        b.update(BinOp::Add, it, i32_of(steps));
        let row0 = b.add(o.m0, row_in);
        let col0 = b.add(o.n0, col_in);
        for (r, &x) in acc.iter().enumerate() {
            let (dr, dc) = wgmma::accumulator_position(0, r);
            let row = b.add(row0, dr as i32);
            let col = b.add(col0, dc as i32);
            store_inside(b, c, o.c_base, (row, col), (d.m, d.n), x);
        }
    });
    b.finish()
}
