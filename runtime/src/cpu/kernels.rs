//! Kernels of the CPU backend, one per primitive op (and the row composites, through
//! `rows.rs`), on `f32` (and `i64`/`bool`) buffers.
//! Their meaning is the interpreter's (`runtime/src/interp/`); tests hold them to it.

use super::buffers::Out;
use super::{routing, Buf, Val};
use crate::interp::{holds, wrap_int};
use crate::rng;
use rayon::prelude::*;
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
use smelt_compiler::ir::DType;
use smelt_compiler::schedule::MatMulOperand;

/// Below this many elements, threads cost more than they save.
pub(super) const PARALLEL_MIN: usize = 1 << 15;

fn map_f32(mut out: Vec<f32>, x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    if x.len() >= PARALLEL_MIN {
        out.par_extend(x.par_iter().map(|&a| f(a)));
    } else {
        out.extend(x.iter().map(|&a| f(a)));
    }
    out
}

fn zip_f32(
    mut out: Vec<f32>,
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Vec<f32> {
    if a.len() >= PARALLEL_MIN {
        out.par_extend(a.par_iter().zip(b.par_iter()).map(|(&p, &q)| f(p, q)));
    } else {
        out.extend(a.iter().zip(b).map(|(&p, &q)| f(p, q)));
    }
    out
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Appends to `out` the elements at `offset + Σ idx[a]·strides[a]` for every index of
/// `shape`, in row-major order. Permute, broadcast (stride 0) and slice are all this one
/// loop.
fn strided_copy<T: Copy + Send + Sync>(
    mut out: Vec<T>,
    src: &[T],
    offset: usize,
    strides: &[usize],
    shape: &[usize],
) -> Vec<T> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return out;
    }
    if shape.is_empty() {
        out.push(src[offset]);
        return out;
    }
    let r = shape.len();
    let (inner, inner_stride) = (shape[r - 1], strides[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut base = offset;
    loop {
        match inner_stride {
            1 => out.extend_from_slice(&src[base..base + inner]),
            0 => out.extend(std::iter::repeat_n(src[base], inner)),
            s => out.extend((0..inner).map(|j| src[base + j * s])),
        }
        // Advance the odometer over the outer axes.
        let mut ax = r - 1;
        loop {
            if ax == 0 {
                return out;
            }
            ax -= 1;
            idx[ax] += 1;
            base += strides[ax];
            if idx[ax] < shape[ax] {
                break;
            }
            base -= strides[ax] * shape[ax];
            idx[ax] = 0;
        }
    }
}

/// `b` read through `strides` from `offset` over `shape`, into `out`.
fn copy_buf(out: Out, b: &Buf, offset: usize, strides: &[usize], shape: &[usize]) -> Buf {
    let n = shape.iter().product();
    match b {
        Buf::F32(v) => Buf::F32(strided_copy(out.f32(n), v, offset, strides, shape)),
        Buf::Int(v) => Buf::Int(strided_copy(out.int(n), v, offset, strides, shape)),
        Buf::Bool(v) => Buf::Bool(strided_copy(out.bool(n), v, offset, strides, shape)),
    }
}

/// A copy of `x` into `out`.
pub(super) fn copy(out: Out, x: &Val) -> Buf {
    let n = x.buf().len();
    copy_buf(out, x.buf(), 0, &[1], &[n])
}

/// Runs library op `op` on its operands `x`, read as `reads` says (a `grouped_matmul`
/// weight may be the operand of a transpose folded into the product), into `out` (the
/// step's planned buffer), for a result of `dtype` and `shape`.
pub(super) fn eval(
    op: &Op,
    x: &[&Val],
    reads: &[MatMulOperand],
    dtype: DType,
    shape: &[usize],
    out: Out,
) -> Result<Buf, String> {
    let n: usize = shape.iter().product();
    Ok(match op {
        Op::Unary(u) => unary(out, *u, x[0], dtype),
        Op::Binary(b) => binary(out, *b, x[0], x[1], dtype)?,
        Op::Compare(c) => compare(out.bool(n), *c, x[0], x[1]),
        Op::Select => select(out, x[0], x[1], x[2]),
        Op::Cast => cast(out, x[0], dtype),
        Op::Reduce { op, axes } => reduce(out, *op, axes, x[0], dtype),
        Op::MatMul => matmul(out, x[0], false, x[1], false, shape, None),
        // A loopback exchange with one rank (see `ir::ops::collective`). The runtime
        // aliases both instead (see the memory plan); this copy is for completeness.
        Op::Reshape | Op::AllToAll { .. } => copy_buf(out, x[0].buf(), 0, &[1], &[n]),
        // The sum over one rank. With several, the run sends it to its communication
        // lane instead (`comm_lane.rs`).
        Op::AllReduce => copy(out, x[0]),
        Op::AllGather { .. } | Op::ReduceScatter { .. } => {
            let sum: crate::comm::SumFn<f32> = |w, v| w.all_reduce_f32(v);
            let values = crate::comm::gather_or_scatter(op, x[0].f32(), &x[0].shape, sum)
                .expect("a gather or a scatter")
                .map_err(|e| e.to_string())?;
            let mut o = out.f32(values.len());
            o.extend_from_slice(&values);
            Buf::F32(o)
        }
        Op::Permute { perm } => {
            let s = strides(&x[0].shape);
            copy_buf(
                out,
                x[0].buf(),
                0,
                &perm.iter().map(|&p| s[p]).collect::<Vec<_>>(),
                shape,
            )
        }
        Op::Broadcast { dims } => {
            let s = strides(&x[0].shape);
            let mut out_strides = vec![0; shape.len()];
            for (i, &d) in dims.iter().enumerate() {
                if x[0].shape[i] != 1 {
                    out_strides[d] = s[i];
                }
            }
            copy_buf(out, x[0].buf(), 0, &out_strides, shape)
        }
        Op::Slice {
            axis, start, step, ..
        } => {
            let mut s = strides(&x[0].shape);
            let offset = *start as usize * s[*axis];
            s[*axis] *= *step as usize;
            copy_buf(out, x[0].buf(), offset, &s, shape)
        }
        Op::Concat { axis } => concat(out, *axis, x, shape),
        Op::Pad {
            axis,
            low,
            high,
            value,
        } => pad(
            out,
            *axis,
            *low as usize,
            *high as usize,
            *value,
            x[0],
            dtype,
        ),
        Op::Gather { axis } => gather(out, *axis, x[0], x[1])?,
        Op::ScatterAdd { axis } => scatter_add(out, *axis, x[0], x[1], x[2])?,
        Op::TopK { k } => routing::top_k(out, *k as usize, x[0]),
        Op::GroupedMatMul => routing::grouped_matmul(out, x[0], x[1], reads[1].transposed, x[2])?,
        Op::GroupedMatMulWeightGrad { groups } => {
            routing::grouped_weight_grad(out, x[0], x[1], x[2], *groups as usize)?
        }
        Op::Constant { values } => {
            let one = values.len() == 1;
            numbers(out, dtype, (0..n).map(|i| values[if one { 0 } else { i }]))
        }
        Op::Iota { axis } => {
            let s = strides(shape);
            numbers(
                out,
                dtype,
                (0..n).map(|i| ((i / s[*axis]) % shape[*axis]) as f64),
            )
        }
        Op::RandomUniform { low, high, seed } => {
            let mut v = out.f32(n);
            v.extend((0..n as u64).map(|i| (low + (high - low) * rng::uniform01(*seed, i)) as f32));
            Buf::F32(v)
        }
        Op::RandomNormal { mean, std, seed } => {
            let mut v = out.f32(n);
            v.extend((0..n as u64).map(|i| (mean + std * rng::normal01(*seed, i)) as f32));
            Buf::F32(v)
        }
        // The schedule keeps attention (with its backward pieces) and the row composites
        // whole.
        Op::Composite(
            c @ (smelt_compiler::ir::ops::Composite::Attention { .. }
            | smelt_compiler::ir::ops::Composite::AttentionGrad { .. }),
        ) => super::attention::eval(c, x, shape, out),
        Op::Composite(smelt_compiler::ir::ops::Composite::Conv(c)) => {
            super::conv::eval(c, x, shape, out)
        }
        Op::Composite(smelt_compiler::ir::ops::Composite::PagedAttention { scale }) => {
            super::paged_attention::eval(*scale as f32, x, shape, out)?
        }
        Op::Composite(c) => super::rows::eval(c, x, n, out),
    })
}

/// `v` converted to `dtype`'s buffer type, into `out`.
fn numbers(out: Out, dtype: DType, v: impl ExactSizeIterator<Item = f64>) -> Buf {
    let n = v.len();
    if dtype.is_float() {
        let mut o = out.f32(n);
        o.extend(v.map(|a| a as f32));
        Buf::F32(o)
    } else if dtype.is_int() {
        let mut o = out.int(n);
        o.extend(v.map(|a| wrap_int(dtype, a as i64)));
        Buf::Int(o)
    } else {
        let mut o = out.bool(n);
        o.extend(v.map(|a| a != 0.0));
        Buf::Bool(o)
    }
}

fn unary(out: Out, op: UnaryOp, x: &Val, dtype: DType) -> Buf {
    if let (Buf::Int(v), Some(int)) = (x.buf(), op.def().int) {
        let mut o = out.int(v.len());
        o.extend(v.iter().map(|&a| wrap_int(dtype, int.apply(a))));
        return Buf::Int(o);
    }
    let x = x.f32();
    let o = out.f32(x.len());
    let f = op.def().f32;
    Buf::F32(map_f32(o, x, |a| f(a)))
}

fn binary(out: Out, op: BinaryOp, a: &Val, b: &Val, dtype: DType) -> Result<Buf, String> {
    if let (Buf::Int(p), Buf::Int(q)) = (a.buf(), b.buf()) {
        let mut r = out.int(p.len());
        for (&x, &y) in p.iter().zip(q) {
            r.push(wrap_int(
                dtype,
                op.eval_int(x, y).map_err(|e| e.to_string())?,
            ));
        }
        return Ok(Buf::Int(r));
    }
    let (p, q) = (a.f32(), b.f32());
    let o = out.f32(p.len());
    // One loop per op, so each inlines its own arithmetic (and vectorises).
    macro_rules! each {
        ($($op:ident),*) => {
            match op {
                $(BinaryOp::$op => zip_f32(o, p, q, |x, y| BinaryOp::$op.eval_f32(x, y)),)*
            }
        };
    }
    Ok(Buf::F32(each!(Add, Sub, Mul, Div, Max, Min, Pow)))
}

fn compare(mut out: Vec<bool>, op: CompareOp, a: &Val, b: &Val) -> Buf {
    match (a.buf(), b.buf()) {
        (Buf::F32(p), Buf::F32(q)) => out.extend(p.iter().zip(q).map(|(&x, &y)| holds(op, x, y))),
        (Buf::Int(p), Buf::Int(q)) => out.extend(p.iter().zip(q).map(|(&x, &y)| holds(op, x, y))),
        (Buf::Bool(p), Buf::Bool(q)) => out.extend(p.iter().zip(q).map(|(&x, &y)| holds(op, x, y))),
        _ => unreachable!("compared operands have one type (verified)"),
    }
    Buf::Bool(out)
}

fn select(out: Out, c: &Val, a: &Val, b: &Val) -> Buf {
    let Buf::Bool(c) = c.buf() else {
        unreachable!("condition is bool (verified)")
    };
    fn pick<T: Copy>(mut out: Vec<T>, c: &[bool], a: &[T], b: &[T]) -> Vec<T> {
        out.extend(
            c.iter()
                .zip(a.iter().zip(b))
                .map(|(&k, (&x, &y))| if k { x } else { y }),
        );
        out
    }
    let n = c.len();
    match (a.buf(), b.buf()) {
        (Buf::F32(p), Buf::F32(q)) => Buf::F32(pick(out.f32(n), c, p, q)),
        (Buf::Int(p), Buf::Int(q)) => Buf::Int(pick(out.int(n), c, p, q)),
        (Buf::Bool(p), Buf::Bool(q)) => Buf::Bool(pick(out.bool(n), c, p, q)),
        _ => unreachable!("select's branches have one type (verified)"),
    }
}

fn cast(out: Out, x: &Val, dtype: DType) -> Buf {
    match x.buf() {
        Buf::F32(v) => numbers(out, dtype, v.iter().map(|&a| f64::from(a))),
        Buf::Int(v) => numbers(out, dtype, v.iter().map(|&a| a as f64)),
        Buf::Bool(v) => numbers(out, dtype, v.iter().map(|&a| f64::from(u8::from(a)))),
    }
}

/// Reduces over `axes`. Float reductions over trailing axes reduce each row in place,
/// over leading axes they accumulate whole rows into the kept columns, and otherwise the
/// reduced axes are first moved to the end.
fn reduce(out: Out, op: ReduceOp, axes: &[usize], x: &Val, dtype: DType) -> Buf {
    let r = x.shape.len();
    let kept: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).collect();
    let len: usize = axes.iter().map(|&a| x.shape[a]).product();
    let rows: usize = kept.iter().map(|&a| x.shape[a]).product();
    let trailing = axes
        .iter()
        .enumerate()
        .all(|(i, &a)| a == r - axes.len() + i);
    // Adjacent axes with kept axes after them: `[outer, len, inner]`, reduced in place.
    let adjacent = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if let (Buf::F32(v), false, true, Some(&first)) = (x.buf(), trailing, adjacent, axes.first()) {
        let outer: usize = x.shape[..first].iter().product();
        let inner: usize = x.shape[first + axes.len()..].iter().product();
        return Buf::F32(reduce_middle(
            out.f32_overwritten(rows),
            op,
            v,
            (outer, len, inner),
        ));
    }
    let moved;
    let buf = if trailing {
        x.buf()
    } else {
        let s = strides(&x.shape);
        let order: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let shape: Vec<usize> = order.iter().map(|&a| x.shape[a]).collect();
        // Scratch of this kernel, not a planned buffer.
        moved = copy_buf(
            Out::fresh(),
            x.buf(),
            0,
            &order.iter().map(|&a| s[a]).collect::<Vec<_>>(),
            &shape,
        );
        &moved
    };
    match buf {
        Buf::F32(v) => {
            if len == 0 {
                let empty = match op {
                    ReduceOp::Max => f32::NEG_INFINITY,
                    ReduceOp::Mean => f32::NAN,
                    ReduceOp::Sum => 0.0,
                };
                return Buf::F32(out.f32_filled(rows, empty));
            }
            let row = |chunk: &[f32]| -> f32 {
                match op {
                    ReduceOp::Max => max_lanes(chunk),
                    ReduceOp::Sum => sum_lanes(chunk) as f32,
                    ReduceOp::Mean => (sum_lanes(chunk) / len as f64) as f32,
                }
            };
            let mut o = out.f32(rows);
            if v.len() >= PARALLEL_MIN {
                o.par_extend(v.par_chunks(len).map(row));
            } else {
                o.extend(v.chunks(len).map(row));
            }
            Buf::F32(o)
        }
        Buf::Int(v) => Buf::Int({
            let mut o = out.int(rows);
            o.extend((0..rows).map(|i| {
                let chunk = &v[i * len..(i + 1) * len];
                let t = if op == ReduceOp::Max {
                    chunk.iter().copied().fold(i64::MIN, i64::max)
                } else {
                    chunk.iter().fold(0i64, |s, &a| s.wrapping_add(a))
                };
                wrap_int(dtype, t)
            }));
            o
        }),
        Buf::Bool(_) => unreachable!("reductions are not defined on bool (verified)"),
    }
}

/// Lanes of independent accumulators: the additions of one lane do not wait on each
/// other's, so the loops below vectorise and run at throughput, not add latency.
const LANES: usize = 8;

/// The sum of `x` in `f64` (the interpreter's precision), lane by lane.
fn sum_lanes(x: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&a| f64::from(a)).sum();
    for c in chunks {
        for (s, &a) in acc.iter_mut().zip(c) {
            *s += f64::from(a);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `max` that propagates NaN, as the interpreter does.
fn nan_max(m: f32, a: f32) -> f32 {
    if m.is_nan() || a.is_nan() {
        f32::NAN
    } else {
        m.max(a)
    }
}

/// The maximum of `x` (NaN if any element is), lane by lane.
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &a| nan_max(m, a));
    for c in chunks {
        for (m, &a) in acc.iter_mut().zip(c) {
            *m = nan_max(*m, a);
        }
    }
    acc.iter().fold(tail, |m, &a| nan_max(m, a))
}

/// Reduces the middle axis of `v` seen as `[outer, len, inner]`: each of the `outer`
/// slabs as [`reduce_leading`] does, slabs in parallel.
fn reduce_middle(
    mut out: Vec<f32>,
    op: ReduceOp,
    v: &[f32],
    (outer, len, inner): (usize, usize, usize),
) -> Vec<f32> {
    if outer == 1 {
        return reduce_leading(out, op, v, len, inner);
    }
    if out.is_empty() {
        return out;
    }
    let slab = |(o, dst): (usize, &mut [f32])| fold_rows(op, v, (o * len * inner, len, inner), dst);
    if v.len() >= PARALLEL_MIN {
        out.par_chunks_mut(inner).enumerate().for_each(slab);
    } else {
        out.chunks_mut(inner).enumerate().for_each(slab);
    }
    out
}

/// Reduces the leading `len` rows of `v` (each `cols` long) into one row: whole rows are
/// accumulated column by column, so the reduced axes are never moved. Column blocks
/// run in parallel.
fn reduce_leading(mut out: Vec<f32>, op: ReduceOp, v: &[f32], len: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 256;
    if out.is_empty() {
        return out;
    }
    let block = |(b, dst): (usize, &mut [f32])| fold_rows(op, v, (b * BLOCK, len, cols), dst);
    if v.len() >= PARALLEL_MIN {
        out.par_chunks_mut(BLOCK).enumerate().for_each(block);
    } else {
        out.chunks_mut(BLOCK).enumerate().for_each(block);
    }
    out
}

/// Folds `len` rows of `v` into `dst`: row `i` is the `dst.len()` elements from
/// `start + i · stride`.
fn fold_rows(
    op: ReduceOp,
    v: &[f32],
    (start, len, stride): (usize, usize, usize),
    dst: &mut [f32],
) {
    let width = dst.len();
    let rows = (0..len).map(|i| &v[start + i * stride..start + i * stride + width]);
    match op {
        ReduceOp::Max => {
            dst.fill(f32::NEG_INFINITY);
            for row in rows {
                for (m, &a) in dst.iter_mut().zip(row) {
                    *m = nan_max(*m, a);
                }
            }
        }
        ReduceOp::Sum | ReduceOp::Mean => {
            let mut acc = vec![0f64; width];
            for row in rows {
                for (s, &a) in acc.iter_mut().zip(row) {
                    *s += f64::from(a);
                }
            }
            let scale = if op == ReduceOp::Mean {
                len as f64
            } else {
                1.0
            };
            for (d, &s) in dst.iter_mut().zip(&acc) {
                *d = (s / scale) as f32;
            }
        }
    }
}

/// Strides (rows, columns) of one `rows × cols` matrix of a row-major buffer, read
/// as stored or transposed (then the buffer holds the `cols × rows` matrix).
fn matrix_strides(rows: usize, cols: usize, transposed: bool) -> (usize, usize) {
    if transposed {
        (1, rows)
    } else {
        (cols, 1)
    }
}

/// Products with at least this many multiply-adds use both cores.
pub(super) const GEMM_PARALLEL_MIN: usize = 1 << 18;

/// A strided view of a row-major `f32` buffer as a matrix.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    /// The elements (every addressed element lies inside).
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl Matrix<'_> {
    /// True if every element of a `rows × cols` matrix lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`) for an `m × k` and a `k × n`
/// matrix; `dst` is row-major `m × n`. `parallel` uses every rayon thread.
pub(super) fn gemm_into(
    dst: &mut [f32],
    a: Matrix,
    b: Matrix,
    (m, n, k): (usize, usize, usize),
    parallel: bool,
    accumulate: bool,
) {
    assert!(
        dst.len() == m * n && a.fits(m, k) && b.fits(k, n),
        "gemm operands fit their slices"
    );
    if m * n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum, without handing gemm an empty operand.
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm_f32(
        (dst, n),
        (m, n, k),
        (a.data, a.row_stride, a.col_stride),
        (b.data, b.row_stride, b.col_stride),
        1.0,
        accumulate,
        parallelism,
    );
}

/// The batched product `op(a) · op(b)`, where `op` transposes the last two axes of an
/// operand whose flag is set; `shape` is the result's shape. With `start` (f32, of that
/// shape) the product is added to it; without, it is written into `out`.
pub(super) fn matmul(
    out: Out,
    a: &Val,
    ta: bool,
    b: &Val,
    tb: bool,
    shape: &[usize],
    start: Option<Buf>,
) -> Buf {
    let r = shape.len();
    let (m, n) = (shape[r - 2], shape[r - 1]);
    let k = if ta { a.shape[r - 2] } else { a.shape[r - 1] };
    let batch: usize = shape[..r - 2].iter().product();
    let (a_rs, a_cs) = matrix_strides(m, k, ta);
    let (b_rs, b_cs) = matrix_strides(k, n, tb);
    if let (Buf::Int(p), Buf::Int(q)) = (a.buf(), b.buf()) {
        // Accumulates: starts from zeros.
        let mut out = out.int(batch * m * n);
        out.resize(batch * m * n, 0);
        for bi in 0..batch {
            let (p, q) = (&p[bi * m * k..], &q[bi * k * n..]);
            let o = &mut out[bi * m * n..(bi + 1) * m * n];
            for i in 0..m {
                for kk in 0..k {
                    let s = p[i * a_rs + kk * a_cs];
                    for j in 0..n {
                        o[i * n + j] =
                            o[i * n + j].wrapping_add(s.wrapping_mul(q[kk * b_rs + j * b_cs]));
                    }
                }
            }
        }
        return Buf::Int(out);
    }
    let (p, q) = (a.f32(), b.f32());
    let (mut out, accumulate) = match start {
        Some(Buf::F32(v)) => (v, true),
        // gemm overwrites without reading (an empty product fills zeros).
        _ => (out.f32_overwritten(batch * m * n), false),
    };
    if out.is_empty() {
        return Buf::F32(out);
    }
    let product = |bi: usize, dst: &mut [f32], parallel: bool| {
        let a = Matrix {
            data: &p[bi * m * k..(bi + 1) * m * k],
            row_stride: a_rs,
            col_stride: a_cs,
        };
        let b = Matrix {
            data: &q[bi * k * n..(bi + 1) * k * n],
            row_stride: b_rs,
            col_stride: b_cs,
        };
        gemm_into(dst, a, b, (m, n, k), parallel, accumulate);
    };
    let threads = rayon::current_num_threads();
    if m * n * k < GEMM_PARALLEL_MIN {
        for (bi, dst) in out.chunks_mut(m * n).enumerate() {
            product(bi, dst, false);
        }
    } else if batch >= 2 * threads {
        // Many small products (attention heads): one product per task splits the work
        // evenly without synchronising inside each product.
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, dst)| product(bi, dst, false));
    } else {
        for (bi, dst) in out.chunks_mut(m * n).enumerate() {
            product(bi, dst, true);
        }
    }
    Buf::F32(out)
}

/// `dst = scale · a · b` (`dst += ...` when `accumulate`) for one `m × k` by `k × n`
/// product into the row-major `dst`
/// with row stride `dst_rs` (a block of a wider matrix); each operand is a slice with
/// its (row, column) strides, so a transposed operand is read in place.
///
/// Panics if a slice is too short for its strides (a bug in the caller).
pub(super) fn gemm_f32(
    (dst, dst_rs): (&mut [f32], usize),
    (m, n, k): (usize, usize, usize),
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    scale: f32,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows > 0 && cols > 0).then(|| (rows - 1) * rs + (cols - 1) * cs)
    };
    assert!(
        last(m, n, dst_rs, 1).is_none_or(|i| i < dst.len()),
        "gemm destination too short"
    );
    assert!(
        last(m, k, a_rs, a_cs).is_none_or(|i| i < a.len()),
        "gemm lhs too short"
    );
    assert!(
        last(k, n, b_rs, b_cs).is_none_or(|i| i < b.len()),
        "gemm rhs too short"
    );
    // SAFETY: the asserts above keep every element the strides address inside its
    // slice; `dst` is a unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Splits a shape around `axis` into (outer count, axis size, inner count).
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn concat(out: Out, axis: usize, parts: &[&Val], shape: &[usize]) -> Buf {
    let (outer, _, inner) = around(shape, axis);
    let total = shape.iter().product();
    fn join<T: Copy>(
        mut out: Vec<T>,
        parts: Vec<(&[T], usize)>,
        outer: usize,
        inner: usize,
    ) -> Vec<T> {
        for o in 0..outer {
            for (v, n) in &parts {
                out.extend_from_slice(&v[o * n * inner..(o + 1) * n * inner]);
            }
        }
        out
    }
    let n = |p: &Val| p.shape[axis];
    match parts[0].buf() {
        Buf::F32(_) => Buf::F32(join(
            out.f32(total),
            parts.iter().map(|p| (p.f32(), n(p))).collect(),
            outer,
            inner,
        )),
        Buf::Int(_) => Buf::Int(join(
            out.int(total),
            parts
                .iter()
                .map(|p| {
                    (
                        match p.buf() {
                            Buf::Int(v) => &v[..],
                            _ => unreachable!("one dtype"),
                        },
                        n(p),
                    )
                })
                .collect(),
            outer,
            inner,
        )),
        Buf::Bool(_) => Buf::Bool(join(
            out.bool(total),
            parts
                .iter()
                .map(|p| {
                    (
                        match p.buf() {
                            Buf::Bool(v) => &v[..],
                            _ => unreachable!("one dtype"),
                        },
                        n(p),
                    )
                })
                .collect(),
            outer,
            inner,
        )),
    }
}

fn pad(out: Out, axis: usize, low: usize, high: usize, value: f64, x: &Val, dtype: DType) -> Buf {
    let (outer, n, inner) = around(&x.shape, axis);
    let total = outer * (n + low + high) * inner;
    fn fill<T: Copy>(
        mut out: Vec<T>,
        v: &[T],
        fill: T,
        (outer, n, inner): (usize, usize, usize),
        (low, high): (usize, usize),
    ) -> Vec<T> {
        for o in 0..outer {
            out.extend(std::iter::repeat_n(fill, low * inner));
            out.extend_from_slice(&v[o * n * inner..(o + 1) * n * inner]);
            out.extend(std::iter::repeat_n(fill, high * inner));
        }
        out
    }
    let (dims, ends) = ((outer, n, inner), (low, high));
    match (
        x.buf(),
        numbers(Out::fresh(), dtype, std::iter::once(value)),
    ) {
        (Buf::F32(v), Buf::F32(f)) => Buf::F32(fill(out.f32(total), v, f[0], dims, ends)),
        (Buf::Int(v), Buf::Int(f)) => Buf::Int(fill(out.int(total), v, f[0], dims, ends)),
        (Buf::Bool(v), Buf::Bool(f)) => Buf::Bool(fill(out.bool(total), v, f[0], dims, ends)),
        _ => unreachable!("the fill value has the operand's dtype"),
    }
}

pub(super) fn indices(idx: &Val, n: usize, axis: usize) -> Result<&[i64], String> {
    let Buf::Int(v) = idx.buf() else {
        unreachable!("indices are integers (verified)")
    };
    match v.iter().find(|&&i| i < 0 || i as usize >= n) {
        Some(i) => Err(format!("index {i} is out of range 0..{n} on axis {axis}")),
        None => Ok(v),
    }
}

fn gather(out: Out, axis: usize, table: &Val, idx: &Val) -> Result<Buf, String> {
    let (outer, n, inner) = around(&table.shape, axis);
    let ids = indices(idx, n, axis)?;
    let total = outer * ids.len() * inner;
    fn take<T: Copy>(
        mut out: Vec<T>,
        t: &[T],
        ids: &[i64],
        (outer, n, inner): (usize, usize, usize),
    ) -> Vec<T> {
        for o in 0..outer {
            for &i in ids {
                let at = (o * n + i as usize) * inner;
                out.extend_from_slice(&t[at..at + inner]);
            }
        }
        out
    }
    Ok(match table.buf() {
        Buf::F32(t) => Buf::F32(take(out.f32(total), t, ids, (outer, n, inner))),
        Buf::Int(t) => Buf::Int(take(out.int(total), t, ids, (outer, n, inner))),
        Buf::Bool(t) => Buf::Bool(take(out.bool(total), t, ids, (outer, n, inner))),
    })
}

fn scatter_add(out: Out, axis: usize, base: &Val, idx: &Val, upd: &Val) -> Result<Buf, String> {
    let (outer, n, inner) = around(&base.shape, axis);
    let ids = indices(idx, n, axis)?;
    let k = ids.len();
    Ok(match (base.buf(), upd.buf()) {
        (Buf::F32(b), Buf::F32(u)) => {
            let mut out = out.f32(b.len());
            out.extend_from_slice(b);
            for o in 0..outer {
                for (j, &i) in ids.iter().enumerate() {
                    let dst = (o * n + i as usize) * inner;
                    let src = (o * k + j) * inner;
                    for (d, s) in out[dst..dst + inner].iter_mut().zip(&u[src..src + inner]) {
                        *d += *s;
                    }
                }
            }
            Buf::F32(out)
        }
        (Buf::Int(b), Buf::Int(u)) => {
            let mut out = out.int(b.len());
            out.extend_from_slice(b);
            for o in 0..outer {
                for (j, &i) in ids.iter().enumerate() {
                    for c in 0..inner {
                        let d = &mut out[(o * n + i as usize) * inner + c];
                        *d = d.wrapping_add(u[(o * k + j) * inner + c]);
                    }
                }
            }
            Buf::Int(out)
        }
        _ => unreachable!("scatter_add on numbers of one dtype (verified)"),
    })
}
