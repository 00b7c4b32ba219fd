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

use crate::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use crate::ir::DType;
use crate::kernel::{Expr, PointwiseKernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type, Value};
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

extern "C" fn smelt_expf(x: f32) -> f32 {
    x.exp()
}
extern "C" fn smelt_logf(x: f32) -> f32 {
    x.ln()
}
extern "C" fn smelt_tanhf(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn smelt_erff(x: f32) -> f32 {
    libm::erff(x)
}
extern "C" fn smelt_sinf(x: f32) -> f32 {
    x.sin()
}
extern "C" fn smelt_cosf(x: f32) -> f32 {
    x.cos()
}
extern "C" fn smelt_powf(x: f32, y: f32) -> f32 {
    x.powf(y)
}

const UNARY_CALLS: [(UnaryOp, &str); 6] = [
    (UnaryOp::Exp, "smelt_expf"),
    (UnaryOp::Log, "smelt_logf"),
    (UnaryOp::Tanh, "smelt_tanhf"),
    (UnaryOp::Erf, "smelt_erff"),
    (UnaryOp::Sin, "smelt_sinf"),
    (UnaryOp::Cos, "smelt_cosf"),
];

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

/// Compiles `k` (whose floats must all be f32) to native code for this machine.
pub fn compile(k: &PointwiseKernel) -> Result<JitKernel, String> {
    let err = |e: &dyn std::fmt::Display| format!("cranelift: {e}");
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| err(&e))?;
    flags.set("is_pic", "false").map_err(|e| err(&e))?;
    let isa = cranelift_native::builder()
        .map_err(|e| err(&e))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| err(&e))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    jb.symbol("smelt_expf", smelt_expf as *const u8);
    jb.symbol("smelt_logf", smelt_logf as *const u8);
    jb.symbol("smelt_tanhf", smelt_tanhf as *const u8);
    jb.symbol("smelt_erff", smelt_erff as *const u8);
    jb.symbol("smelt_sinf", smelt_sinf as *const u8);
    jb.symbol("smelt_cosf", smelt_cosf as *const u8);
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
    let mut unary_ids = Vec::new();
    for (op, name) in UNARY_CALLS {
        unary_ids.push((
            op,
            module
                .declare_function(name, Linkage::Import, &unary_sig)
                .map_err(|e| err(&e))?,
        ));
    }
    let pow_id = module
        .declare_function("smelt_powf", Linkage::Import, &binary_sig)
        .map_err(|e| err(&e))?;
    let id = module
        .declare_function("row", Linkage::Export, &ctx.func.signature)
        .map_err(|e| err(&e))?;

    let frontend_config = module.target_config();
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let unary_refs: Vec<_> = unary_ids
            .iter()
            .map(|(op, f)| (*op, module.declare_func_in_func(*f, b.func)))
            .collect();
        let pow_ref = module.declare_func_in_func(pow_id, b.func);
        let entry = b.create_block();
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_params_for_function_params(entry);
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
        let zero = b.ins().iconst(types::I64, 0);
        b.ins().jump(header, &[zero.into()]);

        b.switch_to_block(header);
        let j = b.block_params(header)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, j, len);
        b.ins().brif(more, body, &[], exit, &[]);

        b.switch_to_block(body);
        let mut vals: Vec<Value> = Vec::with_capacity(k.exprs.len());
        for (i, (e, dt)) in k.exprs.iter().enumerate() {
            let t = ty(*dt);
            let wrap = |b: &mut FunctionBuilder, v: Value| {
                if *dt == DType::I32 {
                    let up = b.ins().ishl_imm_s(v, 32);
                    b.ins().sshr_imm_s(up, 32)
                } else {
                    v
                }
            };
            let v = match e {
                Expr::Load { .. } => {
                    let (start, stride) = load_at[i].expect("set for loads");
                    let off = b.ins().imul(j, stride);
                    let addr = b.ins().iadd(start, off);
                    b.ins().load(t, flags, addr, 0)
                }
                Expr::Const(c) => constant(&mut b, *dt, *c),
                Expr::Index(axis) => {
                    let index = match axis {
                        Some(a) if is_innermost(k, *a) => j,
                        Some(a) => b.ins().load(types::I64, flags, outer, (*a * 8) as i32),
                        None => zero,
                    };
                    from_i64(&mut b, *dt, index)
                }
                Expr::Unary(op, x) => {
                    let x = vals[*x];
                    if t == types::I64 {
                        let r = match op {
                            UnaryOp::Neg => b.ins().ineg(x),
                            _ => b.ins().iabs(x),
                        };
                        wrap(&mut b, r)
                    } else {
                        match op {
                            UnaryOp::Neg => b.ins().fneg(x),
                            UnaryOp::Abs => b.ins().fabs(x),
                            UnaryOp::Sqrt => b.ins().sqrt(x),
                            UnaryOp::Rsqrt => {
                                let s = b.ins().sqrt(x);
                                let one = b.ins().f32const(1.0);
                                b.ins().fdiv(one, s)
                            }
                            UnaryOp::Recip => {
                                let one = b.ins().f32const(1.0);
                                b.ins().fdiv(one, x)
                            }
                            other => {
                                let f = unary_refs
                                    .iter()
                                    .find(|(o, _)| o == other)
                                    .expect("every other unary op calls out")
                                    .1;
                                let call = b.ins().call(f, &[x]);
                                b.inst_results(call)[0]
                            }
                        }
                    }
                }
                Expr::Binary(op, l, r) => {
                    let (l, r) = (vals[*l], vals[*r]);
                    if t == types::I64 {
                        let v = match op {
                            BinaryOp::Add => b.ins().iadd(l, r),
                            BinaryOp::Sub => b.ins().isub(l, r),
                            BinaryOp::Mul => b.ins().imul(l, r),
                            BinaryOp::Max => b.ins().smax(l, r),
                            BinaryOp::Min => b.ins().smin(l, r),
                            BinaryOp::Div | BinaryOp::Pow => {
                                return Err(format!("integer {} is not fused", op.name()))
                            }
                        };
                        wrap(&mut b, v)
                    } else {
                        match op {
                            BinaryOp::Add => b.ins().fadd(l, r),
                            BinaryOp::Sub => b.ins().fsub(l, r),
                            BinaryOp::Mul => b.ins().fmul(l, r),
                            BinaryOp::Div => b.ins().fdiv(l, r),
                            BinaryOp::Max => b.ins().fmax(l, r),
                            BinaryOp::Min => b.ins().fmin(l, r),
                            BinaryOp::Pow => {
                                let call = b.ins().call(pow_ref, &[l, r]);
                                b.inst_results(call)[0]
                            }
                        }
                    }
                }
                Expr::Compare(op, l, r) => {
                    let operand = k.exprs[*l].1;
                    let (l, r) = (vals[*l], vals[*r]);
                    if operand.is_float() {
                        let cc = match op {
                            CompareOp::Eq => FloatCC::Equal,
                            CompareOp::Ne => FloatCC::NotEqual,
                            CompareOp::Lt => FloatCC::LessThan,
                            CompareOp::Le => FloatCC::LessThanOrEqual,
                            CompareOp::Gt => FloatCC::GreaterThan,
                            CompareOp::Ge => FloatCC::GreaterThanOrEqual,
                        };
                        b.ins().fcmp(cc, l, r)
                    } else {
                        let cc = match op {
                            CompareOp::Eq => IntCC::Equal,
                            CompareOp::Ne => IntCC::NotEqual,
                            CompareOp::Lt => IntCC::SignedLessThan,
                            CompareOp::Le => IntCC::SignedLessThanOrEqual,
                            CompareOp::Gt => IntCC::SignedGreaterThan,
                            CompareOp::Ge => IntCC::SignedGreaterThanOrEqual,
                        };
                        b.ins().icmp(cc, l, r)
                    }
                }
                Expr::Select(c, x, y) => b.ins().select(vals[*c], vals[*x], vals[*y]),
                Expr::Cast(x) => {
                    let from = k.exprs[*x].1;
                    cast(&mut b, vals[*x], from, *dt)
                }
            };
            vals.push(v);
        }
        let (_, out_dt) = *k.exprs.last().ok_or("an empty kernel")?;
        let off = b.ins().imul_imm_s(j, size(out_dt));
        let addr = b.ins().iadd(out, off);
        b.ins()
            .store(flags, *vals.last().expect("non-empty"), addr, 0);
        let next = b.ins().iadd_imm_s(j, 1);
        b.ins().jump(header, &[next.into()]);

        b.switch_to_block(exit);
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| err(&format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| err(&e))?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function was just defined with exactly the `RowFn` signature.
    let row = unsafe { std::mem::transmute::<*const u8, RowFn>(code) };
    Ok(JitKernel {
        _module: module,
        row,
    })
}

/// True if kernel axis `a` is the innermost one (the row).
fn is_innermost(k: &PointwiseKernel, a: usize) -> bool {
    a + 1 == k.rank
}

fn constant(b: &mut FunctionBuilder, dt: DType, c: f64) -> Value {
    if dt.is_float() {
        b.ins().f32const(c as f32)
    } else if dt.is_int() {
        let v = if dt == DType::I32 {
            c as i64 as i32 as i64
        } else {
            c as i64
        };
        b.ins().iconst(types::I64, v)
    } else {
        b.ins().iconst(types::I8, i64::from(c != 0.0))
    }
}

fn from_i64(b: &mut FunctionBuilder, dt: DType, v: Value) -> Value {
    if dt.is_float() {
        b.ins().fcvt_from_sint(types::F32, v)
    } else if dt.is_int() {
        v
    } else {
        b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
    }
}

fn cast(b: &mut FunctionBuilder, v: Value, from: DType, to: DType) -> Value {
    let wrap = |b: &mut FunctionBuilder, v: Value| {
        if to == DType::I32 {
            let up = b.ins().ishl_imm_s(v, 32);
            b.ins().sshr_imm_s(up, 32)
        } else {
            v
        }
    };
    match (from.is_float(), from.is_int(), to.is_float(), to.is_int()) {
        (true, _, true, _) => v,
        (true, _, _, true) => {
            let i = b.ins().fcvt_to_sint_sat(types::I64, v);
            wrap(b, i)
        }
        (true, _, _, _) => {
            let zero = b.ins().f32const(0.0);
            b.ins().fcmp(FloatCC::NotEqual, v, zero)
        }
        (_, true, true, _) => b.ins().fcvt_from_sint(types::F32, v),
        (_, true, _, true) => wrap(b, v),
        (_, true, _, _) => b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
        (_, _, true, _) => {
            let wide = b.ins().uextend(types::I64, v);
            b.ins().fcvt_from_sint(types::F32, wide)
        }
        (_, _, _, true) => b.ins().uextend(types::I64, v),
        _ => v,
    }
}
