//! The evaluator's model of Hopper's asynchronous path: mbarriers, TMA copies and
//! wgmma.
//!
//! - **Addresses.** Shared arrays sit at byte addresses in declaration order, each at
//!   its alignment, from `FIRST_ADDRESS` on (ptxas may place them elsewhere; kernels
//!   only see addresses through descriptors and copies, which read this table).
//! - **TMA.** A copy reads its box when issued (zeros out of bounds) but *lands* only
//!   when some thread waits on its mbarrier — the latest the hardware may deliver it.
//!   Until then its destination is pending, and reading it (a load, a wgmma operand) is
//!   an error: the missing wait the hardware would turn into stale data.
//! - **mbarriers.** A phase completes when every expected arrival has happened and
//!   the transaction bytes announced by `expect_tx` have landed; `try_wait.parity`
//!   succeeds once the phase of that parity completed. A wait that cannot succeed
//!   after every copy landed is a deadlock.
//! - **wgmma.** Computed when issued, from the shared operands its descriptors decode
//!   to (`wgmma.rs`), by whole warpgroups with uniform descriptors. Until a
//!   `wgmma.wait_group` retires its group, its operands are in use: a copy or store
//!   over them, or any other instruction touching its accumulators, is an error. Operands written by ordinary stores must be fenced by
//!   their writers (`fence.proxy.async`) and separated from the wgmma by a barrier.

use super::{active, bits_f, f, Block, Data, NEVER};
use crate::gpu::kir::{Elem, Inst, Kernel, Reg, Space};
use crate::gpu::wgmma;
use half::{bf16, f16};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// The byte address of the first shared array (not 0, so an element index mistaken
/// for an address is caught).
const FIRST_ADDRESS: u32 = 1024;

/// Shared elements some unfinished operation uses.
#[derive(Clone, Debug)]
struct Span {
    array: usize,
    range: Range<usize>,
}

/// What a group of wgmmas uses until it is retired.
#[derive(Clone, Debug, Default)]
struct Group {
    /// Shared operands read.
    spans: Vec<Span>,
    /// Accumulator registers.
    accumulators: Vec<Reg>,
}

/// One mbarrier's state.
#[derive(Clone, Copy, Debug)]
struct Mbar {
    /// `fence.mbarrier_init` ran after the init: the async proxy (TMA) sees it.
    init_fenced: bool,
    count: u32,
    arrivals_left: u32,
    /// Transaction bytes announced and not yet landed.
    tx: i64,
    /// Phases completed.
    phase: u32,
}

/// A TMA copy in flight.
#[derive(Clone, Debug)]
struct Copy {
    bar: (usize, usize),
    array: usize,
    start: usize,
    bits: Vec<u64>,
}

/// A block's asynchronous state.
pub(super) struct State {
    base: Vec<u32>,
    mbars: HashMap<(usize, usize), Mbar>,
    copies: Vec<Copy>,
    pending: Vec<Vec<bool>>,
    /// The wgmmas issued since the last commit.
    open: Group,
    /// Committed, unretired groups, oldest first.
    committed: VecDeque<Group>,
    /// Per thread: the clock of its last `fence.proxy.async`.
    fenced: Vec<u64>,
    /// Per register: the clock of its last write by an ordinary instruction.
    written_at: Vec<u64>,
    /// The clock of the last `wgmma.fence`.
    wgmma_fenced_at: u64,
}

impl State {
    pub(super) fn new(k: &Kernel) -> State {
        let mut base = Vec::with_capacity(k.shared.len());
        let mut next = FIRST_ADDRESS as usize;
        for a in &k.shared {
            next = next.next_multiple_of(a.align.max(1));
            base.push(next as u32);
            next += a.len * a.elem.bytes();
        }
        State {
            base,
            mbars: HashMap::new(),
            copies: Vec::new(),
            pending: k.shared.iter().map(|a| vec![false; a.len]).collect(),
            open: Group::default(),
            committed: VecDeque::new(),
            fenced: vec![0; k.block as usize],
            written_at: vec![0; k.regs.len()],
            wgmma_fenced_at: 0,
        }
    }

    /// Notes the registers an ordinary instruction writes at `clock`: a wgmma may
    /// use them as accumulators only after a `wgmma.fence`.
    pub(super) fn note_writes(&mut self, i: &Inst, clock: u64) {
        for r in written(i) {
            self.written_at[r.0 as usize] = clock;
        }
    }

    /// Fails if an accumulator of a wgmma was written by an ordinary instruction since
    /// the last `wgmma.fence` (the ISA requires the fence between the two).
    fn check_fenced_accumulators(&self, d: &[Reg]) -> Result<(), String> {
        match d
            .iter()
            .find(|r| self.written_at[r.0 as usize] > self.wgmma_fenced_at)
        {
            Some(r) => Err(format!(
                "wgmma accumulator register {} was written by an ordinary instruction with no wgmma.fence after it",
                r.0
            )),
            None => Ok(()),
        }
    }

    /// Fails if a TMA copy has yet to write element `e` of array `a`.
    pub(super) fn check_landed(
        &self,
        k: &Kernel,
        a: usize,
        e: usize,
        what: &str,
    ) -> Result<(), String> {
        if self.pending[a][e] {
            return Err(format!(
                "{what} reads {}[{e}] before the TMA copy writing it has landed (no mbarrier wait for its phase)",
                k.shared[a].name
            ));
        }
        Ok(())
    }

    /// Fails if an unfinished wgmma reads any of `range` of array `a`.
    pub(super) fn check_not_in_use(
        &self,
        k: &Kernel,
        a: usize,
        range: Range<usize>,
        what: &str,
    ) -> Result<(), String> {
        let busy = self
            .groups()
            .flat_map(|g| &g.spans)
            .any(|s| s.array == a && s.range.start < range.end && range.start < s.range.end);
        if busy {
            return Err(format!(
                "{what} overwrites {}[{}..{}] while an unfinished wgmma reads it (no wgmma.wait_group)",
                k.shared[a].name, range.start, range.end
            ));
        }
        Ok(())
    }

    fn groups(&self) -> impl Iterator<Item = &Group> {
        std::iter::once(&self.open).chain(&self.committed)
    }

    /// Fails if `i` touches an accumulator of an unfinished wgmma (only wgmma
    /// instructions may, until `wgmma.wait_group` retires it).
    pub(super) fn check_accumulators(&self, i: &Inst) -> Result<(), String> {
        if matches!(
            i,
            Inst::Wgmma { .. } | Inst::WgmmaFence | Inst::WgmmaCommit | Inst::WgmmaWait { .. }
        ) {
            return Ok(());
        }
        let busy: Vec<Reg> = self
            .groups()
            .flat_map(|g| g.accumulators.iter().copied())
            .collect();
        if busy.is_empty() {
            return Ok(());
        }
        if let Some(r) = i.registers().into_iter().find(|r| busy.contains(r)) {
            return Err(format!(
                "register {} is an accumulator of an unfinished wgmma (no wgmma.wait_group before {i:?})",
                r.0
            ));
        }
        Ok(())
    }

    /// The array and element of shared byte address `addr` (16-bit elements).
    fn locate(&self, k: &Kernel, addr: u32) -> Result<(usize, usize), String> {
        for (a, (arr, &base)) in k.shared.iter().zip(&self.base).enumerate() {
            let end = base as usize + arr.len * arr.elem.bytes();
            if (base..end as u32).contains(&addr) {
                let off = (addr - base) as usize;
                if !off.is_multiple_of(arr.elem.bytes()) {
                    return Err(format!(
                        "shared address {addr:#x} splits an element of {}",
                        arr.name
                    ));
                }
                return Ok((a, off / arr.elem.bytes()));
            }
        }
        Err(format!("shared address {addr:#x} is in no shared array"))
    }

    fn mbar(&mut self, k: &Kernel, key: (usize, usize)) -> Result<&mut Mbar, String> {
        self.mbars.get_mut(&key).ok_or_else(|| {
            format!(
                "mbarrier {}[{}] is used before mbarrier.init",
                k.shared[key.0].name, key.1
            )
        })
    }
}

impl Mbar {
    fn complete_if_done(&mut self) {
        if self.arrivals_left == 0 && self.tx == 0 {
            self.phase += 1;
            self.arrivals_left = self.count;
        }
    }
}

impl Block<'_> {
    /// Runs `i` if it belongs to the asynchronous path; `Ok(false)` otherwise.
    pub(super) fn hopper_inst(&mut self, i: &Inst, mask: &[bool]) -> Result<bool, String> {
        match i {
            Inst::Wgmma {
                d,
                a,
                b,
                elem,
                a_mn_major,
                b_mn_major,
            } => {
                self.whole_warpgroups(mask)?;
                self.hopper.check_fenced_accumulators(d)?;
                for wg in (0..mask.len()).step_by(wgmma::WARPGROUP) {
                    if mask[wg] {
                        let operands = [(*a, *a_mn_major), (*b, *b_mn_major)];
                        self.wgmma(wg, d, operands, *elem)?;
                    }
                }
                self.hopper.open.accumulators.extend(d);
            }
            Inst::WgmmaFence => {
                self.whole_warpgroups(mask)?;
                self.hopper.wgmma_fenced_at = self.clock;
            }
            Inst::WgmmaCommit => {
                self.whole_warpgroups(mask)?;
                let group = std::mem::take(&mut self.hopper.open);
                self.hopper.committed.push_back(group);
            }
            Inst::WgmmaWait { pending } => {
                self.whole_warpgroups(mask)?;
                while self.hopper.committed.len() > *pending as usize {
                    self.hopper.committed.pop_front();
                }
            }
            Inst::FenceMbarInit => {
                for m in self.hopper.mbars.values_mut() {
                    m.init_fenced = true;
                }
            }
            Inst::FenceProxyAsync => {
                for t in active(mask) {
                    self.hopper.fenced[t] = self.clock;
                }
            }
            _ => {
                let per_thread = matches!(
                    i,
                    Inst::MbarInit { .. }
                        | Inst::MbarArriveExpectTx { .. }
                        | Inst::MbarWait { .. }
                        | Inst::TmaLoad { .. }
                        | Inst::SharedDesc { .. }
                );
                if !per_thread {
                    return Ok(false);
                }
                for t in active(mask) {
                    self.hopper_thread(i, t)?;
                }
            }
        }
        Ok(true)
    }

    fn whole_warpgroups(&self, mask: &[bool]) -> Result<(), String> {
        if !mask.len().is_multiple_of(wgmma::WARPGROUP) {
            return Err(format!("wgmma in a block of {} threads", mask.len()));
        }
        for g in mask.chunks(wgmma::WARPGROUP) {
            if g.contains(&true) && g.contains(&false) {
                return Err("wgmma reached by only part of a warpgroup".into());
            }
        }
        Ok(())
    }

    /// The (array, element) of mbarrier operand `index` of `bar` in thread `t`.
    fn mbar_key(
        &mut self,
        bar: Space,
        index: crate::gpu::kir::Operand,
        t: usize,
    ) -> Result<(usize, usize), String> {
        let Space::Shared(a) = bar else {
            unreachable!("mbarriers are shared (checked)")
        };
        Ok((a, self.address(bar, self.get(index, t), 1)?))
    }

    fn hopper_thread(&mut self, i: &Inst, t: usize) -> Result<(), String> {
        let k = self.k;
        match i {
            Inst::MbarInit { bar, index, count } => {
                let key = self.mbar_key(*bar, *index, t)?;
                let m = Mbar {
                    init_fenced: false,
                    count: *count,
                    arrivals_left: *count,
                    tx: 0,
                    phase: 0,
                };
                self.hopper.mbars.insert(key, m);
            }
            Inst::MbarArriveExpectTx { bar, index, bytes } => {
                let key = self.mbar_key(*bar, *index, t)?;
                let m = self.hopper.mbar(k, key)?;
                if m.arrivals_left == 0 {
                    return Err(format!("thread {t} arrives on a complete mbarrier phase"));
                }
                m.tx += i64::from(*bytes);
                m.arrivals_left -= 1;
                m.complete_if_done();
            }
            Inst::MbarWait { bar, index, parity } => {
                let key = self.mbar_key(*bar, *index, t)?;
                self.land_copies(key);
                let parity = self.get(*parity, t) as u32 & 1;
                let m = self.hopper.mbar(k, key)?;
                m.complete_if_done();
                if m.phase & 1 == parity {
                    return Err(format!(
                        "thread {t} waits for phase parity {parity} of mbarrier {}[{}], which never completes ({} arrivals and {} bytes missing: deadlock)",
                        k.shared[key.0].name, key.1, m.arrivals_left, m.tx
                    ));
                }
            }
            Inst::TmaLoad {
                map,
                dst,
                index,
                coords,
                bar,
                bar_index,
            } => {
                let Space::Shared(array) = *dst else {
                    unreachable!("TMA destinations are shared (checked)")
                };
                let key = self.mbar_key(*bar, *bar_index, t)?;
                if !self.hopper.mbar(k, key)?.init_fenced {
                    return Err(format!(
                        "a TMA copy completes on mbarrier {}[{}], whose mbarrier.init no fence.mbarrier_init made visible to the async proxy",
                        k.shared[key.0].name, key.1
                    ));
                }
                let m = &k.tensor_maps[*map];
                let start = self.address(*dst, self.get(*index, t), 1)?;
                let eb = k.shared[array].elem.bytes();
                let addr = self.hopper.base[array] as usize + start * eb;
                if !addr.is_multiple_of(128) {
                    return Err(format!(
                        "TMA destination {}[{start}] (address {addr:#x}) is not 128-byte aligned",
                        k.shared[array].name
                    ));
                }
                let n = m.box_elems();
                if start + n > k.shared[array].len {
                    return Err(format!(
                        "TMA box of {n} elements at {}[{start}] overruns the array",
                        k.shared[array].name
                    ));
                }
                let range = start..start + n;
                self.hopper
                    .check_not_in_use(k, array, range.clone(), "a TMA copy")?;
                let at: Vec<i64> = coords
                    .iter()
                    .map(|&c| i64::from(self.get(c, t) as u32 as i32))
                    .collect();
                let bits = box_bits(&self.global[m.buffer], m, &at);
                let key = self.mbar_key(*bar, *bar_index, t)?;
                self.hopper.mbar(k, key)?;
                for e in range {
                    self.hopper.pending[array][e] = true;
                }
                self.hopper.copies.push(Copy {
                    bar: key,
                    array,
                    start,
                    bits,
                });
            }
            Inst::SharedDesc {
                dst,
                space,
                index,
                layout,
            } => {
                let Space::Shared(array) = *space else {
                    unreachable!("descriptors are of shared arrays (checked)")
                };
                let e = self.address(*space, self.get(*index, t), 1)?;
                let addr = self.hopper.base[array] as usize + e * k.shared[array].elem.bytes();
                if !addr.is_multiple_of(16) {
                    return Err(format!(
                        "wgmma operand at {}[{e}] is not 16-byte aligned",
                        k.shared[array].name
                    ));
                }
                self.set(*dst, t, wgmma::encode(addr as u32, *layout));
            }
            _ => unreachable!("dispatched by hopper_inst"),
        }
        Ok(())
    }

    /// Delivers every copy completing on mbarrier `key`.
    fn land_copies(&mut self, key: (usize, usize)) {
        let (done, rest): (Vec<Copy>, Vec<Copy>) = std::mem::take(&mut self.hopper.copies)
            .into_iter()
            .partition(|c| c.bar == key);
        self.hopper.copies = rest;
        for c in done {
            let bytes = c.bits.len() * self.k.shared[c.array].elem.bytes();
            for (j, &v) in c.bits.iter().enumerate() {
                self.shared[c.array].set_raw(c.start + j, v);
                self.hopper.pending[c.array][c.start + j] = false;
            }
            if let Some(m) = self.hopper.mbars.get_mut(&key) {
                m.tx -= bytes as i64;
            }
        }
    }

    /// One warpgroup's `wgmma.mma_async` m64nNk16 from thread `wg` on.
    fn wgmma(
        &mut self,
        wg: usize,
        d: &[Reg],
        operands: [(Reg, bool); 2],
        elem: Elem,
    ) -> Result<(), String> {
        let n = d.len() * 2;
        let mut mats = Vec::with_capacity(2);
        for (which, (desc, mn_major)) in operands.into_iter().enumerate() {
            let bits = self.regs[desc.0 as usize][wg];
            if (wg..wg + wgmma::WARPGROUP).any(|t| self.regs[desc.0 as usize][t] != bits) {
                return Err("wgmma descriptors differ across the warpgroup".into());
            }
            let (start, layout) = wgmma::decode(bits)?;
            let rows = if which == 0 { wgmma::M } else { n };
            // mat[mn][k]: A's rows or B's columns.
            let mut mat = vec![[0f32; wgmma::K]; rows];
            for (mn, row) in mat.iter_mut().enumerate() {
                for (kk, x) in row.iter_mut().enumerate() {
                    let off = wgmma::element_offset(layout, mn_major, mn as u32, kk as u32);
                    *x = self.wgmma_operand(start + off, elem)?;
                }
            }
            mats.push(mat);
        }
        for t in wg..wg + wgmma::WARPGROUP {
            for (r, reg) in d.iter().enumerate() {
                let (row, col) = wgmma::accumulator_position(t - wg, r);
                let mut acc = f(self.regs[reg.0 as usize][t]);
                for (x, y) in mats[0][row].iter().zip(&mats[1][col]) {
                    acc += x * y;
                }
                self.regs[reg.0 as usize][t] = bits_f(acc);
            }
        }
        Ok(())
    }

    /// Records element `e` of array `a` as an operand of the open wgmma group (one span
    /// per array, from its lowest to its highest element read).
    fn note_operand(&mut self, a: usize, e: usize) {
        match self.hopper.open.spans.iter_mut().find(|s| s.array == a) {
            Some(s) => s.range = s.range.start.min(e)..s.range.end.max(e + 1),
            None => self.hopper.open.spans.push(Span {
                array: a,
                range: e..e + 1,
            }),
        }
    }

    /// The 16-bit float at shared byte address `addr`, read by the async proxy.
    fn wgmma_operand(&mut self, addr: u32, elem: Elem) -> Result<f32, String> {
        let k = self.k;
        let (a, e) = self.hopper.locate(k, addr)?;
        if k.shared[a].elem != elem {
            return Err(format!(
                "wgmma reads {:?} operands from {}, an array of {:?}",
                elem, k.shared[a].name, k.shared[a].elem
            ));
        }
        self.hopper.check_landed(k, a, e, "a wgmma")?;
        let touch = self.touches[a][e];
        if touch.write_epoch == self.epoch {
            return Err(format!(
                "a wgmma reads {}[{e}], written by thread {} with no barrier between",
                k.shared[a].name, touch.writer
            ));
        }
        if touch.write_epoch != NEVER
            && touch.write_clock > self.hopper.fenced[touch.writer as usize]
        {
            return Err(format!(
                "a wgmma reads {}[{e}], written by thread {} without fence.proxy.async after the write",
                k.shared[a].name, touch.writer
            ));
        }
        self.note_operand(a, e);
        let bits = self.shared[a].raw(e) as u16;
        Ok(if elem == Elem::BF16 {
            bf16::from_bits(bits).to_f32()
        } else {
            f16::from_bits(bits).to_f32()
        })
    }
}

/// The raw bits of the box of `m` at element coordinates `at` in `buffer`, innermost
/// dimension fastest; zeros outside the tensor.
/// The registers an ordinary instruction writes (the asynchronous ones are modelled
/// above).
fn written(i: &Inst) -> Vec<Reg> {
    match i {
        Inst::Mov { dst, .. }
        | Inst::Unary { dst, .. }
        | Inst::Special { dst, .. }
        | Inst::Binary { dst, .. }
        | Inst::Setp { dst, .. }
        | Inst::Fma { dst, .. }
        | Inst::Selp { dst, .. }
        | Inst::Cvt { dst, .. }
        | Inst::Round { dst, .. }
        | Inst::ShflXor { dst, .. }
        | Inst::ShflIdx { dst, .. }
        | Inst::Pack { dst, .. } => vec![*dst],
        Inst::Ld { dst, .. } => dst.clone(),
        Inst::Mma { d, .. } => d.to_vec(),
        _ => Vec::new(),
    }
}

fn box_bits(buffer: &Data, m: &crate::gpu::kir::TensorMap, at: &[i64]) -> Vec<u64> {
    let eb = buffer.elem().bytes() as u64;
    let n = m.box_elems();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let mut rest = flat;
        let mut offset = 0u64;
        let mut inside = true;
        for (dim, (&size, &b)) in m.dims.iter().zip(&m.box_dims).enumerate() {
            let c = at[dim] + (rest % b as usize) as i64;
            rest /= b as usize;
            if c < 0 || c as u64 >= size {
                inside = false;
                break;
            }
            offset += if dim == 0 {
                c as u64
            } else {
                c as u64 * m.strides[dim - 1] / eb
            };
        }
        let fits = inside && (offset as usize) < buffer.len();
        out.push(if fits { buffer.raw(offset as usize) } else { 0 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::run;
    use super::*;
    use crate::gpu::build::KernelBuilder;
    use crate::gpu::kir::{BinOp, Cmp, DescLayout, Special};

    /// Random bf16 values in [-2, 2) (xorshift).
    fn bf16_values(n: usize, mut seed: u64) -> Vec<u16> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let x = (seed >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0;
                bf16::from_f64(x).to_bits()
            })
            .collect()
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        None,
        SwappedOffsets,
        NoProxyFence,
        NoBarrier,
        NoWaitGroup,
        NoWgmmaFence,
    }

    /// 64×16 A (row-major in global) times 16×8 B (row-major) with one m64n8k16
    /// wgmma, the operands staged by ordinary stores in the ISA's no-swizzle layouts:
    /// A K-major (core matrices 128 B apart along M, 1024 B along K), B N-major (one
    /// core matrix of 8 k × 8 n per 8 k, 128 B apart). The fragment is stored by the
    /// ISA's figure for D: row 16·warp + lane/4 (+8 for registers 2, 3), column
    /// 2·(lane % 4) (+1 for odd registers).
    fn product_kernel(fault: Fault) -> Kernel {
        let mut b = KernelBuilder::new("wg", 128);
        let out = b.param("out", Elem::F32, 64 * 8);
        let a = b.param("a", Elem::BF16, 64 * 16);
        let bm = b.param("b", Elem::BF16, 16 * 8);
        let sa = b.shared_aligned("sa", Elem::BF16, 64 * 16, 128);
        let sb = b.shared_aligned("sb", Elem::BF16, 16 * 8, 128);
        let t = b.special(Special::Tid);
        for i in 0..8 {
            let e = b.add(t, i * 128);
            let (m, k) = (b.div(e, 16), b.rem(e, 16));
            let x = b.ld(a, e);
            // Element index of byte (m/8)·128 + (m%8)·16 + (k/8)·1024 + (k%8)·2.
            let (mc, mr) = (b.div(m, 8), b.rem(m, 8));
            let (kc, kr) = (b.div(k, 8), b.rem(k, 8));
            let at = b.mul(mc, 64);
            let r = b.mul(mr, 8);
            let at = b.add(at, r);
            let c = b.mul(kc, 512);
            let at = b.add(at, c);
            let at = b.add(at, kr);
            b.st(sa, at, x);
        }
        // N-major B with 8 columns: byte (k/8)·128 + (k%8)·16 + n·2 = row-major k × n.
        let x = b.ld(bm, t);
        b.st(sb, t, x);
        if fault != Fault::NoProxyFence {
            b.push(Inst::FenceProxyAsync);
        }
        if fault != Fault::NoBarrier {
            b.bar();
        }
        let a_layout = if fault == Fault::SwappedOffsets {
            DescLayout {
                lbo: 128,
                sbo: 1024,
            }
        } else {
            DescLayout {
                lbo: 1024,
                sbo: 128,
            }
        };
        let da = b.shared_desc(sa, 0, a_layout);
        let db = b.shared_desc(sb, 0, DescLayout { lbo: 128, sbo: 256 });
        let acc: Vec<_> = (0..4).map(|_| b.mov(0.0f32)).collect();
        if fault != Fault::NoWgmmaFence {
            b.push(Inst::WgmmaFence);
        }
        b.push(Inst::Wgmma {
            d: acc.clone(),
            a: da,
            b: db,
            elem: Elem::BF16,
            a_mn_major: false,
            b_mn_major: true,
        });
        b.push(Inst::WgmmaCommit);
        if fault != Fault::NoWaitGroup {
            b.push(Inst::WgmmaWait { pending: 0 });
        }
        let warp = b.div(t, 32);
        let lane = b.rem(t, 32);
        let row = b.mul(warp, 16);
        let g = b.div(lane, 4);
        let row = b.add(row, g);
        let q = b.rem(lane, 4);
        let col = b.mul(q, 2);
        for (r, &x) in acc.iter().enumerate() {
            let rr = b.add(row, 8 * ((r as i32 / 2) % 2));
            let cc = b.add(col, r as i32 % 2);
            let at = b.mul(rr, 8);
            let at = b.add(at, cc);
            b.st(out, at, x);
        }
        b.finish()
    }

    fn run_product(fault: Fault) -> Result<(Vec<f32>, Vec<f32>), String> {
        let (a, bm) = (bf16_values(64 * 16, 7), bf16_values(16 * 8, 11));
        let x = |v: &[u16], i: usize| bf16::from_bits(v[i]).to_f32();
        let want: Vec<f32> = (0..64 * 8)
            .map(|i| {
                (0..16)
                    .map(|k| x(&a, i / 8 * 16 + k) * x(&bm, k * 8 + i % 8))
                    .sum()
            })
            .collect();
        let mut mem = [
            Data::zeros(Elem::F32, 64 * 8),
            Data::BF16(a),
            Data::BF16(bm),
        ];
        run(&product_kernel(fault), 1, 1, &mut mem).map_err(|e| e.to_string())?;
        let Data::F32(got) = &mem[0] else {
            unreachable!()
        };
        Ok((got.clone(), want))
    }

    #[test]
    fn wgmma_reads_the_isa_layouts() {
        let (got, want) = run_product(Fault::None).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn a_wrong_descriptor_or_missing_ordering_is_caught() {
        // Swapped leading/stride offsets read other elements (or leave the array).
        match run_product(Fault::SwappedOffsets) {
            Ok((got, want)) => assert_ne!(got, want),
            Err(e) => assert!(e.contains("shared address"), "{e}"),
        }
        let err = run_product(Fault::NoProxyFence).unwrap_err();
        assert!(err.contains("without fence.proxy.async"), "{err}");
        let err = run_product(Fault::NoBarrier).unwrap_err();
        assert!(err.contains("no barrier"), "{err}");
        let err = run_product(Fault::NoWgmmaFence).unwrap_err();
        assert!(err.contains("no wgmma.fence"), "{err}");
        let err = run_product(Fault::NoWaitGroup).unwrap_err();
        assert!(err.contains("accumulator of an unfinished wgmma"), "{err}");
    }

    /// Thread 0 copies the 16 × 8 box at row 4, column 16 of a 12 × 24 bf16 matrix
    /// with TMA (rows 12.. are outside: zeros); every thread then copies its share of
    /// the box to `out`, after waiting on the mbarrier if `wait`.
    fn tma_kernel(wait: bool, expect_bytes: u32, fence_init: bool) -> Kernel {
        let mut b = KernelBuilder::new("tma", 32);
        let out = b.param("out", Elem::BF16, 16 * 8);
        let src = b.param("src", Elem::BF16, 12 * 24);
        let map = b.tensor_map("src", src, vec![24, 12], vec![48], vec![8, 16]);
        let s = b.shared_aligned("s", Elem::BF16, 16 * 8, 128);
        let bar = b.shared_aligned("bar", Elem::I64, 1, 8);
        let t = b.special(Special::Tid);
        let leader = b.setp(Cmp::Eq, t, 0);
        b.if_then(leader, |b| {
            b.push(Inst::MbarInit {
                bar,
                index: 0.into(),
                count: 1,
            });
            if fence_init {
                b.push(Inst::FenceMbarInit);
            }
        });
        b.bar();
        b.if_then(leader, |b| {
            b.push(Inst::MbarArriveExpectTx {
                bar,
                index: 0.into(),
                bytes: expect_bytes,
            });
            let (col, row) = (b.mov(16), b.mov(4));
            b.push(Inst::TmaLoad {
                map,
                dst: s,
                index: 0.into(),
                coords: vec![col.into(), row.into()],
                bar,
                bar_index: 0.into(),
            });
        });
        if wait {
            let parity = b.bin(BinOp::And, t, 0);
            b.mbar_wait(bar, 0, parity);
        }
        for i in 0..4 {
            let e = b.add(t, i * 32);
            let x = b.ld(s, e);
            b.st(out, e, x);
        }
        b.finish()
    }

    fn run_tma(
        wait: bool,
        expect_bytes: u32,
        fence_init: bool,
    ) -> Result<(Vec<u16>, Vec<u16>), String> {
        let src = bf16_values(12 * 24, 3);
        let want: Vec<u16> = (0..16 * 8)
            .map(|i| {
                let (r, c) = (4 + i / 8, 16 + i % 8);
                if r < 12 {
                    src[r * 24 + c]
                } else {
                    0
                }
            })
            .collect();
        let mut mem = [Data::zeros(Elem::BF16, 16 * 8), Data::BF16(src)];
        run(&tma_kernel(wait, expect_bytes, fence_init), 1, 1, &mut mem)
            .map_err(|e| e.to_string())?;
        let Data::BF16(got) = &mem[0] else {
            unreachable!()
        };
        Ok((got.clone(), want))
    }

    #[test]
    fn tma_copies_a_box_and_zero_fills_outside() {
        let (got, want) = run_tma(true, 256, true).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_mbarrier_wait_or_short_transaction_is_caught() {
        let err = run_tma(false, 256, true).unwrap_err();
        assert!(
            err.contains("before the TMA copy writing it has landed"),
            "{err}"
        );
        // Expecting more bytes than the copy brings: the phase never completes.
        let err = run_tma(true, 512, true).unwrap_err();
        assert!(err.contains("deadlock"), "{err}");
        // An init the async proxy cannot see yet.
        let err = run_tma(true, 256, false).unwrap_err();
        assert!(err.contains("fence.mbarrier_init"), "{err}");
    }
}
