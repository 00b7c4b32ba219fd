//! Four elements per iteration with `f32x4` loads, arithmetic and stores, for kernels
//! whose every load is contiguous along the row or constant across it (Cranelift has no
//! wider vectors). Ops without a vector instruction (exp, tanh, erf, pow, ...) split
//! the vector into lanes and call the scalar helper on each. The row's tail (fewer than
//! four elements) runs the scalar body.
//!
//! Comparisons give `i32x4` lane masks (all ones or zero); they may only feed a
//! `select` (a bit select) or a cast to float (mask AND 1.0), which is what the kernel
//! IR's float kernels use them for.

use super::scalar::{float_binary, float_cc};
use super::Env;
use crate::ir::ops::{BinaryOp, UnaryOp};
use crate::kernel::{Expr, PointwiseKernel};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// Elements per vector.
pub(super) const LANES: i64 = 4;

/// How a load moves along the row.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// Consecutive elements: one vector load.
    Contiguous,
    /// The same element for the whole row: one scalar load, splatted.
    Splat,
}

/// A load's access along the row, or `None` when it is strided (permuted buffers).
fn access(k: &PointwiseKernel, axes: &[Option<usize>]) -> Option<Access> {
    let inner = k.rank.checked_sub(1)?;
    let along: Vec<usize> = (0..axes.len())
        .filter(|&p| axes[p] == Some(inner))
        .collect();
    match along[..] {
        [] => Some(Access::Splat),
        [p] if p + 1 == axes.len() => Some(Access::Contiguous),
        _ => None,
    }
}

/// True if `k` can run four elements at a time: a float result, float loads that are
/// contiguous or constant along the row, no integers, booleans only from float
/// comparisons, and no index along the row.
pub(super) fn vectorizable(k: &PointwiseKernel) -> bool {
    let Some((_, out)) = k.exprs.last() else {
        return false;
    };
    out.is_float()
        && k.exprs.iter().all(|(e, dt)| {
            let float_operands = |x: usize| k.exprs[x].1.is_float();
            if dt.is_float() {
                match e {
                    Expr::Load { axes, .. } => access(k, axes).is_some(),
                    Expr::Index(Some(a)) => *a + 1 != k.rank,
                    Expr::Cast(x) => !k.exprs[*x].1.is_int(),
                    _ => true,
                }
            } else {
                !dt.is_int() && matches!(e, Expr::Compare(_, l, _) if float_operands(*l))
            }
        })
}

/// Emits the kernel for elements `j..j + 4` of the row and stores them.
pub(super) fn emit_quad(
    b: &mut FunctionBuilder,
    env: &Env,
    k: &PointwiseKernel,
    j: Value,
) -> Result<(), String> {
    // Rows are not 16-byte aligned: vector accesses must not claim alignment.
    let flags = MemFlagsData::new().with_notrap();
    let v4 = types::F32X4;
    let mut vals: Vec<Value> = Vec::with_capacity(k.exprs.len());
    for (i, (e, _)) in k.exprs.iter().enumerate() {
        let v = match e {
            Expr::Load { axes, .. } => {
                let (start, _) = env.load_at[i].expect("set for loads");
                match access(k, axes) {
                    Some(Access::Contiguous) => {
                        let off = b.ins().imul_imm_s(j, 4);
                        let addr = b.ins().iadd(start, off);
                        b.ins().load(v4, flags, addr, 0)
                    }
                    Some(Access::Splat) => {
                        let x = b.ins().load(types::F32, env.flags, start, 0);
                        b.ins().splat(v4, x)
                    }
                    None => return Err("a strided load is not vectorised".into()),
                }
            }
            Expr::Const(c) => {
                let x = b.ins().f32const(*c as f32);
                b.ins().splat(v4, x)
            }
            Expr::Index(axis) => {
                let index = match axis {
                    Some(a) => env.outer_index(b, *a),
                    None => b.ins().iconst(types::I64, 0),
                };
                let x = b.ins().fcvt_from_sint(types::F32, index);
                b.ins().splat(v4, x)
            }
            Expr::Unary(op, x) => {
                let x = vals[*x];
                match op {
                    UnaryOp::Neg => b.ins().fneg(x),
                    UnaryOp::Abs => b.ins().fabs(x),
                    UnaryOp::Sqrt => b.ins().sqrt(x),
                    UnaryOp::Rsqrt => {
                        let s = b.ins().sqrt(x);
                        let one = splat_f32(b, 1.0);
                        b.ins().fdiv(one, s)
                    }
                    UnaryOp::Recip => {
                        let one = splat_f32(b, 1.0);
                        b.ins().fdiv(one, x)
                    }
                    other => per_lane(b, &[x], |b, a| env.call_unary(b, *other, a[0])),
                }
            }
            Expr::Binary(BinaryOp::Pow, l, r) => per_lane(b, &[vals[*l], vals[*r]], |b, a| {
                float_binary(b, env, BinaryOp::Pow, a[0], a[1])
            }),
            Expr::Binary(op, l, r) => float_binary(b, env, *op, vals[*l], vals[*r]),
            Expr::Compare(op, l, r) => b.ins().fcmp(float_cc(*op), vals[*l], vals[*r]),
            Expr::Select(c, x, y) => {
                let mask = b.ins().bitcast(v4, MemFlagsData::new(), vals[*c]);
                b.ins().bitselect(mask, vals[*x], vals[*y])
            }
            Expr::Cast(x) if k.exprs[*x].1.is_float() => vals[*x],
            Expr::Cast(x) => {
                // A comparison mask to 0.0 or 1.0.
                let mask = b.ins().bitcast(v4, MemFlagsData::new(), vals[*x]);
                let one = splat_f32(b, 1.0);
                b.ins().band(mask, one)
            }
        };
        vals.push(v);
    }
    let off = b.ins().imul_imm_s(j, 4);
    let addr = b.ins().iadd(env.out, off);
    b.ins()
        .store(flags, *vals.last().ok_or("an empty kernel")?, addr, 0);
    Ok(())
}

fn splat_f32(b: &mut FunctionBuilder, x: f32) -> Value {
    let s = b.ins().f32const(x);
    b.ins().splat(types::F32X4, s)
}

/// Applies a scalar function lane by lane to vectors `args`.
fn per_lane(
    b: &mut FunctionBuilder,
    args: &[Value],
    f: impl Fn(&mut FunctionBuilder, &[Value]) -> Value,
) -> Value {
    let mut out = args[0];
    for lane in 0..LANES as u8 {
        let scalars: Vec<Value> = args.iter().map(|&v| b.ins().extractlane(v, lane)).collect();
        let y = f(b, &scalars);
        out = b.ins().insertlane(out, y, lane);
    }
    out
}
