//! Movement ops: they rearrange, repeat or cut elements without computing new values.
//!
//! `reshape`, `broadcast` (and `cast`) take their result type from the node's declared
//! type; the others derive it from their operands and attributes.

use super::{expect_arity, ShapeResult};
use crate::ir::{Dim, Shape, TensorType};

pub(super) fn infer_reshape(x: &[&TensorType], declared: &TensorType) -> ShapeResult {
    expect_arity(x, 1)?;
    if x[0].dtype != declared.dtype {
        return Err(format!("'reshape' keeps the dtype: {} -> {declared}", x[0]));
    }
    let (from, to) = (x[0].shape.numel()?, declared.shape.numel()?);
    if from != to {
        return Err(format!(
            "'reshape' must keep the element count: {} has {from}, {declared} has {to}",
            x[0]
        ));
    }
    Ok(declared.clone())
}

/// Checks that `perm` is a permutation of `0..rank`.
pub(crate) fn check_perm(perm: &[usize], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(format!(
            "'permute' needs {rank} axes in 'perm', found {perm:?}"
        ));
    }
    for &p in perm {
        if p >= rank || std::mem::replace(&mut seen[p], true) {
            return Err(format!(
                "'perm' = {perm:?} is not a permutation of 0..{rank}"
            ));
        }
    }
    Ok(())
}

pub(super) fn infer_permute(perm: &[usize], x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    check_perm(perm, x[0].rank())?;
    Ok(x[0].with_shape(Shape(
        perm.iter().map(|&p| x[0].dims()[p].clone()).collect(),
    )))
}

/// `broadcast`: operand axis `i` becomes result axis `dims[i]`; its size must equal that
/// result axis or be 1 (then it is repeated). Result axes not named in `dims` are new.
pub(super) fn infer_broadcast(
    dims: &[usize],
    x: &[&TensorType],
    declared: &TensorType,
) -> ShapeResult {
    expect_arity(x, 1)?;
    let (src, dst) = (x[0], declared);
    if src.dtype != dst.dtype {
        return Err(format!("'broadcast' keeps the dtype: {src} -> {dst}"));
    }
    if dims.len() != src.rank() {
        return Err(format!(
            "'broadcast' needs one entry in 'dims' per operand axis ({}), found {dims:?}",
            src.rank()
        ));
    }
    super::reduce::check_axes(dims, dst.rank())
        .map_err(|e| format!("'dims' of 'broadcast': {e}"))?;
    for (i, &d) in dims.iter().enumerate() {
        let (s, t) = (&src.dims()[i], &dst.dims()[d]);
        if s != t && *s != Dim::fixed(1) {
            return Err(format!(
                "'broadcast' cannot stretch axis {i} of {src} (size {s}) to size {t}"
            ));
        }
    }
    Ok(dst.clone())
}

/// True if `perm` swaps the last two axes and keeps the others: a matrix transpose,
/// which matrix-product kernels can read in place through strides.
pub fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm[r - 2] == r - 1
        && perm[r - 1] == r - 2
        && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
}

fn static_axis(op: &str, t: &TensorType, axis: usize) -> Result<u64, String> {
    let d = t
        .dims()
        .get(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {t}"))?;
    d.as_static()
        .ok_or_else(|| format!("'{op}' needs a static size on axis {axis}, found {d}"))
}

/// `slice` keeps indices `start, start+step, ...` below `end` along one axis.
pub(super) fn infer_slice(
    axis: usize,
    start: u64,
    end: u64,
    step: u64,
    x: &[&TensorType],
) -> ShapeResult {
    expect_arity(x, 1)?;
    let n = static_axis("slice", x[0], axis)?;
    if step == 0 || start > end || end > n {
        return Err(format!(
            "'slice' needs 0 <= start <= end <= {n} and step >= 1, found start {start}, end {end}, step {step}"
        ));
    }
    let mut dims = x[0].dims().to_vec();
    dims[axis] = Dim::fixed((end - start).div_ceil(step));
    Ok(x[0].with_shape(Shape(dims)))
}

pub(super) fn infer_concat(axis: usize, x: &[&TensorType]) -> ShapeResult {
    let first = x.first().ok_or("'concat' needs at least one operand")?;
    if axis >= first.rank() {
        return Err(format!("axis {axis} is out of range for {first}"));
    }
    let mut total = Dim::fixed(0);
    for t in x {
        let same_elsewhere = t.rank() == first.rank()
            && t.dtype == first.dtype
            && (0..t.rank()).all(|i| i == axis || t.dims()[i] == first.dims()[i]);
        if !same_elsewhere {
            return Err(format!(
                "'concat' operands must agree except on axis {axis}: {first} vs {t}"
            ));
        }
        total = total.add(&t.dims()[axis])?.ok_or_else(|| {
            format!(
                "'concat' cannot add sizes {total} and {} on axis {axis}",
                t.dims()[axis]
            )
        })?;
    }
    let mut dims = first.dims().to_vec();
    dims[axis] = total;
    Ok(first.with_shape(Shape(dims)))
}

/// `pad` adds `low` elements before and `high` after along one axis, filled with `value`.
pub(super) fn infer_pad(axis: usize, low: u64, high: u64, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    let t = x[0];
    let d = t
        .dims()
        .get(axis)
        .ok_or_else(|| format!("axis {axis} is out of range for {t}"))?;
    let growth = crate::ir::size_add(low, high, || format!("'pad' growth {low} + {high}"))?;
    let grown = d
        .add(&Dim::fixed(growth))?
        .ok_or_else(|| format!("'pad' cannot grow symbolic size {d} by {growth}"))?;
    let mut dims = t.dims().to_vec();
    dims[axis] = grown;
    Ok(t.with_shape(Shape(dims)))
}

// Gradients: each movement op's adjoint moves the adjoint back.

use super::{Op, ReduceOp};
use crate::ir::{Builder, DType, ValueId};

pub(super) fn vjp_reshape(b: &mut Builder, x: ValueId, g: ValueId) -> ValueId {
    let ty = b.ty(x).clone();
    b.add_typed(Op::Reshape, &[g], ty)
}

pub(super) fn vjp_permute(perm: &[usize], b: &mut Builder, g: ValueId) -> ValueId {
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    b.add(Op::Permute { perm: inverse }, &[g])
}

/// Sums the adjoint over new and stretched axes, then restores the operand's size-1 axes.
pub(super) fn vjp_broadcast(dims: &[usize], b: &mut Builder, x: ValueId, g: ValueId) -> ValueId {
    let (xt, gt) = (b.ty(x).clone(), b.ty(g).clone());
    let summed: Vec<usize> = (0..gt.rank())
        .filter(|&a| match dims.iter().position(|&d| d == a) {
            None => true,
            Some(i) => xt.dims()[i] != gt.dims()[a],
        })
        .collect();
    let s = b.reduce(ReduceOp::Sum, g, summed);
    if *b.ty(s) == xt {
        s
    } else {
        b.add_typed(Op::Reshape, &[s], xt)
    }
}

pub(super) fn vjp_slice(
    (axis, start, end, step): (usize, u64, u64, u64),
    b: &mut Builder,
    x: ValueId,
    g: ValueId,
) -> Result<ValueId, String> {
    let xt = b.ty(x).clone();
    let n = xt.dims()[axis]
        .as_static()
        .ok_or("slice of a symbolic axis")?;
    if step == 1 {
        return Ok(b.add(
            Op::Pad {
                axis,
                low: start,
                high: n - end,
                value: 0.0,
            },
            &[g],
        ));
    }
    // Strided: scatter the adjoint to positions start, start+step, ...
    let len = b.ty(g).dims()[axis].clone();
    let positions = crate::ir::TensorType::new(DType::I32, crate::ir::Shape(vec![len]));
    let idx = b.add_typed(Op::Iota { axis: 0 }, &[], positions);
    let idx = b.binary_scalar(super::BinaryOp::Mul, idx, step as f64);
    let idx = b.binary_scalar(super::BinaryOp::Add, idx, start as f64);
    let zero = b.zeros_like(x);
    Ok(b.add(Op::ScatterAdd { axis }, &[zero, idx, g]))
}

pub(super) fn vjp_concat(
    axis: usize,
    b: &mut Builder,
    x: &[ValueId],
    g: ValueId,
) -> Result<Vec<Option<ValueId>>, String> {
    let mut at = 0;
    let mut out = Vec::new();
    for &part in x {
        let n = b.ty(part).dims()[axis]
            .as_static()
            .ok_or("concat along a symbolic axis")?;
        out.push(Some(b.add(
            Op::Slice {
                axis,
                start: at,
                end: at + n,
                step: 1,
            },
            &[g],
        )));
        at += n;
    }
    Ok(out)
}

pub(super) fn vjp_pad(
    axis: usize,
    low: u64,
    b: &mut Builder,
    x: ValueId,
    g: ValueId,
) -> Result<ValueId, String> {
    let n = b.ty(x).dims()[axis]
        .as_static()
        .ok_or("pad of a symbolic axis")?;
    Ok(b.add(
        Op::Slice {
            axis,
            start: low,
            end: low + n,
            step: 1,
        },
        &[g],
    ))
}
