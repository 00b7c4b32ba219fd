//! The GPU kernel IR: one thread's program, as PTX sees it, with structured control flow.
//!
//! A [`Kernel`] is what every thread of a launch runs. Its instructions map one to one
//! onto PTX instructions (`ptx.rs` prints them) and have exact CPU meanings (`eval.rs`
//! runs them over a modelled grid), so the logic of a kernel is tested on the CPU and
//! the PTX printer only translates. Control flow is structured (`If`, `Loop`), which
//! keeps both the printer and the evaluator small and makes divergence explicit.
//!
//! Invariants (checked by [`Kernel::check`]):
//! - every register has one type, and each instruction's operands have the types its
//!   opcode requires;
//! - memory is addressed by *element index* (`i32`) into a typed buffer parameter or
//!   shared array; a vector access of `n` elements needs an index that is a multiple
//!   of `n` (the evaluator checks alignment and bounds at run time);
//! - 16-bit float buffers are read into `f32` registers (or, two at a time, into `b32`
//!   registers for tensor-core fragments) and written from `f32` registers, rounding
//!   to nearest even.
//! - Hopper's asynchronous instructions (mbarriers, TMA copies through a kernel's
//!   [`TensorMap`]s, wgmma through shared-memory descriptors) address mbarriers as
//!   elements of shared i64 arrays and operands as elements of 16-bit shared arrays;
//!   their layouts are those of `wgmma.rs`.

use std::fmt;

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(pub u32);

/// Register types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// A predicate.
    Pred,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// IEEE binary32.
    F32,
    /// Two packed 16-bit floats (tensor-core fragments).
    B32,
}

/// Element types of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    /// binary32.
    F32,
    /// binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// A byte (booleans: 0 or 1).
    U8,
}

impl Elem {
    /// Size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::BF16 => 2,
            Elem::I64 => 8,
            Elem::U8 => 1,
        }
    }

    /// The register type a scalar load of this element gives.
    pub fn reg_ty(self) -> Ty {
        match self {
            Elem::F32 | Elem::F16 | Elem::BF16 => Ty::F32,
            Elem::I32 | Elem::U8 => Ty::I32,
            Elem::I64 => Ty::I64,
        }
    }

    /// True for the 16-bit floats.
    pub fn is_half(self) -> bool {
        matches!(self, Elem::F16 | Elem::BF16)
    }
}

/// A kernel parameter: a pointer to a global buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferParam {
    /// Name in the PTX (`p_<name>`).
    pub name: String,
    /// Element type.
    pub elem: Elem,
    /// Number of elements (bounds for the evaluator; not passed to the kernel).
    pub len: usize,
}

/// A statically sized shared-memory array.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedArray {
    /// Name in the PTX (`s_<name>`).
    pub name: String,
    /// Element type.
    pub elem: Elem,
    /// Number of elements.
    pub len: usize,
    /// Byte alignment of its start (16, or 128 for a TMA destination).
    pub align: usize,
}

/// How a tensor map arranges its box in shared memory. Only the unswizzled layout is
/// modelled (and generated): the box lands row after row, innermost dimension fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    /// No swizzle (`CU_TENSOR_MAP_SWIZZLE_NONE`).
    None,
}

/// A TMA tensor map: a kernel parameter passed by value (`.param .align 64 .b8
/// NAME[128]`) that describes a tiled view of one global buffer parameter. The runtime
/// encodes it with `cuTensorMapEncodeTiled`; the evaluator executes copies through it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMap {
    /// Name in the PTX (`<kernel>_m<i>_<name>`).
    pub name: String,
    /// The buffer parameter it views (its address and element type).
    pub buffer: usize,
    /// Extent of every dimension in elements, innermost first.
    pub dims: Vec<u64>,
    /// Bytes between consecutive indices of `dims[1..]` (multiples of 16).
    pub strides: Vec<u64>,
    /// The box one copy moves, in elements per dimension (innermost first).
    pub box_dims: Vec<u32>,
    /// Shared-memory arrangement of the box.
    pub swizzle: Swizzle,
}

impl TensorMap {
    /// Elements one copy moves (out-of-bounds ones arrive as zeros and count too).
    pub fn box_elems(&self) -> usize {
        self.box_dims.iter().map(|&d| d as usize).product()
    }
}

/// Where a wgmma operand's core matrices lie (no swizzle), in bytes; see `wgmma.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescLayout {
    /// Leading dimension byte offset: between core matrices adjacent along K.
    pub lbo: u32,
    /// Stride dimension byte offset: between core matrices adjacent along M (or N).
    pub sbo: u32,
}

/// Special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// Thread index in the block (`%tid.x`).
    Tid,
    /// Threads per block (`%ntid.x`).
    Ntid,
    /// Block index in the grid (`%ctaid.x`).
    Ctaid,
    /// Blocks in the grid (`%nctaid.x`).
    Nctaid,
    /// The SM the block runs on (`%smid`; diagnostics only).
    SmId,
}

/// An instruction operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// A register.
    Reg(Reg),
    /// An `f32` immediate.
    F32(f32),
    /// An `i32` immediate.
    I32(i32),
    /// An `i64` immediate.
    I64(i64),
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Operand {
        Operand::Reg(r)
    }
}

impl From<i32> for Operand {
    fn from(v: i32) -> Operand {
        Operand::I32(v)
    }
}

impl From<f32> for Operand {
    fn from(v: f32) -> Operand {
        Operand::F32(v)
    }
}

/// Unary opcodes. Float ones: `Sqrt` and `Rcp` round to nearest; `Rsqrt`, `Ex2`,
/// `Lg2`, `Sin`, `Cos` are PTX's `.approx` forms (the evaluator computes them exactly;
/// the hardware is within 2 ulp, or 2^-21 absolute for sin/cos).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// Negation.
    Neg,
    /// Absolute value.
    Abs,
    /// Bitwise not (integers) or logical not (predicates).
    Not,
    /// Square root.
    Sqrt,
    /// 1/sqrt(x).
    Rsqrt,
    /// 1/x.
    Rcp,
    /// 2^x.
    Ex2,
    /// log2(x).
    Lg2,
    /// sin(x).
    Sin,
    /// cos(x).
    Cos,
}

/// Binary opcodes. Integer `Div`/`Rem` truncate toward zero (division by zero is
/// undefined on the GPU; kernels never divide by a value they did not check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a * b (low half for integers).
    Mul,
    /// a / b (floats round to nearest).
    Div,
    /// Remainder (integers).
    Rem,
    /// Minimum (floats: PTX `min`, which returns the non-NaN operand).
    Min,
    /// Maximum.
    Max,
    /// Bitwise and (or logical, on predicates).
    And,
    /// Bitwise or.
    Or,
    /// Bitwise xor.
    Xor,
    /// Shift left.
    Shl,
    /// Arithmetic shift right.
    Shr,
}

/// Comparison opcodes. On floats every comparison but `Ne` is false when an operand
/// is NaN, and `Ne` is true (the IR's meaning, `interp::holds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// a == b.
    Eq,
    /// a != b.
    Ne,
    /// a < b.
    Lt,
    /// a <= b.
    Le,
    /// a > b.
    Gt,
    /// a >= b.
    Ge,
}

/// Where a memory access goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Global memory: the buffer parameter with this index.
    Global(usize),
    /// Shared memory: the shared array with this index.
    Shared(usize),
}

/// One instruction. Fields are named after PTX's operands (`dst`, `a`, `b`, ...).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// `dst = src`.
    Mov { dst: Reg, src: Operand },
    /// `dst = special register`.
    Special { dst: Reg, reg: Special },
    /// `dst = op src`.
    Unary { op: UnOp, dst: Reg, src: Operand },
    /// `dst = a op b`; for `Shl`/`Shr`, `b` is an `i32` shift count.
    Binary {
        op: BinOp,
        dst: Reg,
        a: Operand,
        b: Operand,
    },
    /// `dst = a * b + c`, rounded once (f32).
    Fma {
        dst: Reg,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    /// `dst (pred) = a cmp b`.
    Setp {
        cmp: Cmp,
        dst: Reg,
        a: Operand,
        b: Operand,
    },
    /// `dst = cond ? a : b`.
    Selp {
        dst: Reg,
        a: Operand,
        b: Operand,
        cond: Reg,
    },
    /// `dst = src` converted: float→int truncates toward zero (NaN gives 0), int→float
    /// and i64→i32 (wrapping) as usual, pred→int gives 0/1.
    Cvt { dst: Reg, src: Reg },
    /// Loads `dst.len()` (1, 2 or 4) consecutive elements starting at `index`.
    Ld {
        dst: Vec<Reg>,
        space: Space,
        index: Operand,
    },
    /// Stores `src` to consecutive elements starting at `index`.
    St {
        space: Space,
        index: Operand,
        src: Vec<Operand>,
    },
    /// `mem[index] += src` atomically (global f32 or i32/i64 buffers).
    AtomAdd {
        space: Space,
        index: Operand,
        src: Operand,
    },
    /// Sets a flag: stores `src` to a global i32 after every earlier write of this
    /// thread (and, after a barrier, of its block) is visible GPU-wide
    /// (`st.release.gpu`).
    SetFlag {
        space: Space,
        index: Operand,
        src: Operand,
    },
    /// Spins until the global i32 flag at `index` is at least `at_least`
    /// (`ld.acquire.gpu` in a loop); later reads see what the setter wrote before it.
    WaitFlag {
        space: Space,
        index: Operand,
        at_least: Operand,
    },
    /// `dst = src` of lane `laneid ^ mask` of the warp (`shfl.sync.bfly`, all lanes).
    ShflXor { dst: Reg, src: Reg, mask: i32 },
    /// `dst = src` of lane `lane` of the warp (`shfl.sync.idx`, all lanes).
    ShflIdx { dst: Reg, src: Reg, lane: Operand },
    /// Block-wide barrier (`bar.sync 0`); every thread of the block must reach it.
    Bar,
    /// `dst = src` rounded to the precision of a 16-bit float `elem` (still f32).
    Round { dst: Reg, src: Reg, elem: Elem },
    /// Packs two f32 into a `b32` of two 16-bit floats (`lo` in the low half).
    Pack {
        dst: Reg,
        lo: Operand,
        hi: Operand,
        elem: Elem,
    },
    /// Warp-wide tensor-core product `d = a·b + c` of shape m16n8k16 (`mma.sync`,
    /// row-major A, column-major B, 16-bit inputs of `elem`, f32 accumulators), with
    /// PTX's fragment layout.
    Mma {
        d: [Reg; 4],
        a: [Reg; 4],
        b: [Reg; 2],
        c: [Reg; 4],
        elem: Elem,
    },
    /// Initialises the mbarrier (`b64` element `index` of a shared i64 array) to expect
    /// `count` arrivals per phase (`mbarrier.init.shared::cta.b64`).
    MbarInit {
        bar: Space,
        index: Operand,
        count: u32,
    },
    /// Makes initialised mbarriers visible to the async proxy
    /// (`fence.mbarrier_init.release.cluster` then `fence.proxy.async.shared::cta`).
    FenceMbarInit,
    /// Orders this thread's ordinary shared-memory writes before later async-proxy
    /// reads of them (wgmma operands): `fence.proxy.async.shared::cta`.
    FenceProxyAsync,
    /// Arrives on the mbarrier and raises the bytes its phase waits for by `bytes`
    /// (`mbarrier.arrive.expect_tx.shared::cta.b64`).
    MbarArriveExpectTx {
        bar: Space,
        index: Operand,
        bytes: u32,
    },
    /// Spins until the mbarrier's phase of parity `parity` (0 or 1) has completed
    /// (`mbarrier.try_wait.parity` in a loop).
    MbarWait {
        bar: Space,
        index: Operand,
        parity: Operand,
    },
    /// One TMA copy (`cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::
    /// complete_tx::bytes`): the box of tensor map `map` at element coordinates
    /// `coords` (innermost first; out of bounds reads zeros) to shared `dst` from
    /// element `index` on (128-byte aligned); completes its bytes on the mbarrier.
    TmaLoad {
        map: usize,
        dst: Space,
        index: Operand,
        coords: Vec<Operand>,
        bar: Space,
        bar_index: Operand,
    },
    /// `dst` (i64) = the wgmma matrix descriptor of the operand starting at element
    /// `index` of shared `space`, core matrices placed as `layout` says, no swizzle.
    SharedDesc {
        dst: Reg,
        space: Space,
        index: Operand,
        layout: DescLayout,
    },
    /// Orders register accesses before the following wgmma (`wgmma.fence.sync.aligned`).
    WgmmaFence,
    /// Warpgroup-wide async product `d += a·b` of shape m64nNk16 (N = 2 · `d.len()`),
    /// A (64×16) and B (16×N) read from shared memory through the descriptors `a`
    /// and `b`, 16-bit `elem` inputs, f32 accumulators in the fragment layout of
    /// `wgmma.rs` (`wgmma.mma_async.sync.aligned.m64nNk16.f32.elem.elem`).
    /// `a_mn_major` / `b_mn_major`: the operand is stored M- (N-) major rather than
    /// K-major (the `imm-trans` operands).
    Wgmma {
        d: Vec<Reg>,
        a: Reg,
        b: Reg,
        elem: Elem,
        a_mn_major: bool,
        b_mn_major: bool,
    },
    /// Closes the wgmmas issued since the last commit into a group
    /// (`wgmma.commit_group.sync.aligned`).
    WgmmaCommit,
    /// Waits until at most `pending` committed groups are unfinished
    /// (`wgmma.wait_group.sync.aligned`); only then may their registers and shared
    /// operands be touched.
    WgmmaWait { pending: u32 },
}

impl Inst {
    /// Every register the instruction reads or writes.
    pub fn registers(&self) -> Vec<Reg> {
        let mut regs = Vec::new();
        let op = |o: &Operand, regs: &mut Vec<Reg>| {
            if let Operand::Reg(r) = o {
                regs.push(*r);
            }
        };
        match self {
            Inst::Mov { dst, src } | Inst::Unary { dst, src, .. } => {
                regs.push(*dst);
                op(src, &mut regs);
            }
            Inst::Special { dst, .. } => regs.push(*dst),
            Inst::Binary { dst, a, b, .. } | Inst::Setp { dst, a, b, .. } => {
                regs.push(*dst);
                op(a, &mut regs);
                op(b, &mut regs);
            }
            Inst::Fma { dst, a, b, c } => {
                regs.push(*dst);
                for o in [a, b, c] {
                    op(o, &mut regs);
                }
            }
            Inst::Selp { dst, a, b, cond } => {
                regs.extend([*dst, *cond]);
                op(a, &mut regs);
                op(b, &mut regs);
            }
            Inst::Cvt { dst, src } | Inst::Round { dst, src, .. } => regs.extend([*dst, *src]),
            Inst::Ld { dst, index, .. } => {
                regs.extend(dst);
                op(index, &mut regs);
            }
            Inst::St { index, src, .. } => {
                op(index, &mut regs);
                for o in src {
                    op(o, &mut regs);
                }
            }
            Inst::AtomAdd { index, src, .. } | Inst::SetFlag { index, src, .. } => {
                op(index, &mut regs);
                op(src, &mut regs);
            }
            Inst::WaitFlag {
                index, at_least, ..
            } => {
                op(index, &mut regs);
                op(at_least, &mut regs);
            }
            Inst::ShflXor { dst, src, .. } => regs.extend([*dst, *src]),
            Inst::ShflIdx { dst, src, lane } => {
                regs.extend([*dst, *src]);
                op(lane, &mut regs);
            }
            Inst::Pack { dst, lo, hi, .. } => {
                regs.push(*dst);
                op(lo, &mut regs);
                op(hi, &mut regs);
            }
            Inst::Mma { d, a, b, c, .. } => {
                regs.extend(d.iter().chain(a).chain(b).chain(c));
            }
            Inst::MbarInit { index, .. } | Inst::MbarArriveExpectTx { index, .. } => {
                op(index, &mut regs)
            }
            Inst::MbarWait { index, parity, .. } => {
                op(index, &mut regs);
                op(parity, &mut regs);
            }
            Inst::TmaLoad {
                index,
                coords,
                bar_index,
                ..
            } => {
                for o in std::iter::once(index).chain(coords).chain([bar_index]) {
                    op(o, &mut regs);
                }
            }
            Inst::SharedDesc { dst, index, .. } => {
                regs.push(*dst);
                op(index, &mut regs);
            }
            Inst::Wgmma { d, a, b, .. } => regs.extend(d.iter().chain([a, b])),
            Inst::Bar
            | Inst::FenceMbarInit
            | Inst::FenceProxyAsync
            | Inst::WgmmaFence
            | Inst::WgmmaCommit
            | Inst::WgmmaWait { .. } => {}
        }
        regs
    }
}

/// A statement: an instruction or structured control flow.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// One instruction.
    Inst(Inst),
    /// Runs `then` in the threads where `cond` holds, `otherwise` in the others.
    If {
        cond: Reg,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
    },
    /// `for (var = from; var < to; var += step) body`, on `i32`.
    Loop {
        var: Reg,
        from: Operand,
        to: Operand,
        step: Operand,
        body: Vec<Stmt>,
    },
}

/// A GPU kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The entry's name (a PTX identifier).
    pub name: String,
    /// Global buffers, in parameter order.
    pub params: Vec<BufferParam>,
    /// Shared arrays.
    pub shared: Vec<SharedArray>,
    /// TMA tensor maps, passed after the buffer parameters.
    pub tensor_maps: Vec<TensorMap>,
    /// Register types, indexed by `Reg`.
    pub regs: Vec<Ty>,
    /// The body.
    pub body: Vec<Stmt>,
    /// Threads per block this kernel is written for (`.maxntid`; the launch uses it).
    pub block: u32,
    /// Blocks that should be resident on one SM (`.minnctapersm`), if any.
    pub min_blocks_per_sm: Option<u32>,
    /// True if it uses `sm_90a`-only instructions (wgmma); set by the builder.
    pub needs_sm90a: bool,
}

impl Kernel {
    /// The buffer parameters the kernel writes (stores, atomic adds and flags into
    /// global memory), sorted.
    pub fn written_params(&self) -> Vec<usize> {
        fn visit(body: &[Stmt], out: &mut Vec<usize>) {
            for stmt in body {
                match stmt {
                    Stmt::Inst(
                        Inst::St { space, .. }
                        | Inst::AtomAdd { space, .. }
                        | Inst::SetFlag { space, .. },
                    ) => {
                        if let Space::Global(p) = space {
                            out.push(*p);
                        }
                    }
                    Stmt::Inst(_) => {}
                    Stmt::If {
                        then, otherwise, ..
                    } => {
                        visit(then, out);
                        visit(otherwise, out);
                    }
                    Stmt::Loop { body, .. } => visit(body, out),
                }
            }
        }
        let mut out = Vec::new();
        visit(&self.body, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The type of register `r`.
    pub fn ty(&self, r: Reg) -> Ty {
        self.regs[r.0 as usize]
    }

    /// The type of an operand.
    pub fn operand_ty(&self, o: Operand) -> Ty {
        match o {
            Operand::Reg(r) => self.ty(r),
            Operand::F32(_) => Ty::F32,
            Operand::I32(_) => Ty::I32,
            Operand::I64(_) => Ty::I64,
        }
    }

    /// Bytes of shared memory the kernel declares.
    pub fn shared_bytes(&self) -> usize {
        self.shared.iter().map(|s| s.len * s.elem.bytes()).sum()
    }

    /// True if some instruction of the body satisfies `f`.
    pub fn any_inst(&self, f: &dyn Fn(&Inst) -> bool) -> bool {
        fn any(body: &[Stmt], f: &dyn Fn(&Inst) -> bool) -> bool {
            body.iter().any(|s| match s {
                Stmt::Inst(i) => f(i),
                Stmt::If {
                    then, otherwise, ..
                } => any(then, f) || any(otherwise, f),
                Stmt::Loop { body, .. } => any(body, f),
            })
        }
        any(&self.body, f)
    }

    /// True if it issues tensor-core instructions.
    pub fn uses_tensor_cores(&self) -> bool {
        self.any_inst(&|i| matches!(i, Inst::Mma { .. } | Inst::Wgmma { .. }))
    }

    /// True if it issues instructions that only `sm_90a` has (the wgmma family).
    pub fn uses_sm90a_instructions(&self) -> bool {
        self.any_inst(&|i| {
            matches!(
                i,
                Inst::Wgmma { .. } | Inst::WgmmaFence | Inst::WgmmaCommit | Inst::WgmmaWait { .. }
            )
        })
    }

    /// Checks the typing invariants; the error names the offending instruction.
    pub(crate) fn check(&self) -> Result<(), String> {
        let checks = || -> Result<(), String> {
            for m in &self.tensor_maps {
                check_tensor_map(self, m)?;
            }
            check_block(self, &self.body)
        };
        checks().map_err(|e| format!("kernel {}: {e}", self.name))
    }
}

fn check_block(k: &Kernel, body: &[Stmt]) -> Result<(), String> {
    for s in body {
        match s {
            Stmt::Inst(i) => check_inst(k, i).map_err(|e| format!("{e} in {i:?}"))?,
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                expect(
                    k.ty(*cond) == Ty::Pred,
                    "an if condition must be a predicate",
                )?;
                check_block(k, then)?;
                check_block(k, otherwise)?;
            }
            Stmt::Loop {
                var,
                from,
                to,
                step,
                body,
            } => {
                for o in [Operand::Reg(*var), *from, *to, *step] {
                    expect(k.operand_ty(o) == Ty::I32, "loop bounds must be i32")?;
                }
                check_block(k, body)?;
            }
        }
    }
    Ok(())
}

fn check_tensor_map(k: &Kernel, m: &TensorMap) -> Result<(), String> {
    let what = |e: &str| format!("tensor map {}: {e}", m.name);
    let buffer = k
        .params
        .get(m.buffer)
        .ok_or_else(|| what("no such buffer"))?;
    let rank = m.dims.len();
    expect((1..=5).contains(&rank), "rank must be 1 to 5").map_err(|e| what(&e))?;
    expect(
        m.strides.len() == rank - 1 && m.box_dims.len() == rank,
        "one stride per outer dimension and one box size per dimension",
    )
    .map_err(|e| what(&e))?;
    expect(
        m.strides.iter().all(|s| s % 16 == 0),
        "global strides must be multiples of 16 bytes",
    )
    .map_err(|e| what(&e))?;
    expect(
        m.box_dims.iter().all(|&b| (1..=256).contains(&b))
            && (m.box_dims[0] as usize * buffer.elem.bytes()).is_multiple_of(16),
        "box sizes are 1 to 256, the innermost a multiple of 16 bytes",
    )
    .map_err(|e| what(&e))
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

fn check_inst(k: &Kernel, i: &Inst) -> Result<(), String> {
    let t = |o: Operand| k.operand_ty(o);
    let mem_elem = |s: Space| match s {
        Space::Global(p) => k.params.get(p).map(|b| b.elem),
        Space::Shared(a) => k.shared.get(a).map(|b| b.elem),
    };
    let check_mbar = |bar: Space, index: Operand| {
        expect(
            matches!(bar, Space::Shared(_)) && mem_elem(bar) == Some(Elem::I64),
            "mbarriers are elements of a shared i64 array",
        )?;
        expect(t(index) == Ty::I32, "indices are i32")
    };
    match i {
        Inst::Mov { dst, src } => expect(k.ty(*dst) == t(*src), "mov types differ"),
        Inst::Special { dst, .. } => expect(k.ty(*dst) == Ty::I32, "special registers are i32"),
        Inst::Unary { op, dst, src } => {
            let ty = k.ty(*dst);
            expect(ty == t(*src), "unary types differ")?;
            match op {
                UnOp::Neg | UnOp::Abs => expect(ty != Ty::Pred && ty != Ty::B32, "bad type"),
                UnOp::Not => expect(ty != Ty::F32 && ty != Ty::B32, "not needs ints or preds"),
                _ => expect(ty == Ty::F32, "float op on non-float"),
            }
        }
        Inst::Binary { op, dst, a, b } => {
            let ty = k.ty(*dst);
            expect(ty == t(*a), "binary operand type differs")?;
            match op {
                BinOp::Shl | BinOp::Shr => expect(
                    t(*b) == Ty::I32 && matches!(ty, Ty::I32 | Ty::I64),
                    "bad shift",
                ),
                BinOp::And | BinOp::Or | BinOp::Xor => expect(
                    ty == t(*b) && ty != Ty::F32 && ty != Ty::B32,
                    "bad logic op",
                ),
                BinOp::Rem => expect(ty == t(*b) && matches!(ty, Ty::I32 | Ty::I64), "bad rem"),
                _ => expect(
                    ty == t(*b) && matches!(ty, Ty::I32 | Ty::I64 | Ty::F32),
                    "bad arith",
                ),
            }
        }
        Inst::Fma { dst, a, b, c } => expect(
            [k.ty(*dst), t(*a), t(*b), t(*c)]
                .iter()
                .all(|&x| x == Ty::F32),
            "fma is f32",
        ),
        Inst::Setp { dst, a, b, .. } => {
            expect(k.ty(*dst) == Ty::Pred, "setp writes a predicate")?;
            expect(t(*a) == t(*b) && t(*a) != Ty::B32, "setp operands differ")
        }
        Inst::Selp { dst, a, b, cond } => {
            expect(k.ty(*cond) == Ty::Pred, "selp needs a predicate")?;
            expect(k.ty(*dst) == t(*a) && t(*a) == t(*b), "selp types differ")
        }
        Inst::Cvt { dst, src } => expect(
            k.ty(*dst) != Ty::Pred && k.ty(*dst) != Ty::B32 && k.ty(*src) != Ty::B32,
            "bad conversion",
        ),
        Inst::Ld { dst, space, index } => {
            let e = mem_elem(*space).ok_or("no such buffer")?;
            expect(t(*index) == Ty::I32, "indices are i32")?;
            expect(
                matches!(dst.len(), 1 | 2 | 4),
                "vector width must be 1, 2 or 4",
            )?;
            let want = if k.ty(dst[0]) == Ty::B32 && e.is_half() {
                Ty::B32
            } else {
                e.reg_ty()
            };
            expect(dst.iter().all(|&r| k.ty(r) == want), "load type mismatch")
        }
        Inst::St { space, index, src } => {
            let e = mem_elem(*space).ok_or("no such buffer")?;
            expect(t(*index) == Ty::I32, "indices are i32")?;
            expect(
                matches!(src.len(), 1 | 2 | 4),
                "vector width must be 1, 2 or 4",
            )?;
            expect(
                src.iter().all(|&o| t(o) == e.reg_ty()),
                "store type mismatch",
            )
        }
        Inst::AtomAdd { space, index, src } => {
            let e = mem_elem(*space).ok_or("no such buffer")?;
            expect(matches!(space, Space::Global(_)), "atomics are global")?;
            expect(
                matches!(e, Elem::F32 | Elem::I32 | Elem::I64),
                "atomic add type",
            )?;
            expect(
                t(*index) == Ty::I32 && t(*src) == e.reg_ty(),
                "atomic operand types",
            )
        }
        Inst::ShflXor { dst, src, mask } => {
            expect(k.ty(*dst) == k.ty(*src), "shuffle types differ")?;
            expect(
                matches!(k.ty(*dst), Ty::F32 | Ty::I32 | Ty::B32),
                "shuffles move b32",
            )?;
            expect((0..32).contains(mask), "lane mask must be below 32")
        }
        Inst::ShflIdx { dst, src, lane } => {
            expect(k.ty(*dst) == k.ty(*src), "shuffle types differ")?;
            expect(
                matches!(k.ty(*dst), Ty::F32 | Ty::I32 | Ty::B32),
                "shuffles move b32",
            )?;
            expect(t(*lane) == Ty::I32, "the source lane is i32")
        }
        Inst::Bar => Ok(()),
        Inst::SetFlag {
            space,
            index,
            src: value,
        }
        | Inst::WaitFlag {
            space,
            index,
            at_least: value,
        } => {
            expect(
                matches!(space, Space::Global(_)) && mem_elem(*space) == Some(Elem::I32),
                "flags are global i32",
            )?;
            expect(
                t(*index) == Ty::I32 && t(*value) == Ty::I32,
                "flag operands are i32",
            )
        }
        Inst::Round { dst, src, elem } => {
            expect(elem.is_half(), "rounding is to 16-bit floats")?;
            expect(
                k.ty(*dst) == Ty::F32 && k.ty(*src) == Ty::F32,
                "rounding is on f32",
            )
        }
        Inst::Pack { dst, lo, hi, elem } => {
            expect(elem.is_half(), "pack makes 16-bit floats")?;
            expect(
                k.ty(*dst) == Ty::B32 && t(*lo) == Ty::F32 && t(*hi) == Ty::F32,
                "pack",
            )
        }
        Inst::Mma { d, a, b, c, elem } => {
            expect(elem.is_half(), "mma inputs are 16-bit floats")?;
            expect(
                a.iter().chain(b).all(|&r| k.ty(r) == Ty::B32)
                    && d.iter().chain(c).all(|&r| k.ty(r) == Ty::F32),
                "mma fragment types",
            )
        }
        Inst::MbarInit { bar, index, .. } | Inst::MbarArriveExpectTx { bar, index, .. } => {
            check_mbar(*bar, *index)
        }
        Inst::MbarWait { bar, index, parity } => {
            check_mbar(*bar, *index)?;
            expect(t(*parity) == Ty::I32, "the parity is i32")
        }
        Inst::FenceMbarInit
        | Inst::FenceProxyAsync
        | Inst::WgmmaFence
        | Inst::WgmmaCommit
        | Inst::WgmmaWait { .. } => Ok(()),
        Inst::TmaLoad {
            map,
            dst,
            index,
            coords,
            bar,
            bar_index,
        } => {
            let m = k.tensor_maps.get(*map).ok_or("no such tensor map")?;
            expect(
                matches!(dst, Space::Shared(_)),
                "TMA copies into shared memory",
            )?;
            expect(
                mem_elem(*dst) == Some(k.params[m.buffer].elem),
                "the destination's element type differs from the tensor map's",
            )?;
            expect(t(*index) == Ty::I32, "indices are i32")?;
            expect(
                coords.len() == m.dims.len() && coords.iter().all(|&c| t(c) == Ty::I32),
                "one i32 coordinate per tensor-map dimension",
            )?;
            check_mbar(*bar, *bar_index)
        }
        Inst::SharedDesc {
            dst,
            space,
            index,
            layout,
        } => {
            expect(k.ty(*dst) == Ty::I64, "a descriptor is i64")?;
            expect(
                matches!(mem_elem(*space), Some(e) if e.is_half())
                    && matches!(space, Space::Shared(_)),
                "descriptors describe shared 16-bit float arrays",
            )?;
            expect(t(*index) == Ty::I32, "indices are i32")?;
            expect(
                [layout.lbo, layout.sbo]
                    .iter()
                    .all(|&o| o % 16 == 0 && o < 1 << 18),
                "byte offsets are multiples of 16 below 2^18",
            )
        }
        Inst::Wgmma { d, a, b, elem, .. } => {
            expect(elem.is_half(), "wgmma inputs are 16-bit floats here")?;
            expect(
                k.ty(*a) == Ty::I64 && k.ty(*b) == Ty::I64,
                "operands are i64 descriptors",
            )?;
            let n = d.len() * 2;
            expect(
                n % 8 == 0 && (8..=256).contains(&n),
                "N = 2 × accumulators must be a multiple of 8 from 8 to 256",
            )?;
            expect(
                d.iter().all(|&r| k.ty(r) == Ty::F32),
                "accumulators are f32",
            )
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ty::Pred => "pred",
            Ty::I32 => "i32",
            Ty::I64 => "i64",
            Ty::F32 => "f32",
            Ty::B32 => "b32",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::build::KernelBuilder;

    #[test]
    fn written_params_finds_stores_atomics_and_flags_in_nested_code() {
        let mut b = KernelBuilder::new("k", 32);
        let out = b.param("out", Elem::F32, 4);
        let read = b.param("read", Elem::F32, 4);
        let acc = b.param("acc", Elem::F32, 4);
        let tid = b.special(Special::Tid);
        let x = b.ld(read, tid);
        b.st(out, tid, x);
        let first = b.setp(Cmp::Eq, tid, 0);
        b.if_then(first, |b| b.atom_add(acc, 0, x));
        let k = b.finish();
        assert_eq!(k.written_params(), [0, 2]);
    }
}
