//! Four elements per iteration with `f32x4` loads, arithmetic and stores, for kernels
//! whose every load is contiguous along the row or constant across it (Cranelift has no
//! wider vectors). `exp` and `tanh` are computed in vector code; other ops without a
//! vector instruction (erf, log, pow, ...) split the vector into lanes and call the
//! scalar helper on each. The row's tail (fewer than
//! four elements) runs the scalar body.
//!
//! Comparisons give `i32x4` lane masks (all ones or zero); they may only feed a
//! `select` (a bit select) or a cast to float (mask AND 1.0), which is what the kernel
//! IR's float kernels use them for.

use super::scalar::{float_binary, float_cc};
use super::Env;
use crate::ir::ops::BinaryOp;
use crate::kernel::{Expr, PointwiseKernel};
use cranelift_codegen::ir::condcodes::FloatCC;
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
            Expr::Unary(op, x) => env.unary(b, *op, vals[*x], true),
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

/// `e^x` on four lanes: `x = n·ln 2 + r` with `|r| ≤ ln2/2`, a degree-6 Taylor
/// polynomial for `e^r` (relative error below 2e-7 before rounding), and `2^n` built
/// in the exponent bits. Where the result would be below 2.5e-38 it gives 0, where it
/// overflows +inf, and NaN stays NaN (Cranelift's `fmin`/`fmax` propagate it).
pub(crate) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    // Below LOW the result is under 2.5e-38 (flushed to 0); above HIGH it overflows.
    const LOW: f32 = -86.6;
    const HIGH: f32 = 88.72;
    let (low, high) = (splat_f32(b, LOW), splat_f32(b, HIGH));
    let clamped = b.ins().fmax(x, low);
    let clamped = b.ins().fmin(clamped, high);
    let log2e = splat_f32(b, std::f32::consts::LOG2_E);
    let scaled = b.ins().fmul(clamped, log2e);
    let n = b.ins().nearest(scaled);
    // ln 2 in two parts, so n·ln2_hi is exact and r keeps its low bits.
    let ln2_hi = splat_f32(b, 0.693_145_75);
    let ln2_lo = splat_f32(b, 1.428_606_8e-6);
    let hi = b.ins().fmul(n, ln2_hi);
    let r = b.ins().fsub(clamped, hi);
    let lo = b.ins().fmul(n, ln2_lo);
    let r = b.ins().fsub(r, lo);
    let mut p = splat_f32(b, 1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        let t = b.ins().fmul(p, r);
        let c = splat_f32(b, c);
        p = b.ins().fadd(t, c);
    }
    let ni = b.ins().fcvt_to_sint_sat(types::I32X4, n);
    // 2^(n-1) · 2: n reaches 128 just below HIGH, where 2^n alone is not a float.
    let bias = b.ins().iconst(types::I32, 126);
    let bias = b.ins().splat(types::I32X4, bias);
    let e = b.ins().iadd(ni, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let half_two_n = b.ins().bitcast(types::F32X4, MemFlagsData::new(), e);
    let y = b.ins().fmul(p, half_two_n);
    let two = splat_f32(b, 2.0);
    let y = b.ins().fmul(y, two);
    let below = b.ins().fcmp(FloatCC::LessThan, x, low);
    let below = b.ins().bitcast(types::F32X4, MemFlagsData::new(), below);
    let zero = splat_f32(b, 0.0);
    let y = b.ins().bitselect(below, zero, y);
    let above = b.ins().fcmp(FloatCC::GreaterThan, x, high);
    let above = b.ins().bitcast(types::F32X4, MemFlagsData::new(), above);
    let inf = splat_f32(b, f32::INFINITY);
    b.ins().bitselect(above, inf, y)
}

/// `tanh x = 1 − 2 / (e^(2x) + 1)` on four lanes: absolute error about 1e-7 (relative
/// error grows near 0, where the result is tiny), exactly ±1 far out.
pub(crate) fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let two = splat_f32(b, 2.0);
    let twice = b.ins().fmul(x, two);
    let e = exp(b, twice);
    let one = splat_f32(b, 1.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    b.ins().fsub(one, q)
}

/// Applies a scalar function lane by lane to vectors `args`.
pub(super) fn per_lane(
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
