//! Source ops: values made from nothing but attributes. Their result type is always the
//! node's declared type.
//!
//! `random_uniform` and `random_normal` are counter-based: element `i` depends only on
//! `seed` and `i`, so every backend computes the same numbers (see the runtime's `rng`).

use super::{expect_arity, ShapeResult};
use crate::ir::TensorType;

pub(super) fn infer_constant(
    values: &[f64],
    x: &[&TensorType],
    declared: &TensorType,
) -> ShapeResult {
    expect_arity(x, 0)?;
    if values.len() == 1 {
        return Ok(declared.clone());
    }
    match declared.shape.as_static() {
        Some(dims) if dims.iter().product::<u64>() == values.len() as u64 => Ok(declared.clone()),
        Some(dims) => Err(format!(
            "'constant' has {} values but {declared} holds {}",
            values.len(),
            dims.iter().product::<u64>()
        )),
        None => Err(format!(
            "a 'constant' with several values needs a static shape, found {declared}"
        )),
    }
}

pub(super) fn infer_iota(axis: usize, x: &[&TensorType], declared: &TensorType) -> ShapeResult {
    expect_arity(x, 0)?;
    if axis >= declared.rank() {
        return Err(format!("axis {axis} is out of range for {declared}"));
    }
    if !(declared.dtype.is_int() || declared.dtype.is_float()) {
        return Err(format!("'iota' makes numbers, not {}", declared.dtype));
    }
    Ok(declared.clone())
}

pub(super) fn infer_random(name: &str, x: &[&TensorType], declared: &TensorType) -> ShapeResult {
    expect_arity(x, 0)?;
    if !declared.dtype.is_float() {
        return Err(format!("'{name}' makes floats, not {}", declared.dtype));
    }
    Ok(declared.clone())
}
