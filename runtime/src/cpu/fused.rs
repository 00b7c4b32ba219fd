//! Evaluates pointwise kernels of the kernel IR (`compiler::kernel`) row by row: the
//! innermost axis is a row, every expression is computed for a whole row at once into a
//! reused scratch lane, and rows are spread over the cores. This is the CPU reference of
//! the kernel IR: fused code generators (Cranelift, PTX) are tested against it.
//!
//! Both paths write into a given buffer. In place (the memory plan's choice), that
//! buffer holds an operand the kernel reads only at the index it writes
//! ([`Input::Output`]): the native code loads every element before it stores it, and
//! the evaluator computes all rows before it writes any.

use super::buffers;
use super::{Buf, Val};
use crate::interp::{holds, wrap_int};
use rayon::prelude::*;
use smelt_compiler::codegen::cranelift::JitKernel;
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use smelt_compiler::ir::DType;
use smelt_compiler::kernel::{Expr, PointwiseKernel};

/// One expression's values over a row.
#[derive(Clone)]
enum Lane {
    F(Vec<f32>),
    I(Vec<i64>),
    B(Vec<bool>),
}

impl Lane {
    fn f(&self) -> &[f32] {
        match self {
            Lane::F(v) => v,
            _ => unreachable!("float operand (types are checked by the IR)"),
        }
    }
    fn b(&self) -> &[bool] {
        match self {
            Lane::B(v) => v,
            _ => unreachable!("bool operand (types are checked by the IR)"),
        }
    }
    fn numbers(&self, j: usize) -> f64 {
        match self {
            Lane::F(v) => f64::from(v[j]),
            Lane::I(v) => v[j] as f64,
            Lane::B(v) => f64::from(u8::from(v[j])),
        }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For a load: the stride along the row, and per outer kernel axis the stride.
struct Access {
    inner: usize,
    outer: Vec<usize>,
}

/// An input of a pointwise kernel.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// A value.
    Val(&'a Val),
    /// The output buffer itself, holding an operand of the output's shape that the kernel
    /// overwrites (in place).
    Output,
}

/// A buffer read by a kernel, with its shape.
#[derive(Clone, Copy)]
struct View<'a> {
    buf: &'a Buf,
    shape: &'a [usize],
}

fn views<'a>(inputs: &[Input<'a>], out: &'a Buf, shape: &'a [usize]) -> Vec<View<'a>> {
    inputs
        .iter()
        .map(|i| match i {
            Input::Val(v) => View {
                buf: v.buf(),
                shape: &v.shape,
            },
            Input::Output => View { buf: out, shape },
        })
        .collect()
}

fn in_place(inputs: &[Input]) -> bool {
    inputs.iter().any(|i| matches!(i, Input::Output))
}

/// Runs `k` with `inputs` (in `k.inputs` order) over the iteration space `shape`, into
/// `out` (emptied first unless the kernel runs in place, when it holds that operand).
pub(super) fn run(k: &PointwiseKernel, inputs: &[Input], shape: &[usize], out: Buf) -> Buf {
    let parts = {
        let inputs = views(inputs, &out, shape);
        compute(k, &inputs, shape)
    };
    // Every row is computed before any is written, so an in-place operand is intact
    // while it is read.
    let out_dtype = k.exprs.last().expect("a kernel computes something").1;
    let mut out = prepare(out, out_dtype, shape.iter().product(), false);
    for p in &parts {
        match (&mut out, p) {
            (Buf::F32(o), Lane::F(p)) => o.extend_from_slice(p),
            (Buf::Int(o), Lane::I(p)) => o.extend_from_slice(p),
            (Buf::Bool(o), Lane::B(p)) => o.extend_from_slice(p),
            _ => unreachable!("one dtype per kernel output"),
        }
    }
    out
}

/// `out` ready for `n` elements of `dt`: emptied unless it holds an operand overwritten
/// in place (`keep`), with room for all `n`.
fn prepare(out: Buf, dt: DType, n: usize, keep: bool) -> Buf {
    let mut out = if std::mem::discriminant(&out) == std::mem::discriminant(&buffers::empty(dt, 0))
    {
        out
    } else {
        assert!(!keep, "an in-place operand has the output's dtype");
        buffers::empty(dt, n)
    };
    assert!(
        !keep || out.len() == n,
        "an in-place operand has the output's shape"
    );
    fn ready<T>(v: &mut Vec<T>, n: usize, keep: bool) {
        if !keep {
            v.clear();
        }
        v.reserve(n - v.len());
    }
    match &mut out {
        Buf::F32(v) => ready(v, n, keep),
        Buf::Int(v) => ready(v, n, keep),
        Buf::Bool(v) => ready(v, n, keep),
    }
    out
}

/// The rows of `k`'s output, in order, as parts computed in parallel.
fn compute(k: &PointwiseKernel, inputs: &[View], shape: &[usize]) -> Vec<Lane> {
    let rank = shape.len();
    let len = if rank == 0 { 1 } else { shape[rank - 1] };
    let n: usize = shape.iter().product();
    let rows = n.checked_div(len).unwrap_or(0);
    let accesses: Vec<Option<Access>> = k
        .exprs
        .iter()
        .map(|(e, _)| match e {
            Expr::Load { input, axes } => {
                let s = strides(inputs[*input].shape);
                let mut acc = Access {
                    inner: 0,
                    outer: vec![0; rank.saturating_sub(1)],
                };
                for (j, a) in axes.iter().enumerate() {
                    match a {
                        Some(k) if *k + 1 == rank => acc.inner += s[j],
                        Some(k) => acc.outer[*k] += s[j],
                        None => {}
                    }
                }
                Some(acc)
            }
            _ => None,
        })
        .collect();
    let out_dtype = k.exprs.last().expect("a kernel computes something").1;
    let outer_shape = &shape[..rank.saturating_sub(1)];
    let eval_rows = |first: usize, count: usize| -> Lane {
        let mut lanes: Vec<Lane> = k.exprs.iter().map(|(_, dt)| empty(*dt, len)).collect();
        let mut out = empty(out_dtype, len * count);
        let mut idx = unravel(first, outer_shape);
        for _ in 0..count {
            for (i, (e, dt)) in k.exprs.iter().enumerate() {
                let lane = eval(
                    e,
                    *dt,
                    &lanes,
                    accesses[i].as_ref(),
                    inputs,
                    &idx,
                    rank,
                    len,
                );
                lanes[i] = lane;
            }
            append(&mut out, lanes.last().expect("non-empty"));
            advance(&mut idx, outer_shape);
        }
        out
    };
    // Enough rows per task to amortise the scheduling; one task for small kernels.
    let per_task = (65536 / len.max(1)).max(1);
    if rows > per_task {
        (0..rows.div_ceil(per_task))
            .into_par_iter()
            .map(|t| eval_rows(t * per_task, per_task.min(rows - t * per_task)))
            .collect()
    } else {
        vec![eval_rows(0, rows)]
    }
}

fn empty(dt: DType, cap: usize) -> Lane {
    if dt.is_float() {
        Lane::F(Vec::with_capacity(cap))
    } else if dt.is_int() {
        Lane::I(Vec::with_capacity(cap))
    } else {
        Lane::B(Vec::with_capacity(cap))
    }
}

fn append(out: &mut Lane, part: &Lane) {
    match (out, part) {
        (Lane::F(o), Lane::F(p)) => o.extend_from_slice(p),
        (Lane::I(o), Lane::I(p)) => o.extend_from_slice(p),
        (Lane::B(o), Lane::B(p)) => o.extend_from_slice(p),
        _ => unreachable!("one dtype per kernel output"),
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        idx[a] = flat % shape[a].max(1);
        flat /= shape[a].max(1);
    }
    idx
}

fn advance(idx: &mut [usize], shape: &[usize]) {
    for a in (0..shape.len()).rev() {
        idx[a] += 1;
        if idx[a] < shape[a] {
            return;
        }
        idx[a] = 0;
    }
}

#[allow(clippy::too_many_arguments)]
fn eval(
    e: &Expr,
    dt: DType,
    lanes: &[Lane],
    acc: Option<&Access>,
    inputs: &[View],
    idx: &[usize],
    rank: usize,
    len: usize,
) -> Lane {
    match e {
        Expr::Load { input, .. } => {
            let a = acc.expect("loads have accesses");
            let base: usize = idx.iter().zip(&a.outer).map(|(i, s)| i * s).sum();
            let positions = (0..len).map(|j| base + j * a.inner);
            match inputs[*input].buf {
                Buf::F32(v) if a.inner == 1 => Lane::F(v[base..base + len].to_vec()),
                Buf::F32(v) => Lane::F(positions.map(|p| v[p]).collect()),
                Buf::Int(v) => Lane::I(positions.map(|p| v[p]).collect()),
                Buf::Bool(v) => Lane::B(positions.map(|p| v[p]).collect()),
            }
        }
        Expr::Const(c) => constant(dt, *c, len),
        Expr::Index(axis) => {
            let at = |j: usize| match axis {
                Some(k) if *k + 1 == rank => j as f64,
                Some(k) => idx[*k] as f64,
                None => 0.0,
            };
            numbers(dt, (0..len).map(at))
        }
        Expr::Unary(op, x) => unary(*op, &lanes[*x], dt),
        Expr::Binary(op, a, b) => binary(*op, &lanes[*a], &lanes[*b], dt),
        Expr::Compare(op, a, b) => Lane::B(compare(*op, &lanes[*a], &lanes[*b], len)),
        Expr::Select(c, a, b) => {
            let c = lanes[*c].b();
            match (&lanes[*a], &lanes[*b]) {
                (Lane::F(x), Lane::F(y)) => {
                    Lane::F((0..len).map(|j| if c[j] { x[j] } else { y[j] }).collect())
                }
                (Lane::I(x), Lane::I(y)) => {
                    Lane::I((0..len).map(|j| if c[j] { x[j] } else { y[j] }).collect())
                }
                (Lane::B(x), Lane::B(y)) => {
                    Lane::B((0..len).map(|j| if c[j] { x[j] } else { y[j] }).collect())
                }
                _ => unreachable!("select branches share a dtype"),
            }
        }
        Expr::Cast(x) => numbers(dt, (0..len).map(|j| lanes[*x].numbers(j))),
    }
}

fn constant(dt: DType, c: f64, len: usize) -> Lane {
    numbers(dt, std::iter::repeat_n(c, len))
}

fn numbers(dt: DType, v: impl Iterator<Item = f64>) -> Lane {
    if dt.is_float() {
        Lane::F(v.map(|x| x as f32).collect())
    } else if dt.is_int() {
        Lane::I(v.map(|x| wrap_int(dt, x as i64)).collect())
    } else {
        Lane::B(v.map(|x| x != 0.0).collect())
    }
}

fn unary(op: UnaryOp, x: &Lane, dt: DType) -> Lane {
    if let (Lane::I(v), Some(int)) = (x, op.def().int) {
        return Lane::I(v.iter().map(|&a| wrap_int(dt, int.apply(a))).collect());
    }
    let f = op.def().f32;
    Lane::F(x.f().iter().map(|&a| f(a)).collect())
}

fn binary(op: BinaryOp, a: &Lane, b: &Lane, dt: DType) -> Lane {
    if let (Lane::I(x), Lane::I(y)) = (a, b) {
        // Fusion leaves the integer ops that can fail to library kernels.
        let f = |p: i64, q: i64| match op.eval_int(p, q) {
            Ok(r) => r,
            Err(_) => unreachable!("integer {} is not fused", op.name()),
        };
        return Lane::I(
            x.iter()
                .zip(y)
                .map(|(&p, &q)| wrap_int(dt, f(p, q)))
                .collect(),
        );
    }
    let (x, y) = (a.f(), b.f());
    Lane::F(x.iter().zip(y).map(|(&p, &q)| op.eval_f32(p, q)).collect())
}

fn compare(op: CompareOp, a: &Lane, b: &Lane, len: usize) -> Vec<bool> {
    match (a, b) {
        (Lane::F(x), Lane::F(y)) => (0..len).map(|j| holds(op, x[j], y[j])).collect(),
        (Lane::I(x), Lane::I(y)) => (0..len).map(|j| holds(op, x[j], y[j])).collect(),
        _ => (0..len).map(|j| holds(op, a.b()[j], b.b()[j])).collect(),
    }
}

/// Runs `k` through its Cranelift-compiled row function: the same iteration as [`run`],
/// with every row computed by native code, into `out` (emptied first unless the kernel
/// runs in place).
pub(super) fn run_jit(
    k: &PointwiseKernel,
    jit: &JitKernel,
    inputs: &[Input],
    shape: &[usize],
    out: Buf,
) -> Buf {
    let rank = shape.len();
    let len = if rank == 0 { 1 } else { shape[rank - 1] };
    let n: usize = shape.iter().product();
    let rows = n.checked_div(len).unwrap_or(0);
    let outer_shape = &shape[..rank.saturating_sub(1)];
    let out_dtype = k.exprs.last().expect("a kernel computes something").1;
    let elem = if out_dtype.is_float() {
        4
    } else if out_dtype.is_int() {
        8
    } else {
        1
    };
    // Written in full by the rows below before its length is set: no fill.
    let mut out = prepare(out, out_dtype, n, in_place(inputs));
    // The one mutable address of the output; an in-place operand is read through it too.
    let out_addr = match &mut out {
        Buf::F32(v) => v.as_mut_ptr() as usize,
        Buf::Int(v) => v.as_mut_ptr() as usize,
        Buf::Bool(v) => v.as_mut_ptr() as usize,
    };
    // Addresses travel as integers so the closure below can cross threads; the buffers
    // outlive the call.
    let ptrs: Vec<usize> = inputs
        .iter()
        .map(|i| match i {
            Input::Val(v) => match v.buf() {
                Buf::F32(x) => x.as_ptr() as usize,
                Buf::Int(x) => x.as_ptr() as usize,
                Buf::Bool(x) => x.as_ptr() as usize,
            },
            Input::Output => out_addr,
        })
        .collect();
    let mut inner = vec![0i64; k.exprs.len()];
    let mut outer_strides: Vec<Vec<usize>> = vec![Vec::new(); k.exprs.len()];
    for (i, (e, _)) in k.exprs.iter().enumerate() {
        if let Expr::Load { input, axes } = e {
            let s = strides(match &inputs[*input] {
                Input::Val(v) => &v.shape,
                Input::Output => shape,
            });
            outer_strides[i] = vec![0; rank.saturating_sub(1)];
            for (j, a) in axes.iter().enumerate() {
                match a {
                    Some(a) if *a + 1 == rank => inner[i] += s[j] as i64,
                    Some(a) => outer_strides[i][*a] += s[j],
                    None => {}
                }
            }
        }
    }
    let row_fn = jit.row();
    let do_rows = |first: usize, count: usize| {
        let mut idx = unravel(first, outer_shape);
        let mut bases = vec![0i64; k.exprs.len()];
        let mut outer: Vec<i64> = vec![0; rank.max(1)];
        for r in first..first + count {
            for (i, s) in outer_strides.iter().enumerate() {
                bases[i] = idx.iter().zip(s).map(|(a, b)| (a * b) as i64).sum();
            }
            for (a, &x) in idx.iter().enumerate() {
                outer[a] = x as i64;
            }
            // SAFETY: `ptrs` point to live input buffers whose extents cover every
            // offset the kernel computes (the axis maps come from verified shapes), and
            // the output row `r` lies inside `out`, written by this task only. An
            // in-place operand is read only in row `r` at the index being written, each
            // element loaded before it is stored (see the module comment).
            unsafe {
                row_fn(
                    ptrs.as_ptr() as *const *const u8,
                    bases.as_ptr(),
                    inner.as_ptr(),
                    outer.as_ptr(),
                    (out_addr + r * len * elem) as *mut u8,
                    len as i64,
                );
            }
            advance(&mut idx, outer_shape);
        }
    };
    let per_task = (65536 / len.max(1)).max(1);
    if rows > per_task {
        (0..rows.div_ceil(per_task))
            .into_par_iter()
            .for_each(|t| do_rows(t * per_task, per_task.min(rows - t * per_task)));
    } else {
        do_rows(0, rows);
    }
    // SAFETY: `out` has room for `n` elements (reserved above), the rows cover all `n`,
    // and the row functions wrote each one (booleans as 0 or 1, valid `bool`s).
    unsafe {
        match &mut out {
            Buf::F32(v) => v.set_len(n),
            Buf::Int(v) => v.set_len(n),
            Buf::Bool(v) => v.set_len(n),
        }
    }
    out
}
