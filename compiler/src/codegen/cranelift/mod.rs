//! Cranelift JIT for pointwise kernels of the kernel IR.
//!
//! Each kernel becomes one native function that computes one *row* (a run along the
//! innermost axis) of its output:
//!
//! ```text
//! extern "C" fn(ptrs: *const *const u8, // input buffers, in `kernel.inputs` order
//!               bases: *const i64,      // per expression: element offset of a load at the row start
//!               inner: *const i64,      // per expression: element stride of a load along the row
//!               outer: *const i64,      // per kernel axis: the row's index on that axis
//!               out: *mut u8,           // the output row
//!               len: i64)               // elements in the row
//! ```
//!
//! The caller walks the rows (and spreads them over threads); all expressions are kept
//! in registers inside the loop. Element types: f32 for floats, i64 for integers (i32
//! values are wrapped to 32 bits after each operation, as the interpreter does), u8 for
//! booleans. Transcendental functions call into Rust's implementations.
//!
//! `scalar.rs` emits the loop body for one element; `vector.rs` emits it for four
//! (`f32x4`) when every access allows it, and then the scalar body runs the row's tail.

mod scalar;
pub(crate) mod vector;

use crate::ir::ops::unary::Cranelift;
use crate::ir::ops::UnaryOp;
use crate::ir::DType;
use crate::kernel::{Expr, PointwiseKernel};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, InstBuilder, MemFlagsData, SigRef, Type, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

/// The signature of a compiled row function.
pub type RowFn =
    unsafe extern "C" fn(*const *const u8, *const i64, *const i64, *const i64, *mut u8, i64);

/// A compiled kernel; owns its executable memory.
pub struct JitKernel {
    // Kept alive for `row`: dropping the module would unmap the code.
    _module: JITModule,
    row: RowFn,
}

impl std::fmt::Debug for JitKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitKernel")
    }
}

// SAFETY: the module is only read after finalisation and the function is pure.
unsafe impl Send for JitKernel {}
unsafe impl Sync for JitKernel {}

impl JitKernel {
    /// The row function.
    pub fn row(&self) -> RowFn {
        self.row
    }
}

extern "C" fn smelt_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

/// The constant `c` of `like`'s type (an f32 or an `f32x4` splat).
pub(crate) fn const_like(b: &mut FunctionBuilder, like: Value, c: f32) -> Value {
    let s = b.ins().f32const(c);
    let ty = b.func.dfg.value_type(like);
    if ty.is_vector() {
        b.ins().splat(ty, s)
    } else {
        s
    }
}

fn ty(dt: DType) -> Type {
    if dt.is_float() {
        types::F32
    } else if dt.is_int() {
        types::I64
    } else {
        types::I8
    }
}

fn size(dt: DType) -> i64 {
    if dt.is_float() {
        4
    } else if dt.is_int() {
        8
    } else {
        1
    }
}

/// True if `k` is compiled with `f32x4` vectors (four elements per iteration, then a
/// scalar tail), false if it runs one element at a time.
pub fn vectorized(k: &PointwiseKernel) -> bool {
    vector::vectorizable(k)
}

/// Why Cranelift could not compile a kernel, with Cranelift's own message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JitError {
    /// This machine's instruction set or the code generator's settings were refused.
    #[error("cranelift: {0}")]
    Target(String),
    /// Declaring the kernel or the math functions it calls failed.
    #[error("cranelift: {0}")]
    Declare(String),
    /// Generating or linking the kernel's code failed.
    #[error("cranelift: {0}")]
    Codegen(String),
}

/// Compiles `k` (whose floats must all be f32) to native code for this machine.
pub fn compile(k: &PointwiseKernel) -> Result<JitKernel, JitError> {
    let target = |e: &dyn std::fmt::Display| JitError::Target(e.to_string());
    let declare = |e: cranelift_module::ModuleError| JitError::Declare(e.to_string());
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| target(&e))?;
    flags.set("is_pic", "false").map_err(|e| target(&e))?;
    let isa = cranelift_native::builder()
        .map_err(|e| target(&e))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| target(&e))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    jb.symbol("smelt_powf", smelt_powf as *const u8);
    let mut module = JITModule::new(jb);
    let ptr = module.target_config().pointer_type();
    let mut ctx = module.make_context();
    for _ in 0..5 {
        ctx.func.signature.params.push(AbiParam::new(ptr));
    }
    ctx.func.signature.params.push(AbiParam::new(types::I64));

    // External math functions, declared once per module.
    let mut unary_sig = module.make_signature();
    unary_sig.params.push(AbiParam::new(types::F32));
    unary_sig.returns.push(AbiParam::new(types::F32));
    let mut binary_sig = unary_sig.clone();
    binary_sig.params.push(AbiParam::new(types::F32));
    let pow_id = module
        .declare_function("smelt_powf", Linkage::Import, &binary_sig)
        .map_err(declare)?;
    let id = module
        .declare_function("row", Linkage::Export, &ctx.func.signature)
        .map_err(declare)?;

    let frontend_config = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let unary_sig = b.import_signature(unary_sig);
        let pow_ref = module.declare_func_in_func(pow_id, b.func);
        let entry = b.create_block();
        let vheader = b.create_block();
        let vbody = b.create_block();
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.append_block_param(vheader, types::I64);
        b.append_block_param(header, types::I64);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let (ptrs, bases, inner, outer, out, len) = (p[0], p[1], p[2], p[3], p[4], p[5]);
        let flags = MemFlagsData::trusted();
        // Loop-invariant parts of every load: the row's start address and byte stride.
        let mut load_at = vec![None; k.exprs.len()];
        for (i, (e, dt)) in k.exprs.iter().enumerate() {
            if let Expr::Load { input, .. } = e {
                let buf = b.ins().load(ptr, flags, ptrs, (*input * 8) as i32);
                let base = b.ins().load(types::I64, flags, bases, (i * 8) as i32);
                let stride = b.ins().load(types::I64, flags, inner, (i * 8) as i32);
                let base_bytes = b.ins().imul_imm_s(base, size(*dt));
                let start = b.ins().iadd(buf, base_bytes);
                let stride_bytes = b.ins().imul_imm_s(stride, size(*dt));
                load_at[i] = Some((start, stride_bytes));
            }
        }
        let env = Env {
            load_at,
            outer,
            out,
            flags,
            ptr,
            unary_sig,
            pow_ref,
        };
        let zero = b.ins().iconst(types::I64, 0);
        let vectorize = vector::vectorizable(k);
        b.ins()
            .jump(if vectorize { vheader } else { header }, &[zero.into()]);

        // Four elements while at least four remain ...
        b.switch_to_block(vheader);
        let j = b.block_params(vheader)[0];
        let next = b.ins().iadd_imm_s(j, vector::LANES);
        let fits = b.ins().icmp(IntCC::SignedLessThanOrEqual, next, len);
        b.ins().brif(fits, vbody, &[], header, &[j.into()]);
        b.switch_to_block(vbody);
        if vectorize {
            vector::emit_quad(&mut b, &env, k, j).map_err(JitError::Codegen)?;
        }
        b.ins().jump(vheader, &[next.into()]);

        // ... then one at a time.
        b.switch_to_block(header);
        let j = b.block_params(header)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, j, len);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        scalar::emit_element(&mut b, &env, k, j).map_err(JitError::Codegen)?;
        let next = b.ins().iadd_imm_s(j, 1);
        b.ins().jump(header, &[next.into()]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| JitError::Codegen(format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    module
        .finalize_definitions()
        .map_err(|e| JitError::Codegen(e.to_string()))?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function was just defined with exactly the `RowFn` signature.
    let row = unsafe { std::mem::transmute::<*const u8, RowFn>(code) };
    Ok(JitKernel {
        _module: module,
        row,
    })
}

/// What the loop bodies share: per-load row addresses, the function's pointers and
/// the math functions they call.
pub(super) struct Env {
    /// Per expression: a load's start address in the row and its byte stride.
    load_at: Vec<Option<(Value, Value)>>,
    /// Per kernel axis: the row's index on that axis.
    outer: Value,
    /// The output row.
    out: Value,
    /// Flags of scalar accesses (aligned, non-trapping).
    flags: MemFlagsData,
    /// The pointer type, for the addresses of called functions.
    ptr: Type,
    /// `fn(f32) -> f32`, the signature of a unary op's `f32` entry.
    unary_sig: SigRef,
    pow_ref: FuncRef,
}

impl Env {
    /// The row's index on outer kernel axis `a`.
    fn outer_index(&self, b: &mut FunctionBuilder, a: usize) -> Value {
        b.ins()
            .load(types::I64, self.flags, self.outer, (a * 8) as i32)
    }

    /// Calls the op's `f32` entry of the unary op table on an f32 (by address: the
    /// table's functions live in this process, as the JIT code does).
    fn call_unary(&self, b: &mut FunctionBuilder, op: UnaryOp, x: Value) -> Value {
        let addr = b.ins().iconst(self.ptr, op.def().f32 as usize as i64);
        let call = b.ins().call_indirect(self.unary_sig, addr, &[x]);
        b.inst_results(call)[0]
    }

    /// `op x` on an f32 or an `f32x4` (`vector`), as the op's table entry says.
    fn unary(&self, b: &mut FunctionBuilder, op: UnaryOp, x: Value, vector: bool) -> Value {
        match op.def().cranelift {
            Cranelift::Inline(emit) => emit(b, x),
            Cranelift::Call {
                vector: Some(emit), ..
            } if vector => emit(b, x),
            Cranelift::Call { .. } if vector => {
                vector::per_lane(b, &[x], |b, a| self.call_unary(b, op, a[0]))
            }
            Cranelift::Call { .. } => self.call_unary(b, op, x),
        }
    }

    /// Calls `powf` on two f32s.
    fn call_pow(&self, b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
        let call = b.ins().call(self.pow_ref, &[x, y]);
        b.inst_results(call)[0]
    }
}
