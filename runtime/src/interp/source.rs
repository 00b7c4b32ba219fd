//! Meaning of the source ops (see `compiler::ir::ops::source`).

use super::{map_indices, Ctx};
use crate::rng;
use crate::tensor::Tensor;
use smelt_compiler::ir::DType;

pub(super) fn constant(ctx: Ctx, values: &[f64], dtype: DType, shape: Vec<usize>) -> Tensor {
    let n: usize = shape.iter().product();
    let values = if values.len() == 1 {
        vec![values[0]; n]
    } else {
        values.to_vec()
    };
    ctx.numbers(dtype, shape, values)
}

pub(super) fn iota(ctx: Ctx, axis: usize, dtype: DType, shape: Vec<usize>) -> Tensor {
    let values = map_indices(&shape, |o| o[axis] as f64);
    ctx.numbers(dtype, shape, values)
}

pub(super) fn uniform(
    ctx: Ctx,
    low: f64,
    high: f64,
    seed: u64,
    dtype: DType,
    shape: Vec<usize>,
) -> Tensor {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| low + (high - low) * rng::uniform01(seed, i))
        .collect();
    ctx.floats(dtype, shape, values)
}

pub(super) fn normal(
    ctx: Ctx,
    mean: f64,
    std: f64,
    seed: u64,
    dtype: DType,
    shape: Vec<usize>,
) -> Tensor {
    let n: usize = shape.iter().product();
    let values = (0..n as u64)
        .map(|i| mean + std * rng::normal01(seed, i))
        .collect();
    ctx.floats(dtype, shape, values)
}
