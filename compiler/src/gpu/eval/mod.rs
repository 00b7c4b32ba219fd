//! The kernel-IR evaluator: runs a [`Kernel`] on the CPU over a modelled grid.
//!
//! Blocks run one after another; the threads of a block run in lockstep, statement by
//! statement, under an active mask, so warp shuffles and tensor-core products (which
//! read other lanes' registers) are exact. Lockstep would hide missing barriers, so the
//! evaluator *checks* what the hardware leaves undefined instead of relying on luck:
//! - a shared-memory element written by one thread and read or written by another in
//!   the same barrier interval is a race (an error naming the array and the threads);
//! - a barrier, shuffle or `mma` reached by part of a block (or warp) is an error;
//! - loads and stores out of bounds or misaligned for their vector width are errors,
//!   as is integer division by zero.
//!
//! Hopper's asynchronous path (mbarriers, TMA copies, wgmma) is modelled in
//! `hopper.rs`: shared arrays get byte addresses (`SharedLayout`), so descriptors and
//! copy destinations are real addresses, and what the hardware leaves undefined (a
//! read before the copy's mbarrier phase completed, a copy over operands of an
//! unfinished wgmma, generic writes read by wgmma without `fence.proxy.async`) is an
//! error.

mod hopper;

use super::kir::*;
use half::{bf16, f16};

/// The contents of one buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// binary32.
    F32(Vec<f32>),
    /// binary16 bit patterns.
    F16(Vec<u16>),
    /// bfloat16 bit patterns.
    BF16(Vec<u16>),
    /// i32.
    I32(Vec<i32>),
    /// i64.
    I64(Vec<i64>),
    /// Bytes (booleans).
    U8(Vec<u8>),
}

impl Data {
    /// `n` zeros of `elem`.
    pub fn zeros(elem: Elem, n: usize) -> Data {
        match elem {
            Elem::F32 => Data::F32(vec![0.0; n]),
            Elem::F16 => Data::F16(vec![0; n]),
            Elem::BF16 => Data::BF16(vec![0; n]),
            Elem::I32 => Data::I32(vec![0; n]),
            Elem::I64 => Data::I64(vec![0; n]),
            Elem::U8 => Data::U8(vec![0; n]),
        }
    }

    /// The element type.
    pub fn elem(&self) -> Elem {
        match self {
            Data::F32(_) => Elem::F32,
            Data::F16(_) => Elem::F16,
            Data::BF16(_) => Elem::BF16,
            Data::I32(_) => Elem::I32,
            Data::I64(_) => Elem::I64,
            Data::U8(_) => Elem::U8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F16(v) | Data::BF16(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::U8(v) => v.len(),
        }
    }

    /// True if it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f64 (floats widened, ints converted).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Data::F32(v) => f64::from(v[i]),
            Data::F16(v) => f16::from_bits(v[i]).to_f64(),
            Data::BF16(v) => bf16::from_bits(v[i]).to_f64(),
            Data::I32(v) => f64::from(v[i]),
            Data::I64(v) => v[i] as f64,
            Data::U8(v) => f64::from(v[i]),
        }
    }

    /// Element `i` as register bits of its scalar register type.
    fn read(&self, i: usize) -> u64 {
        match self {
            Data::F32(v) => u64::from(v[i].to_bits()),
            Data::F16(v) => u64::from(f16::from_bits(v[i]).to_f32().to_bits()),
            Data::BF16(v) => u64::from(bf16::from_bits(v[i]).to_f32().to_bits()),
            Data::I32(v) => u64::from(v[i] as u32),
            Data::I64(v) => v[i] as u64,
            Data::U8(v) => u64::from(v[i]),
        }
    }

    /// Two 16-bit elements at `i`, `i + 1` as one `b32` (`i` in the low half).
    fn read_pair(&self, i: usize) -> u64 {
        match self {
            Data::F16(v) | Data::BF16(v) => u64::from(v[i]) | (u64::from(v[i + 1]) << 16),
            _ => unreachable!("pairs are of 16-bit floats (checked)"),
        }
    }

    /// Element `i`'s stored bits (16-bit floats undecoded).
    fn raw(&self, i: usize) -> u64 {
        match self {
            Data::F16(v) | Data::BF16(v) => u64::from(v[i]),
            _ => self.read(i),
        }
    }

    /// Stores bits as [`Data::raw`] gives them.
    fn set_raw(&mut self, i: usize, bits: u64) {
        match self {
            Data::F16(v) | Data::BF16(v) => v[i] = bits as u16,
            Data::F32(v) => v[i] = f32::from_bits(bits as u32),
            _ => self.write(i, bits),
        }
    }

    fn write(&mut self, i: usize, bits: u64) {
        match self {
            Data::F32(v) => v[i] = f32::from_bits(bits as u32),
            Data::F16(v) => v[i] = f16::from_f32(f32::from_bits(bits as u32)).to_bits(),
            Data::BF16(v) => v[i] = bf16::from_f32(f32::from_bits(bits as u32)).to_bits(),
            Data::I32(v) => v[i] = bits as u32 as i32,
            Data::I64(v) => v[i] = bits as i64,
            Data::U8(v) => v[i] = bits as u8,
        }
    }

    fn atomic_add(&mut self, i: usize, bits: u64) {
        match self {
            Data::F32(v) => v[i] += f32::from_bits(bits as u32),
            Data::I32(v) => v[i] = v[i].wrapping_add(bits as u32 as i32),
            Data::I64(v) => v[i] = v[i].wrapping_add(bits as i64),
            _ => unreachable!("atomic add types are checked"),
        }
    }
}

/// Where a block ran and what it touched, for tests of the SM plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// Blocks run.
    pub blocks: u32,
    /// Barriers passed (per block, summed).
    pub barriers: u64,
}

/// Why the evaluator could not run a kernel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The number of buffers differs from the kernel's parameters.
    #[error("kernel {kernel} takes {expected} buffers, got {got}")]
    BufferCount {
        /// The kernel.
        kernel: String,
        /// Its parameters.
        expected: usize,
        /// Buffers given.
        got: usize,
    },
    /// A buffer's element type or length differs from its parameter's.
    #[error(
        "kernel {kernel}: buffer {buffer} should hold {len} {elem:?}, got {got_len} {got_elem:?}"
    )]
    BufferShape {
        /// The kernel.
        kernel: String,
        /// The parameter.
        buffer: String,
        /// Elements the parameter holds.
        len: usize,
        /// Their type.
        elem: Elem,
        /// Elements the buffer holds.
        got_len: usize,
        /// Their type.
        got_elem: Elem,
    },
    /// A block did something the hardware would not (a race, a divergent barrier,
    /// an access out of bounds, a division by zero).
    #[error("kernel {kernel}, block {block}: {message}")]
    Fault {
        /// The kernel.
        kernel: String,
        /// The block.
        block: u32,
        /// What went wrong, and where.
        message: String,
    },
}

/// Runs `k` with `grid` blocks over `buffers` (one per parameter, in order). Blocks are
/// placed on SMs round-robin over `sms` SMs (what `%smid` reads).
pub fn run(k: &Kernel, grid: u32, sms: u32, buffers: &mut [Data]) -> Result<Trace, EvalError> {
    if buffers.len() != k.params.len() {
        return Err(EvalError::BufferCount {
            kernel: k.name.clone(),
            expected: k.params.len(),
            got: buffers.len(),
        });
    }
    for (p, b) in k.params.iter().zip(buffers.iter()) {
        if p.elem != b.elem() || p.len != b.len() {
            return Err(EvalError::BufferShape {
                kernel: k.name.clone(),
                buffer: p.name.clone(),
                len: p.len,
                elem: p.elem,
                got_len: b.len(),
                got_elem: b.elem(),
            });
        }
    }
    let mut trace = Trace::default();
    for block in 0..grid {
        let mut b = Block::new(k, block, grid, block % sms.max(1), buffers);
        let all = vec![true; k.block as usize];
        b.exec(&k.body, &all).map_err(|message| EvalError::Fault {
            kernel: k.name.clone(),
            block,
            message,
        })?;
        trace.blocks += 1;
        trace.barriers += b.epoch;
    }
    Ok(trace)
}

/// Who last touched a shared element, for race detection.
#[derive(Clone, Copy)]
struct Touch {
    write_epoch: u64,
    writer: u32,
    read_epoch: u64,
    /// The single reader in `read_epoch`, or `MANY`.
    reader: u32,
    /// The instruction count at the last generic write (for `fence.proxy.async`).
    write_clock: u64,
}

const NEVER: u64 = u64::MAX;
/// Where `sin.approx`/`cos.approx` keep their stated accuracy: [-pi, pi], with room
/// for the rounding of the lowering's argument reduction.
const APPROX_TRIG_RANGE: f32 = std::f32::consts::PI * (1.0 + 1e-6);
const MANY: u32 = u32::MAX;

struct Block<'a> {
    k: &'a Kernel,
    ctaid: u32,
    nctaid: u32,
    smid: u32,
    /// Register file: `regs[reg][thread]` as bits.
    regs: Vec<Vec<u64>>,
    global: &'a mut [Data],
    shared: Vec<Data>,
    touches: Vec<Vec<Touch>>,
    epoch: u64,
    /// Instructions executed so far (orders writes and fences).
    clock: u64,
    /// The asynchronous state: addresses, mbarriers, copies in flight, wgmma groups.
    hopper: hopper::State,
}

impl<'a> Block<'a> {
    fn new(k: &'a Kernel, ctaid: u32, nctaid: u32, smid: u32, global: &'a mut [Data]) -> Self {
        let threads = k.block as usize;
        let untouched = Touch {
            write_epoch: NEVER,
            writer: 0,
            read_epoch: NEVER,
            reader: 0,
            write_clock: 0,
        };
        Block {
            k,
            ctaid,
            nctaid,
            smid,
            regs: vec![vec![0; threads]; k.regs.len()],
            global,
            shared: k
                .shared
                .iter()
                .map(|s| Data::zeros(s.elem, s.len))
                .collect(),
            touches: k.shared.iter().map(|s| vec![untouched; s.len]).collect(),
            epoch: 0,
            clock: 0,
            hopper: hopper::State::new(k),
        }
    }

    fn exec(&mut self, body: &[Stmt], mask: &[bool]) -> Result<(), String> {
        for s in body {
            match s {
                Stmt::Inst(i) => self.inst(i, mask)?,
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let c = &self.regs[cond.0 as usize];
                    let t: Vec<bool> = mask.iter().zip(c).map(|(&m, &v)| m && v != 0).collect();
                    let e: Vec<bool> = mask.iter().zip(c).map(|(&m, &v)| m && v == 0).collect();
                    if t.contains(&true) {
                        self.exec(then, &t)?;
                    }
                    if e.contains(&true) {
                        self.exec(otherwise, &e)?;
                    }
                }
                Stmt::Loop {
                    var,
                    from,
                    to,
                    step,
                    body,
                } => {
                    let v = var.0 as usize;
                    for t in active(mask) {
                        self.regs[v][t] = self.get(*from, t);
                    }
                    let mut live = mask.to_vec();
                    loop {
                        for t in active(&live.clone()) {
                            let (i, end) = (self.regs[v][t] as u32 as i32, self.get(*to, t));
                            live[t] = i < end as u32 as i32;
                        }
                        if !live.contains(&true) {
                            break;
                        }
                        self.exec(body, &live)?;
                        for t in active(&live) {
                            let i = self.regs[v][t] as u32 as i32;
                            let s = self.get(*step, t) as u32 as i32;
                            self.regs[v][t] = u64::from(i.wrapping_add(s) as u32);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&self, o: Operand, t: usize) -> u64 {
        match o {
            Operand::Reg(r) => self.regs[r.0 as usize][t],
            Operand::F32(x) => u64::from(x.to_bits()),
            Operand::I32(x) => u64::from(x as u32),
            Operand::I64(x) => x as u64,
        }
    }

    fn set(&mut self, r: Reg, t: usize, bits: u64) {
        self.regs[r.0 as usize][t] = bits;
    }

    fn inst(&mut self, i: &Inst, mask: &[bool]) -> Result<(), String> {
        self.clock += 1;
        self.hopper.check_accumulators(i)?;
        if self.hopper_inst(i, mask)? {
            return Ok(());
        }
        self.hopper.note_writes(i, self.clock);
        match i {
            Inst::ShflXor { dst, src, mask: m } => {
                self.whole_warps(mask, "shfl.sync")?;
                let s = self.regs[src.0 as usize].clone();
                for t in active(mask) {
                    let lane = t % 32;
                    let from = t - lane + (lane ^ *m as usize);
                    self.set(*dst, t, s[from]);
                }
                return Ok(());
            }
            Inst::ShflIdx { dst, src, lane } => {
                self.whole_warps(mask, "shfl.sync")?;
                let s = self.regs[src.0 as usize].clone();
                for t in active(mask) {
                    let from = t - t % 32 + (self.get(*lane, t) as usize % 32);
                    self.set(*dst, t, s[from]);
                }
                return Ok(());
            }
            Inst::Bar => {
                if mask.contains(&false) {
                    return Err("bar.sync reached by only part of the block".into());
                }
                self.epoch += 1;
                return Ok(());
            }
            Inst::Mma { d, a, b, c, elem } => {
                self.whole_warps(mask, "mma.sync")?;
                for warp in 0..mask.len() / 32 {
                    self.mma(warp * 32, d, a, b, c, *elem);
                }
                return Ok(());
            }
            _ => {}
        }
        for t in active(mask) {
            self.scalar(i, t)?;
        }
        Ok(())
    }

    fn whole_warps(&self, mask: &[bool], what: &str) -> Result<(), String> {
        if !mask.len().is_multiple_of(32) {
            return Err(format!("{what} in a block of {} threads", mask.len()));
        }
        for w in mask.chunks(32) {
            if w.contains(&true) && w.contains(&false) {
                return Err(format!("{what} reached by only part of a warp"));
            }
        }
        Ok(())
    }

    fn scalar(&mut self, i: &Inst, t: usize) -> Result<(), String> {
        let k = self.k;
        match i {
            Inst::Mov { dst, src } => self.set(*dst, t, self.get(*src, t)),
            Inst::Special { dst, reg } => {
                let v = match reg {
                    Special::Tid => t as u32,
                    Special::Ntid => k.block,
                    Special::Ctaid => self.ctaid,
                    Special::Nctaid => self.nctaid,
                    Special::SmId => self.smid,
                };
                self.set(*dst, t, u64::from(v));
            }
            Inst::Unary { op, dst, src } => {
                let x = self.get(*src, t);
                if matches!(op, UnOp::Sin | UnOp::Cos) && f(x).abs() > APPROX_TRIG_RANGE {
                    return Err(format!(
                        "{op:?} of {} in thread {t}: sin.approx and cos.approx are accurate only on [-pi, pi]; reduce the argument first",
                        f(x)
                    ));
                }
                let v = unary(*op, k.ty(*dst), x);
                self.set(*dst, t, v);
            }
            Inst::Binary { op, dst, a, b } => {
                let v = binary(*op, k.ty(*dst), self.get(*a, t), self.get(*b, t))?;
                self.set(*dst, t, v);
            }
            Inst::Fma { dst, a, b, c } => {
                let [x, y, z] = [a, b, c].map(|o| f(self.get(*o, t)));
                self.set(*dst, t, bits_f(x.mul_add(y, z)));
            }
            Inst::Setp { cmp, dst, a, b } => {
                let ty = k.operand_ty(*a);
                let v = compare(*cmp, ty, self.get(*a, t), self.get(*b, t));
                self.set(*dst, t, u64::from(v));
            }
            Inst::Selp { dst, a, b, cond } => {
                let v = if self.regs[cond.0 as usize][t] != 0 {
                    self.get(*a, t)
                } else {
                    self.get(*b, t)
                };
                self.set(*dst, t, v);
            }
            Inst::Cvt { dst, src } => {
                let v = convert(k.ty(*dst), k.ty(*src), self.regs[src.0 as usize][t]);
                self.set(*dst, t, v);
            }
            Inst::Round { dst, src, elem } => {
                let x = f(self.regs[src.0 as usize][t]);
                let r = if *elem == Elem::BF16 {
                    bf16::from_f32(x).to_f32()
                } else {
                    f16::from_f32(x).to_f32()
                };
                self.set(*dst, t, bits_f(r));
            }
            Inst::Pack { dst, lo, hi, elem } => {
                let half = |x: u64| -> u64 {
                    let x = f(x);
                    u64::from(if *elem == Elem::BF16 {
                        bf16::from_f32(x).to_bits()
                    } else {
                        f16::from_f32(x).to_bits()
                    })
                };
                let v = half(self.get(*lo, t)) | (half(self.get(*hi, t)) << 16);
                self.set(*dst, t, v);
            }
            Inst::Ld { dst, space, index } => {
                let pair = k.ty(dst[0]) == Ty::B32;
                let width = if pair { 2 } else { dst.len() };
                let i = self.address(*space, self.get(*index, t), width)?;
                for (j, r) in dst.iter().enumerate() {
                    self.note_read(*space, i + j, t, pair)?;
                    let mem = self.memory(*space);
                    let v = if pair {
                        mem.read_pair(i)
                    } else {
                        mem.read(i + j)
                    };
                    self.set(*r, t, v);
                }
            }
            Inst::St { space, index, src } => {
                let i = self.address(*space, self.get(*index, t), src.len())?;
                for (j, o) in src.iter().enumerate() {
                    let v = self.get(*o, t);
                    self.note_write(*space, i + j, t)?;
                    self.memory(*space).write(i + j, v);
                }
            }
            Inst::AtomAdd { space, index, src } => {
                let i = self.address(*space, self.get(*index, t), 1)?;
                let v = self.get(*src, t);
                self.memory(*space).atomic_add(i, v);
            }
            Inst::SetFlag { space, index, src } => {
                let i = self.address(*space, self.get(*index, t), 1)?;
                let v = self.get(*src, t);
                self.memory(*space).write(i, v);
            }
            Inst::WaitFlag {
                space,
                index,
                at_least,
            } => {
                // Launches and blocks run one after another here, so a flag not yet
                // set will never be: on a GPU this thread would spin forever.
                let i = self.address(*space, self.get(*index, t), 1)?;
                let (have, want) = (
                    self.memory(*space).read(i) as u32 as i32,
                    self.get(*at_least, t) as u32 as i32,
                );
                if have < want {
                    return Err(format!(
                        "thread {t} waits for flag {i} to reach {want}, but it is {have} and nothing earlier sets it (deadlock)"
                    ));
                }
            }
            Inst::ShflXor { .. } | Inst::ShflIdx { .. } | Inst::Bar | Inst::Mma { .. } => {
                unreachable!("collective instructions are run per warp or block")
            }
            Inst::MbarInit { .. }
            | Inst::FenceMbarInit
            | Inst::FenceProxyAsync
            | Inst::MbarArriveExpectTx { .. }
            | Inst::MbarWait { .. }
            | Inst::TmaLoad { .. }
            | Inst::SharedDesc { .. }
            | Inst::WgmmaFence
            | Inst::Wgmma { .. }
            | Inst::WgmmaCommit
            | Inst::WgmmaWait { .. } => unreachable!("run by hopper_inst"),
        }
        Ok(())
    }

    fn memory(&mut self, s: Space) -> &mut Data {
        match s {
            Space::Global(p) => &mut self.global[p],
            Space::Shared(a) => &mut self.shared[a],
        }
    }

    fn space_name(&self, s: Space) -> String {
        match s {
            Space::Global(p) => format!("buffer {}", self.k.params[p].name),
            Space::Shared(a) => format!("shared array {}", self.k.shared[a].name),
        }
    }

    /// The element index of an access of `width` elements, checked for bounds and
    /// alignment.
    fn address(&mut self, s: Space, index: u64, width: usize) -> Result<usize, String> {
        let i = index as u32 as i32;
        let len = self.memory(s).len();
        if i < 0 || i as usize + width > len {
            return Err(format!(
                "access of {width} elements at index {i} is outside {} ({len} elements)",
                self.space_name(s)
            ));
        }
        if !(i as usize).is_multiple_of(width) {
            return Err(format!(
                "vector access of {width} elements at index {i} of {} is misaligned",
                self.space_name(s)
            ));
        }
        Ok(i as usize)
    }

    fn note_read(&mut self, s: Space, i: usize, t: usize, pair: bool) -> Result<(), String> {
        let Space::Shared(a) = s else { return Ok(()) };
        let t = t as u32;
        let epoch = self.epoch;
        for e in i..i + 1 + usize::from(pair) {
            self.hopper.check_landed(self.k, a, e, "a load")?;
            let seen = self.touches[a][e];
            if seen.write_epoch == epoch && seen.writer != t {
                return Err(self.race(a, e, "read", t, seen.writer));
            }
            let touch = &mut self.touches[a][e];
            if touch.read_epoch != epoch {
                touch.read_epoch = epoch;
                touch.reader = t;
            } else if touch.reader != t {
                touch.reader = MANY;
            }
        }
        Ok(())
    }

    fn note_write(&mut self, s: Space, i: usize, t: usize) -> Result<(), String> {
        let Space::Shared(a) = s else { return Ok(()) };
        let t = t as u32;
        let epoch = self.epoch;
        let touch = self.touches[a][i];
        if touch.write_epoch == epoch && touch.writer != t {
            return Err(self.race(a, i, "write", t, touch.writer));
        }
        if touch.read_epoch == epoch && touch.reader != t {
            let other = if touch.reader == MANY {
                u32::MAX
            } else {
                touch.reader
            };
            return Err(self.race(a, i, "write after read", t, other));
        }
        self.hopper
            .check_not_in_use(self.k, a, i..i + 1, "a store")?;
        let clock = self.clock;
        let touch = &mut self.touches[a][i];
        touch.write_epoch = epoch;
        touch.writer = t;
        touch.write_clock = clock;
        Ok(())
    }

    fn race(&self, a: usize, i: usize, what: &str, t: u32, other: u32) -> String {
        let other = if other == MANY {
            "other threads".to_string()
        } else {
            format!("thread {other}")
        };
        format!(
            "shared-memory race on {}[{i}]: {what} by thread {t} and {other} with no barrier between",
            self.k.shared[a].name
        )
    }

    /// One warp's `mma.sync.m16n8k16.row.col` with PTX's fragment layout: lane `l` has
    /// group `g = l / 4` and index `q = l % 4`; A's registers hold rows `g`, `g + 8`
    /// and columns `2q, 2q + 1` (then `+ 8`); B's hold rows `2q, 2q + 1` (then `+ 8`)
    /// of column `g`; C and D hold rows `g`, `g + 8`, columns `2q, 2q + 1`.
    fn mma(
        &mut self,
        base: usize,
        d: &[Reg; 4],
        a: &[Reg; 4],
        b: &[Reg; 2],
        c: &[Reg; 4],
        e: Elem,
    ) {
        let half = |bits: u64| -> f32 {
            let h = bits as u16;
            if e == Elem::BF16 {
                bf16::from_bits(h).to_f32()
            } else {
                f16::from_bits(h).to_f32()
            }
        };
        let (mut am, mut bm, mut cm) = ([[0f32; 16]; 16], [[0f32; 8]; 16], [[0f32; 8]; 16]);
        for lane in 0..32 {
            let (g, q, t) = (lane / 4, lane % 4, base + lane);
            for (r, (row, col)) in [
                (g, 2 * q),
                (g + 8, 2 * q),
                (g, 2 * q + 8),
                (g + 8, 2 * q + 8),
            ]
            .into_iter()
            .enumerate()
            {
                let v = self.regs[a[r].0 as usize][t];
                am[row][col] = half(v);
                am[row][col + 1] = half(v >> 16);
            }
            for (r, k0) in [2 * q, 2 * q + 8].into_iter().enumerate() {
                let v = self.regs[b[r].0 as usize][t];
                bm[k0][g] = half(v);
                bm[k0 + 1][g] = half(v >> 16);
            }
            for (r, (row, col)) in fragment_cd(g, q).into_iter().enumerate() {
                cm[row][col] = f(self.regs[c[r].0 as usize][t]);
            }
        }
        for lane in 0..32 {
            let (g, q, t) = (lane / 4, lane % 4, base + lane);
            for (r, (row, col)) in fragment_cd(g, q).into_iter().enumerate() {
                let mut acc = cm[row][col];
                for (kk, arow) in am[row].iter().enumerate() {
                    acc += arow * bm[kk][col];
                }
                self.set(d[r], t, bits_f(acc));
            }
        }
    }
}

/// Positions of C/D fragment registers 0..4 of lane group `g`, index `q`.
fn fragment_cd(g: usize, q: usize) -> [(usize, usize); 4] {
    [
        (g, 2 * q),
        (g, 2 * q + 1),
        (g + 8, 2 * q),
        (g + 8, 2 * q + 1),
    ]
}

fn active(mask: &[bool]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().filter_map(|(t, &m)| m.then_some(t))
}

fn f(bits: u64) -> f32 {
    f32::from_bits(bits as u32)
}

fn bits_f(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn i32v(bits: u64) -> i32 {
    bits as u32 as i32
}

fn bits_i32(x: i32) -> u64 {
    u64::from(x as u32)
}

fn unary(op: UnOp, ty: Ty, x: u64) -> u64 {
    match ty {
        Ty::F32 => {
            let a = f(x);
            bits_f(match op {
                UnOp::Neg => -a,
                UnOp::Abs => a.abs(),
                UnOp::Sqrt => a.sqrt(),
                UnOp::Rsqrt => 1.0 / a.sqrt(),
                UnOp::Rcp => 1.0 / a,
                UnOp::Ex2 => a.exp2(),
                UnOp::Lg2 => a.log2(),
                UnOp::Sin => a.sin(),
                UnOp::Cos => a.cos(),
                UnOp::Not => unreachable!("checked"),
            })
        }
        Ty::I32 => bits_i32(match op {
            UnOp::Neg => i32v(x).wrapping_neg(),
            UnOp::Abs => i32v(x).wrapping_abs(),
            UnOp::Not => !i32v(x),
            _ => unreachable!("checked"),
        }),
        Ty::I64 => {
            (match op {
                UnOp::Neg => (x as i64).wrapping_neg(),
                UnOp::Abs => (x as i64).wrapping_abs(),
                UnOp::Not => !(x as i64),
                _ => unreachable!("checked"),
            }) as u64
        }
        Ty::Pred => u64::from(x == 0),
        Ty::B32 => unreachable!("checked"),
    }
}

fn binary(op: BinOp, ty: Ty, a: u64, b: u64) -> Result<u64, String> {
    Ok(match ty {
        Ty::F32 => {
            let (x, y) = (f(a), f(b));
            bits_f(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Min => x.min(y),
                BinOp::Max => x.max(y),
                _ => unreachable!("checked"),
            })
        }
        Ty::I32 => {
            let (x, y) = (i32v(a), i32v(b));
            bits_i32(int_op(op, i64::from(x), i64::from(y), 32)? as i32)
        }
        Ty::I64 => {
            let y = if matches!(op, BinOp::Shl | BinOp::Shr) {
                i64::from(i32v(b))
            } else {
                b as i64
            };
            int_op(op, a as i64, y, 64)? as u64
        }
        Ty::Pred => {
            let (x, y) = (a != 0, b != 0);
            u64::from(match op {
                BinOp::And => x && y,
                BinOp::Or => x || y,
                BinOp::Xor => x != y,
                _ => unreachable!("checked"),
            })
        }
        Ty::B32 => unreachable!("checked"),
    })
}

/// Integer arithmetic at `width` bits (results wrap; the caller truncates).
fn int_op(op: BinOp, x: i64, y: i64, width: u32) -> Result<i64, String> {
    let wrap = |v: i64| if width == 32 { i64::from(v as i32) } else { v };
    Ok(match op {
        BinOp::Add => wrap(x.wrapping_add(y)),
        BinOp::Sub => wrap(x.wrapping_sub(y)),
        BinOp::Mul => wrap(x.wrapping_mul(y)),
        BinOp::Div | BinOp::Rem if y == 0 => return Err("integer division by zero".into()),
        BinOp::Div => wrap(x.wrapping_div(y)),
        BinOp::Rem => wrap(x.wrapping_rem(y)),
        BinOp::Min => x.min(y),
        BinOp::Max => x.max(y),
        BinOp::And => x & y,
        BinOp::Or => x | y,
        BinOp::Xor => x ^ y,
        // PTX clamps shift counts to the width.
        BinOp::Shl => {
            if y >= i64::from(width) || y < 0 {
                0
            } else {
                wrap(x << y)
            }
        }
        BinOp::Shr => x >> y.clamp(0, i64::from(width) - 1),
    })
}

fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    fn holds<T: PartialOrd>(cmp: Cmp, x: T, y: T) -> bool {
        match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        }
    }
    match ty {
        Ty::F32 => holds(cmp, f(a), f(b)),
        Ty::I32 => holds(cmp, i32v(a), i32v(b)),
        Ty::I64 => holds(cmp, a as i64, b as i64),
        Ty::Pred => holds(cmp, a != 0, b != 0),
        Ty::B32 => unreachable!("checked"),
    }
}

fn convert(to: Ty, from: Ty, x: u64) -> u64 {
    match (to, from) {
        (Ty::F32, Ty::I32) => bits_f(i32v(x) as f32),
        (Ty::F32, Ty::I64) => bits_f(x as i64 as f32),
        (Ty::F32, Ty::Pred) => bits_f(if x != 0 { 1.0 } else { 0.0 }),
        // Rust's `as` saturates and maps NaN to 0, like `cvt.rzi.sat`.
        (Ty::I32, Ty::F32) => bits_i32(f(x) as i32),
        (Ty::I64, Ty::F32) => f(x) as i64 as u64,
        (Ty::I32, Ty::I64) => bits_i32(x as i64 as i32),
        (Ty::I64, Ty::I32) => i64::from(i32v(x)) as u64,
        (Ty::I32 | Ty::I64, Ty::Pred) => u64::from(x != 0),
        (a, b) if a == b => x,
        _ => unreachable!("conversions are checked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::build::KernelBuilder;

    /// Thread `t` writes `shared[t]`, then reads its neighbour's element into `out[t]`,
    /// with or without a barrier between.
    fn neighbour_exchange(barrier: bool) -> Kernel {
        let mut b = KernelBuilder::new("exchange", 64);
        let out = b.param("out", Elem::F32, 64);
        let s = b.shared("s", Elem::F32, 64);
        let t = b.special(Special::Tid);
        let x = b.cvt(Ty::F32, t);
        b.st(s, t, x);
        if barrier {
            b.bar();
        }
        let next = b.add(t, 1);
        let next = b.rem(next, 64);
        let y = b.ld(s, next);
        b.st(out, t, y);
        b.finish()
    }

    /// `sin.approx` outside [-pi, pi] is flagged; the IR's `sin` reduces its argument
    /// first and matches f64 sin on large arguments.
    #[test]
    fn approximate_trigonometry_needs_a_reduced_argument() {
        let kernel = |reduce: bool| {
            let mut b = KernelBuilder::new("trig", 32);
            let x = b.param("x", Elem::F32, 32);
            let y = b.param("y", Elem::F32, 32);
            let t = b.special(Special::Tid);
            let v = b.ld(x, t);
            let s = if reduce {
                crate::gpu::math::unary(&mut b, crate::ir::ops::UnaryOp::Sin, v)
            } else {
                b.un(UnOp::Sin, v)
            };
            b.st(y, t, s);
            b.finish()
        };
        let xs: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 37.3).collect();
        let mut mem = [Data::F32(xs.clone()), Data::zeros(Elem::F32, 32)];
        let err = run(&kernel(false), 1, 1, &mut mem).unwrap_err().to_string();
        assert!(err.contains("[-pi, pi]"), "{err}");
        let mut mem = [Data::F32(xs.clone()), Data::zeros(Elem::F32, 32)];
        run(&kernel(true), 1, 1, &mut mem).unwrap();
        let Data::F32(got) = &mem[1] else {
            unreachable!()
        };
        for (x, y) in xs.iter().zip(got) {
            let want = f64::from(*x).sin();
            assert!(
                (f64::from(*y) - want).abs() < 1e-5,
                "sin {x}: {y} against {want}"
            );
        }
    }

    #[test]
    fn a_missing_barrier_is_a_race() {
        let mut mem = [Data::zeros(Elem::F32, 64)];
        let err = run(&neighbour_exchange(false), 1, 1, &mut mem)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shared-memory race on s[1]"), "{err}");
        let mut mem = [Data::zeros(Elem::F32, 64)];
        run(&neighbour_exchange(true), 1, 1, &mut mem).unwrap();
        let Data::F32(v) = &mem[0] else {
            unreachable!()
        };
        assert_eq!(v[63], 0.0);
        assert_eq!(v[5], 6.0);
    }

    #[test]
    fn a_barrier_in_divergent_code_is_an_error() {
        let mut b = KernelBuilder::new("divergent", 64);
        b.param("out", Elem::F32, 1);
        let t = b.special(Special::Tid);
        let low = b.setp(Cmp::Lt, t, 32);
        b.if_then(low, |b| b.bar());
        let err = run(&b.finish(), 1, 1, &mut [Data::zeros(Elem::F32, 1)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bar.sync reached by only part of the block"),
            "{err}"
        );
    }

    #[test]
    fn misaligned_and_out_of_bounds_accesses_are_errors() {
        for (index, why) in [(2, "misaligned"), (8, "outside")] {
            let mut b = KernelBuilder::new("access", 32);
            let buf = b.param("buf", Elem::F32, 8);
            b.ld_vec(buf, index, 4);
            let err = run(&b.finish(), 1, 1, &mut [Data::zeros(Elem::F32, 8)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn shuffles_need_whole_warps() {
        let mut b = KernelBuilder::new("shuffle", 64);
        let out = b.param("out", Elem::I32, 64);
        let t = b.special(Special::Tid);
        let other = b.shfl_xor(t, 1);
        b.st(out, t, other);
        let mut mem = [Data::zeros(Elem::I32, 64)];
        run(&b.finish(), 1, 1, &mut mem).unwrap();
        assert_eq!(mem[0], Data::I32((0..64).map(|t| t ^ 1).collect()));

        let mut b = KernelBuilder::new("partial", 64);
        b.param("out", Elem::I32, 1);
        let t = b.special(Special::Tid);
        let few = b.setp(Cmp::Lt, t, 3);
        b.if_then(few, |b| {
            b.shfl_xor(t, 1);
        });
        let err = run(&b.finish(), 1, 1, &mut [Data::zeros(Elem::I32, 1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only part of a warp"), "{err}");
    }
}
