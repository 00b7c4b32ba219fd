//! Building kernels in code: registers are allocated on demand, structured control flow
//! takes closures, and every helper returns the register it defines.

use super::kir::*;

/// Builds one [`Kernel`].
pub struct KernelBuilder {
    kernel: Kernel,
    /// Open blocks: the innermost receives new statements.
    blocks: Vec<Vec<Stmt>>,
}

impl KernelBuilder {
    /// A kernel named `name` for blocks of `block` threads.
    pub fn new(name: &str, block: u32) -> KernelBuilder {
        KernelBuilder {
            kernel: Kernel {
                name: name.to_string(),
                params: Vec::new(),
                shared: Vec::new(),
                tensor_maps: Vec::new(),
                regs: Vec::new(),
                body: Vec::new(),
                block,
                min_blocks_per_sm: None,
                needs_sm90a: false,
            },
            blocks: vec![Vec::new()],
        }
    }

    /// Threads per block.
    pub fn block(&self) -> u32 {
        self.kernel.block
    }

    /// Declares a global buffer parameter of `len` elements.
    pub fn param(&mut self, name: &str, elem: Elem, len: usize) -> Space {
        self.kernel.params.push(BufferParam {
            name: name.to_string(),
            elem,
            len,
        });
        Space::Global(self.kernel.params.len() - 1)
    }

    /// Declares a shared array of `len` elements.
    pub fn shared(&mut self, name: &str, elem: Elem, len: usize) -> Space {
        self.shared_aligned(name, elem, len, 16)
    }

    /// Declares a shared array of `len` elements starting at a multiple of `align` bytes.
    pub fn shared_aligned(&mut self, name: &str, elem: Elem, len: usize, align: usize) -> Space {
        self.kernel.shared.push(SharedArray {
            name: name.to_string(),
            elem,
            len,
            align,
        });
        Space::Shared(self.kernel.shared.len() - 1)
    }

    /// Declares a tensor map over the buffer parameter `buffer` (a `Space::Global`);
    /// returns its index for [`Inst::TmaLoad`].
    pub fn tensor_map(
        &mut self,
        name: &str,
        buffer: Space,
        dims: Vec<u64>,
        strides: Vec<u64>,
        box_dims: Vec<u32>,
    ) -> usize {
        let Space::Global(buffer) = buffer else {
            panic!("a tensor map views a global buffer")
        };
        self.kernel.tensor_maps.push(TensorMap {
            name: name.to_string(),
            buffer,
            dims,
            strides,
            box_dims,
            swizzle: Swizzle::None,
        });
        self.kernel.tensor_maps.len() - 1
    }

    /// Asks for `n` resident blocks per SM (`.minnctapersm`).
    pub fn min_blocks_per_sm(&mut self, n: u32) {
        self.kernel.min_blocks_per_sm = Some(n);
    }

    /// A fresh register.
    pub fn reg(&mut self, ty: Ty) -> Reg {
        self.kernel.regs.push(ty);
        Reg(self.kernel.regs.len() as u32 - 1)
    }

    /// The type of an operand.
    pub fn ty(&self, o: impl Into<Operand>) -> Ty {
        self.kernel.operand_ty(o.into())
    }

    /// The element type of a memory space.
    pub fn elem(&self, s: Space) -> Elem {
        match s {
            Space::Global(p) => self.kernel.params[p].elem,
            Space::Shared(a) => self.kernel.shared[a].elem,
        }
    }

    /// Appends an instruction.
    pub fn push(&mut self, i: Inst) {
        self.blocks
            .last_mut()
            .expect("a block is open")
            .push(Stmt::Inst(i));
    }

    /// `dst = special register`.
    pub fn special(&mut self, reg: Special) -> Reg {
        let dst = self.reg(Ty::I32);
        self.push(Inst::Special { dst, reg });
        dst
    }

    /// A new register holding `src`.
    pub fn mov(&mut self, src: impl Into<Operand>) -> Reg {
        let src = src.into();
        let dst = self.reg(self.ty(src));
        self.push(Inst::Mov { dst, src });
        dst
    }

    /// `dst = src` for an existing register.
    pub fn assign(&mut self, dst: Reg, src: impl Into<Operand>) {
        self.push(Inst::Mov {
            dst,
            src: src.into(),
        });
    }

    /// `op a`.
    pub fn un(&mut self, op: UnOp, a: impl Into<Operand>) -> Reg {
        let src = a.into();
        let dst = self.reg(self.ty(src));
        self.push(Inst::Unary { op, dst, src });
        dst
    }

    /// `a op b` (the result has `a`'s type).
    pub fn bin(&mut self, op: BinOp, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let (a, b) = (a.into(), b.into());
        let dst = self.reg(self.ty(a));
        self.push(Inst::Binary { op, dst, a, b });
        dst
    }

    /// `dst = dst op b`, in place (accumulators).
    pub fn update(&mut self, op: BinOp, dst: Reg, b: impl Into<Operand>) {
        self.push(Inst::Binary {
            op,
            dst,
            a: dst.into(),
            b: b.into(),
        });
    }

    /// `a + b`.
    pub fn add(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Add, a, b)
    }

    /// `a * b` (a register times the integer 1 is the register itself).
    pub fn mul(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        match (a.into(), b.into()) {
            (Operand::Reg(r), Operand::I32(1)) => r,
            (a, b) => self.bin(BinOp::Mul, a, b),
        }
    }

    /// `a / b` (integers: toward zero; a register over the integer 1 is itself).
    pub fn div(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        match (a.into(), b.into()) {
            (Operand::Reg(r), Operand::I32(1)) => r,
            (a, b) => self.bin(BinOp::Div, a, b),
        }
    }

    /// `a % b`.
    pub fn rem(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Rem, a, b)
    }

    /// `a * b + c`.
    pub fn fma(
        &mut self,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) -> Reg {
        let dst = self.reg(Ty::F32);
        self.push(Inst::Fma {
            dst,
            a: a.into(),
            b: b.into(),
            c: c.into(),
        });
        dst
    }

    /// `a cmp b` as a predicate.
    pub fn setp(&mut self, cmp: Cmp, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let dst = self.reg(Ty::Pred);
        self.push(Inst::Setp {
            cmp,
            dst,
            a: a.into(),
            b: b.into(),
        });
        dst
    }

    /// `cond ? a : b`.
    pub fn selp(&mut self, cond: Reg, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let (a, b) = (a.into(), b.into());
        let dst = self.reg(self.ty(a));
        self.push(Inst::Selp { dst, a, b, cond });
        dst
    }

    /// `src` converted to `ty`.
    pub fn cvt(&mut self, ty: Ty, src: Reg) -> Reg {
        if self.ty(src) == ty {
            return src;
        }
        let dst = self.reg(ty);
        self.push(Inst::Cvt { dst, src });
        dst
    }

    /// Loads one element.
    pub fn ld(&mut self, space: Space, index: impl Into<Operand>) -> Reg {
        self.ld_vec(space, index, 1)[0]
    }

    /// Loads `n` consecutive elements (a vector access; `index` must be a multiple of `n`).
    pub fn ld_vec(&mut self, space: Space, index: impl Into<Operand>, n: usize) -> Vec<Reg> {
        let ty = self.elem(space).reg_ty();
        let dst: Vec<Reg> = (0..n).map(|_| self.reg(ty)).collect();
        self.push(Inst::Ld {
            dst: dst.clone(),
            space,
            index: index.into(),
        });
        dst
    }

    /// Loads two consecutive 16-bit floats packed in one `b32` (even `index`).
    pub fn ld_pair(&mut self, space: Space, index: impl Into<Operand>) -> Reg {
        let dst = self.reg(Ty::B32);
        self.push(Inst::Ld {
            dst: vec![dst],
            space,
            index: index.into(),
        });
        dst
    }

    /// Stores one element.
    pub fn st(&mut self, space: Space, index: impl Into<Operand>, v: impl Into<Operand>) {
        self.push(Inst::St {
            space,
            index: index.into(),
            src: vec![v.into()],
        });
    }

    /// Stores consecutive elements (a vector access).
    pub fn st_vec(&mut self, space: Space, index: impl Into<Operand>, v: Vec<Operand>) {
        self.push(Inst::St {
            space,
            index: index.into(),
            src: v,
        });
    }

    /// `mem[index] += v` atomically.
    pub fn atom_add(&mut self, space: Space, index: impl Into<Operand>, v: impl Into<Operand>) {
        self.push(Inst::AtomAdd {
            space,
            index: index.into(),
            src: v.into(),
        });
    }

    /// The value of `src` in lane `laneid ^ mask`.
    pub fn shfl_xor(&mut self, src: Reg, mask: i32) -> Reg {
        let dst = self.reg(self.ty(src));
        self.push(Inst::ShflXor { dst, src, mask });
        dst
    }

    /// The value of `src` in lane `lane`.
    pub fn shfl_idx(&mut self, src: Reg, lane: impl Into<Operand>) -> Reg {
        let dst = self.reg(self.ty(src));
        self.push(Inst::ShflIdx {
            dst,
            src,
            lane: lane.into(),
        });
        dst
    }

    /// A block-wide barrier.
    pub fn bar(&mut self) {
        self.push(Inst::Bar);
    }

    /// Packs two f32 into one `b32` of 16-bit floats.
    pub fn pack(&mut self, lo: impl Into<Operand>, hi: impl Into<Operand>, elem: Elem) -> Reg {
        let dst = self.reg(Ty::B32);
        self.push(Inst::Pack {
            dst,
            lo: lo.into(),
            hi: hi.into(),
            elem,
        });
        dst
    }

    fn nested(&mut self, body: impl FnOnce(&mut Self)) -> Vec<Stmt> {
        self.blocks.push(Vec::new());
        body(self);
        self.blocks.pop().expect("the block opened above")
    }

    /// Runs `then` in the threads where `cond` holds.
    pub fn if_then(&mut self, cond: Reg, then: impl FnOnce(&mut Self)) {
        self.if_else(cond, then, |_| {});
    }

    /// Runs `then` where `cond` holds and `otherwise` elsewhere.
    pub fn if_else(
        &mut self,
        cond: Reg,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let then = self.nested(then);
        let otherwise = self.nested(otherwise);
        self.blocks
            .last_mut()
            .expect("a block is open")
            .push(Stmt::If {
                cond,
                then,
                otherwise,
            });
    }

    /// `for (i = from; i < to; i += step) body(i)` on `i32`.
    pub fn for_range(
        &mut self,
        from: impl Into<Operand>,
        to: impl Into<Operand>,
        step: impl Into<Operand>,
        body: impl FnOnce(&mut Self, Reg),
    ) {
        let var = self.reg(Ty::I32);
        let body = self.nested(|b| body(b, var));
        self.blocks
            .last_mut()
            .expect("a block is open")
            .push(Stmt::Loop {
                var,
                from: from.into(),
                to: to.into(),
                step: step.into(),
                body,
            });
    }

    /// The grid-stride loop: `body(i)` for every `i` in `0..n`, spread over all threads
    /// of the grid, whatever the grid's size (so the SM plan may cap it).
    pub fn grid_stride(&mut self, n: usize, body: impl FnOnce(&mut Self, Reg)) {
        self.grid_stride_by(n, 1, body);
    }

    /// Like [`KernelBuilder::grid_stride`] with `per` consecutive threads per item
    /// (a warp per row: `per = 32`); `body` gets the item index.
    pub fn grid_stride_by(&mut self, n: usize, per: u32, body: impl FnOnce(&mut Self, Reg)) {
        let tid = self.special(Special::Tid);
        let ntid = self.special(Special::Ntid);
        let ctaid = self.special(Special::Ctaid);
        let nctaid = self.special(Special::Nctaid);
        let per_block = self.div(ntid, per as i32);
        let first = self.mul(ctaid, per_block);
        let mine = self.div(tid, per as i32);
        let first = self.add(first, mine);
        let stride = self.mul(nctaid, per_block);
        self.for_range(first, i32_of(n), stride, body);
    }

    /// The finished kernel (its typing is checked: a failure is a bug in a lowering).
    pub fn finish(mut self) -> Kernel {
        assert_eq!(self.blocks.len(), 1, "unbalanced blocks");
        self.kernel.body = self.blocks.pop().expect("the top block");
        self.kernel.needs_sm90a = self.kernel.uses_sm90a_instructions();
        if let Err(e) = self.kernel.check() {
            panic!("generated an ill-typed kernel: {e}");
        }
        self.kernel
    }
}

/// `n` as an `i32` immediate; sizes above 2^31 - 1 elements are rejected before lowering.
pub fn i32_of(n: usize) -> i32 {
    i32::try_from(n).expect("sizes are checked against i32::MAX before lowering")
}

impl KernelBuilder {
    /// Sets the global i32 flag at `index` to `v`, publishing earlier writes.
    pub fn set_flag(&mut self, space: Space, index: impl Into<Operand>, v: impl Into<Operand>) {
        self.push(Inst::SetFlag {
            space,
            index: index.into(),
            src: v.into(),
        });
    }

    /// Spins until the global i32 flag at `index` is at least `at_least`.
    pub fn wait_flag(
        &mut self,
        space: Space,
        index: impl Into<Operand>,
        at_least: impl Into<Operand>,
    ) {
        self.push(Inst::WaitFlag {
            space,
            index: index.into(),
            at_least: at_least.into(),
        });
    }

    /// `src` rounded to the precision of the 16-bit float `elem`.
    pub fn round(&mut self, src: Reg, elem: Elem) -> Reg {
        let dst = self.reg(Ty::F32);
        self.push(Inst::Round { dst, src, elem });
        dst
    }
}

impl KernelBuilder {
    /// Combines `acc` across the warp with `op`, in place: a butterfly of shuffles, after
    /// which every lane holds the warp's result. The one warp reduction every kernel
    /// family uses.
    pub fn warp_combine(&mut self, op: BinOp, acc: Reg) {
        for mask in [16, 8, 4, 2, 1] {
            let other = self.shfl_xor(acc, mask);
            self.update(op, acc, other);
        }
    }

    /// The element of `space` at the index `index` computes, where `cond` holds; 0
    /// elsewhere. The index is computed only where the load happens, so it may be out
    /// of range in the other threads.
    pub fn ld_if(
        &mut self,
        cond: Reg,
        space: Space,
        index: impl FnOnce(&mut Self) -> Operand,
    ) -> Reg {
        let zero = match self.elem(space).reg_ty() {
            Ty::I32 => Operand::I32(0),
            Ty::I64 => Operand::I64(0),
            _ => Operand::F32(0.0),
        };
        let value = self.mov(zero);
        self.if_then(cond, |b| {
            let at = index(b);
            let x = b.ld(space, at);
            b.assign(value, x);
        });
        value
    }
}

impl KernelBuilder {
    /// The wgmma descriptor of the operand at element `index` of shared `space`.
    pub fn shared_desc(
        &mut self,
        space: Space,
        index: impl Into<Operand>,
        layout: DescLayout,
    ) -> Reg {
        let dst = self.reg(Ty::I64);
        self.push(Inst::SharedDesc {
            dst,
            space,
            index: index.into(),
            layout,
        });
        dst
    }

    /// Waits for the phase of parity `parity` of mbarrier `index` of `bar`.
    pub fn mbar_wait(&mut self, bar: Space, index: impl Into<Operand>, parity: impl Into<Operand>) {
        self.push(Inst::MbarWait {
            bar,
            index: index.into(),
            parity: parity.into(),
        });
    }
}
