//! Fused elementwise kernels: one thread per 4 consecutive output elements when the
//! row length allows it (16-byte vector loads and stores for f32), else one per element.

use super::{
    blocks_for, elem_of, from_loaded, linear, reg_ty, strides, to_stored, unflatten, KernelCall,
    Role, Shapes, BLOCK,
};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{Cmp, Elem, Operand, Reg, Ty, UnOp};
use crate::gpu::math;
use crate::ir::ops::CompareOp;
use crate::ir::{DType, Graph, ValueId};
use crate::kernel::{Expr, PointwiseKernel};
use crate::schedule::single_op_kernel;

/// The kernel of an elementwise op that fusion left alone (integer division and power).
pub(super) fn lower_single(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
) -> Result<KernelCall, String> {
    lower(name, g, shapes, &single_op_kernel(g, v))
}

/// How one load walks its buffer: the buffer stride of each kernel axis.
struct Access {
    strides: Vec<usize>,
}

pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    pk: &PointwiseKernel,
) -> Result<KernelCall, String> {
    let out_shape = &shapes[pk.output.index()];
    let rank = out_shape.len();
    let n: usize = out_shape.iter().product();
    let accesses: Vec<Option<Access>> = pk
        .exprs
        .iter()
        .map(|(e, _)| match e {
            Expr::Load { input, axes } => {
                let s = strides(&shapes[pk.inputs[*input].index()]);
                let mut acc = vec![0; rank];
                for (j, a) in axes.iter().enumerate() {
                    if let Some(k) = a {
                        acc[*k] += s[j];
                    }
                }
                Some(Access { strides: acc })
            }
            _ => None,
        })
        .collect();
    let inner = out_shape.last().copied().unwrap_or(1);
    let vectorisable =
        rank > 0 && inner % 4 == 0 && accesses.iter().flatten().all(|a| a.strides[rank - 1] <= 1);
    let width = if vectorisable { 4 } else { 1 };

    let mut b = KernelBuilder::new(name, BLOCK);
    let out_elem = elem_of(g.ty(pk.output).dtype)?;
    let out = b.param("out", out_elem, n);
    let mut ins = Vec::new();
    for (i, &v) in pk.inputs.iter().enumerate() {
        let len = shapes[v.index()].iter().product();
        ins.push(b.param(&format!("in{i}"), elem_of(g.ty(v).dtype)?, len));
    }
    let mut wanted = vec![false; rank];
    for a in accesses.iter().flatten() {
        for (w, &s) in wanted.iter_mut().zip(&a.strides) {
            *w |= s != 0;
        }
    }
    for (e, _) in &pk.exprs {
        if let Expr::Index(Some(k)) = e {
            wanted[*k] = true;
        }
    }
    let mut failure = None;
    b.grid_stride(n / width, |b, chunk| {
        let first = if width == 1 {
            chunk
        } else {
            b.mul(chunk, width as i32)
        };
        let idx = unflatten(b, first, out_shape, &wanted);
        // Per expression and lane, its register.
        let mut lanes: Vec<Vec<Reg>> = Vec::with_capacity(pk.exprs.len());
        for (i, (e, dt)) in pk.exprs.iter().enumerate() {
            let regs = match e {
                Expr::Load { input, .. } => {
                    let a = accesses[i].as_ref().expect("loads have accesses");
                    let base = linear(b, &idx, &a.strides, Operand::I32(0));
                    let space = ins[*input];
                    let inner_stride = if rank > 0 { a.strides[rank - 1] } else { 0 };
                    let loaded = if width == 4 && inner_stride == 1 {
                        b.ld_vec(space, base, 4)
                    } else if width == 4 {
                        vec![b.ld(space, base); 4]
                    } else {
                        vec![b.ld(space, base)]
                    };
                    loaded.into_iter().map(|r| from_loaded(b, r, *dt)).collect()
                }
                _ => {
                    let mut regs = Vec::with_capacity(width);
                    for lane in 0..width {
                        match scalar(b, e, *dt, &pk.exprs, &lanes, lane, &idx, rank) {
                            Ok(r) => regs.push(r),
                            Err(msg) => {
                                failure.get_or_insert(msg);
                                regs.push(b.mov(0.0f32));
                            }
                        }
                    }
                    regs
                }
            };
            lanes.push(regs);
        }
        let result = lanes.last().expect("a kernel computes something").clone();
        let stored: Vec<Operand> = result
            .into_iter()
            .map(|r| to_stored(b, r, out_elem).into())
            .collect();
        b.st_vec(out, first, stored);
    });
    if let Some(msg) = failure {
        return Err(format!("{name}: {msg}"));
    }
    let kernel = b.finish();
    let flops = (n * pk.op_count()) as f64;
    Ok(KernelCall {
        kernel,
        args: std::iter::once(pk.output)
            .chain(pk.inputs.iter().copied())
            .collect(),
        work_blocks: blocks_for(n / width, 1, BLOCK),
        role: Role::Compute,
        flops,
    })
}

/// One lane of a computing expression.
#[allow(clippy::too_many_arguments)]
fn scalar(
    b: &mut KernelBuilder,
    e: &Expr,
    dt: DType,
    exprs: &[(Expr, DType)],
    lanes: &[Vec<Reg>],
    lane: usize,
    idx: &[Option<Reg>],
    rank: usize,
) -> Result<Reg, String> {
    let arg = |i: usize| lanes[i][lane];
    let arg_dt = |i: usize| exprs[i].1;
    let r = match e {
        Expr::Load { .. } => unreachable!("loads are handled by the caller"),
        Expr::Const(c) => constant(b, *c, dt),
        Expr::Index(axis) => {
            let i = match axis.and_then(|k| idx[k].map(|r| (k, r))) {
                Some((k, r)) if k + 1 == rank && lane > 0 => b.add(r, lane as i32),
                Some((_, r)) => r,
                None if axis == &Some(rank.wrapping_sub(1)) && lane > 0 => b.mov(lane as i32),
                None => b.mov(0),
            };
            convert(b, i, DType::I32, dt)?
        }
        Expr::Unary(op, x) => {
            let x = arg(*x);
            match reg_ty(dt) {
                Ty::F32 => math::unary(b, *op, x),
                _ => {
                    use crate::ir::ops::unary::IntUnary;
                    match op.def().int {
                        Some(IntUnary::Neg) => b.un(UnOp::Neg, x),
                        Some(IntUnary::Abs) => b.un(UnOp::Abs, x),
                        None => return Err(format!("'{}' on {dt}", op.name())),
                    }
                }
            }
        }
        Expr::Binary(op, x, y) => {
            let (x, y) = (arg(*x), arg(*y));
            match reg_ty(dt) {
                Ty::F32 => math::binary(b, *op, x, y),
                Ty::Pred => return Err(format!("'{}' on bool", op.name())),
                _ => integer_binary(b, *op, x, y)?,
            }
        }
        Expr::Compare(op, x, y) => b.setp(cmp(*op), arg(*x), arg(*y)),
        Expr::Select(c, x, y) => b.selp(arg(*c), arg(*x), arg(*y)),
        Expr::Cast(x) => return convert(b, arg(*x), arg_dt(*x), dt),
    };
    Ok(round_half(b, r, dt))
}

/// Rounds a computed f32 to its 16-bit dtype, as the IR's values are.
fn round_half(b: &mut KernelBuilder, r: Reg, dt: DType) -> Reg {
    match dt {
        DType::BF16 => b.round(r, Elem::BF16),
        DType::F16 => b.round(r, Elem::F16),
        _ => r,
    }
}

fn integer_binary(
    b: &mut KernelBuilder,
    op: crate::ir::ops::BinaryOp,
    x: Reg,
    y: Reg,
) -> Result<Reg, String> {
    use crate::gpu::kir::BinOp;
    use crate::ir::ops::BinaryOp as B;
    Ok(match op {
        B::Add => b.add(x, y),
        B::Sub => b.bin(BinOp::Sub, x, y),
        B::Mul => b.mul(x, y),
        B::Div => b.div(x, y),
        B::Max => b.bin(BinOp::Max, x, y),
        B::Min => b.bin(BinOp::Min, x, y),
        B::Pow => return Err("integer 'pow' has no GPU kernel yet".into()),
    })
}

fn cmp(op: CompareOp) -> Cmp {
    match op {
        CompareOp::Eq => Cmp::Eq,
        CompareOp::Ne => Cmp::Ne,
        CompareOp::Lt => Cmp::Lt,
        CompareOp::Le => Cmp::Le,
        CompareOp::Gt => Cmp::Gt,
        CompareOp::Ge => Cmp::Ge,
    }
}

fn constant(b: &mut KernelBuilder, c: f64, dt: DType) -> Reg {
    match reg_ty(dt) {
        Ty::I32 => b.mov(c as i64 as i32),
        Ty::I64 => b.mov(Operand::I64(c as i64)),
        Ty::Pred => {
            let r = b.mov(i32::from(c != 0.0));
            b.setp(Cmp::Ne, r, 0)
        }
        _ => {
            let r = b.mov(c as f32);
            round_half(b, r, dt)
        }
    }
}

/// The IR's `cast` from `from` to `to` (float→int truncates and saturates through i64,
/// then wraps to i32; anything→bool is `!= 0`).
fn convert(b: &mut KernelBuilder, x: Reg, from: DType, to: DType) -> Result<Reg, String> {
    let (src, dst) = (reg_ty(from), reg_ty(to));
    Ok(match (src, dst) {
        (_, Ty::Pred) if src == Ty::Pred => x,
        (Ty::F32, Ty::Pred) => b.setp(Cmp::Ne, x, 0.0f32),
        (Ty::I32, Ty::Pred) => b.setp(Cmp::Ne, x, 0),
        (Ty::I64, Ty::Pred) => b.setp(Cmp::Ne, x, Operand::I64(0)),
        (Ty::F32, Ty::I32) => {
            let wide = b.cvt(Ty::I64, x);
            b.cvt(Ty::I32, wide)
        }
        (Ty::F32, Ty::F32) => round_half(b, x, to),
        (_, Ty::F32) => {
            let f = b.cvt(Ty::F32, x);
            round_half(b, f, to)
        }
        (_, dst) => b.cvt(dst, x),
    })
}
