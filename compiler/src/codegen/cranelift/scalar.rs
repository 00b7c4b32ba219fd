//! One element per iteration: the general row loop body, for every kernel (and the
//! tail of vectorised ones).

use super::{size, ty, Env};
use crate::ir::ops::unary::IntUnary;
use crate::ir::ops::{BinaryOp, CompareOp};
use crate::ir::DType;
use crate::kernel::{Expr, PointwiseKernel};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// Emits the kernel's expressions for element `j` of the row and stores the result.
pub(super) fn emit_element(
    b: &mut FunctionBuilder,
    env: &Env,
    k: &PointwiseKernel,
    j: Value,
) -> Result<(), String> {
    let mut vals: Vec<Value> = Vec::with_capacity(k.exprs.len());
    for (i, (e, dt)) in k.exprs.iter().enumerate() {
        let v = expr(b, env, k, i, e, *dt, &vals, j)?;
        vals.push(v);
    }
    let (_, out_dt) = *k.exprs.last().ok_or("an empty kernel")?;
    let off = b.ins().imul_imm_s(j, size(out_dt));
    let addr = b.ins().iadd(env.out, off);
    b.ins()
        .store(env.flags, *vals.last().expect("non-empty"), addr, 0);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn expr(
    b: &mut FunctionBuilder,
    env: &Env,
    k: &PointwiseKernel,
    i: usize,
    e: &Expr,
    dt: DType,
    vals: &[Value],
    j: Value,
) -> Result<Value, String> {
    let t = ty(dt);
    let wrap = |b: &mut FunctionBuilder, v: Value| {
        if dt == DType::I32 {
            let up = b.ins().ishl_imm_s(v, 32);
            b.ins().sshr_imm_s(up, 32)
        } else {
            v
        }
    };
    Ok(match e {
        Expr::Load { .. } => {
            let (start, stride) = env.load_at[i].expect("set for loads");
            let off = b.ins().imul(j, stride);
            let addr = b.ins().iadd(start, off);
            b.ins().load(t, env.flags, addr, 0)
        }
        Expr::Const(c) => constant(b, dt, *c),
        Expr::Index(axis) => {
            let index = match axis {
                Some(a) if *a + 1 == k.rank => j,
                Some(a) => env.outer_index(b, *a),
                None => b.ins().iconst(types::I64, 0),
            };
            from_i64(b, dt, index)
        }
        Expr::Unary(op, x) => {
            let x = vals[*x];
            match op.def().int {
                Some(int) if t == types::I64 => {
                    let r = match int {
                        IntUnary::Neg => b.ins().ineg(x),
                        IntUnary::Abs => b.ins().iabs(x),
                    };
                    wrap(b, r)
                }
                _ => env.unary(b, *op, x, false),
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
                wrap(b, v)
            } else {
                float_binary(b, env, *op, l, r)
            }
        }
        Expr::Compare(op, l, r) => {
            let operand = k.exprs[*l].1;
            let (l, r) = (vals[*l], vals[*r]);
            if operand.is_float() {
                b.ins().fcmp(float_cc(*op), l, r)
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
            cast(b, vals[*x], from, dt)
        }
    })
}

/// Float arithmetic; the same instructions serve scalars and `f32x4` vectors except
/// `pow`, which calls out per element (the caller splits vectors into lanes).
pub(super) fn float_binary(
    b: &mut FunctionBuilder,
    env: &Env,
    op: BinaryOp,
    l: Value,
    r: Value,
) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(l, r),
        BinaryOp::Sub => b.ins().fsub(l, r),
        BinaryOp::Mul => b.ins().fmul(l, r),
        BinaryOp::Div => b.ins().fdiv(l, r),
        BinaryOp::Max => b.ins().fmax(l, r),
        BinaryOp::Min => b.ins().fmin(l, r),
        BinaryOp::Pow => env.call_pow(b, l, r),
    }
}

/// The ordered float condition of a comparison (NaN compares false, except `ne`).
pub(super) fn float_cc(op: CompareOp) -> FloatCC {
    match op {
        CompareOp::Eq => FloatCC::Equal,
        CompareOp::Ne => FloatCC::NotEqual,
        CompareOp::Lt => FloatCC::LessThan,
        CompareOp::Le => FloatCC::LessThanOrEqual,
        CompareOp::Gt => FloatCC::GreaterThan,
        CompareOp::Ge => FloatCC::GreaterThanOrEqual,
    }
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
