//! Indexing ops: `gather` (embedding lookup, `take`) and `scatter_add` (its gradient).
//!
//! `gather %table, %idx {axis}` has shape `table[..axis] ++ idx ++ table[axis+1..]`;
//! `scatter_add %base, %idx, %updates {axis}` adds each update slice into `base` at the
//! index given, where `updates` has exactly the shape `gather` would produce.
//! Indices are integers in `0..table[axis]`; the interpreter rejects others.

use super::{expect_arity, ShapeResult};
use crate::ir::{Shape, TensorType};

/// The shape `gather` produces.
pub(crate) fn gathered_shape(
    table: &TensorType,
    axis: usize,
    idx: &TensorType,
) -> Result<Shape, String> {
    if axis >= table.rank() {
        return Err(format!("axis {axis} is out of range for {table}"));
    }
    if !idx.dtype.is_int() {
        return Err(format!("indices must be integers, found {idx}"));
    }
    let d = table.dims();
    Ok(Shape(
        d[..axis]
            .iter()
            .chain(idx.dims())
            .chain(&d[axis + 1..])
            .cloned()
            .collect(),
    ))
}

pub(super) fn infer_gather(axis: usize, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 2)?;
    Ok(x[0].with_shape(gathered_shape(x[0], axis, x[1])?))
}

pub(super) fn infer_scatter_add(axis: usize, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 3)?;
    let (base, idx, upd) = (x[0], x[1], x[2]);
    let want = base.with_shape(gathered_shape(base, axis, idx)?);
    if *upd != want {
        return Err(format!(
            "'scatter_add' updates must have type {want}, found {upd}"
        ));
    }
    Ok(base.clone())
}

use super::Op;
use crate::ir::{Builder, ValueId};

/// The table's adjoint scatters `g` back to the rows that were read.
pub(super) fn vjp_gather(
    axis: usize,
    b: &mut Builder,
    (table, idx): (ValueId, ValueId),
    g: ValueId,
) -> ValueId {
    let zero = b.zeros_like(table);
    b.add(Op::ScatterAdd { axis }, &[zero, idx, g])
}

/// `base` receives `g` unchanged; each update receives `g` at its position.
pub(super) fn vjp_scatter_add(
    axis: usize,
    b: &mut Builder,
    idx: ValueId,
    g: ValueId,
    needs: &[bool],
) -> Vec<Option<ValueId>> {
    let dupd = needs[2].then(|| b.add(Op::Gather { axis }, &[g, idx]));
    vec![Some(g), None, dupd]
}
