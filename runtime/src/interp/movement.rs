//! Meaning of the movement ops (see `compiler::ir::ops::movement`): each output element
//! is picked from a computed source position.

use super::{map_indices, offset, strides, Ctx};
use crate::tensor::{Data, Tensor};

fn picked(x: &Tensor, shape: Vec<usize>, index: Vec<usize>) -> Tensor {
    Tensor {
        dtype: x.dtype,
        shape,
        data: x.data.pick(&index),
    }
}

pub(super) fn permute(perm: &[usize], x: &Tensor, shape: Vec<usize>) -> Tensor {
    let s = strides(&x.shape);
    let index = map_indices(&shape, |o| {
        o.iter().zip(perm).map(|(&i, &p)| i * s[p]).sum()
    });
    picked(x, shape, index)
}

pub(super) fn broadcast(dims: &[usize], x: &Tensor, shape: Vec<usize>) -> Tensor {
    let s = strides(&x.shape);
    let index = map_indices(&shape, |o| {
        dims.iter()
            .enumerate()
            .map(|(i, &d)| if x.shape[i] == 1 { 0 } else { o[d] * s[i] })
            .sum()
    });
    picked(x, shape, index)
}

pub(super) fn slice(
    axis: usize,
    start: usize,
    step: usize,
    x: &Tensor,
    shape: Vec<usize>,
) -> Tensor {
    let s = strides(&x.shape);
    let index = map_indices(&shape, |o| {
        offset(o, &s) + (start + o[axis] * step - o[axis]) * s[axis]
    });
    picked(x, shape, index)
}

/// Joins the operands' elements into one flat array; returns it and each operand's offset.
fn joined(parts: &[&Tensor]) -> (Data, Vec<usize>) {
    let mut offsets = Vec::new();
    let mut n = 0;
    for p in parts {
        offsets.push(n);
        n += p.numel();
    }
    let data = match &parts[0].data {
        Data::Float(_) => Data::Float(parts.iter().flat_map(|p| p.floats().to_vec()).collect()),
        Data::Int(_) => Data::Int(
            parts
                .iter()
                .flat_map(|p| match &p.data {
                    Data::Int(v) => v.clone(),
                    _ => unreachable!("one dtype"),
                })
                .collect(),
        ),
        Data::Bool(_) => Data::Bool(
            parts
                .iter()
                .flat_map(|p| match &p.data {
                    Data::Bool(v) => v.clone(),
                    _ => unreachable!("one dtype"),
                })
                .collect(),
        ),
    };
    (data, offsets)
}

pub(super) fn concat(axis: usize, parts: &[&Tensor], shape: Vec<usize>) -> Tensor {
    let (data, offsets) = joined(parts);
    let part_strides: Vec<Vec<usize>> = parts.iter().map(|p| strides(&p.shape)).collect();
    let index = map_indices(&shape, |o| {
        let mut at = o[axis];
        for (k, p) in parts.iter().enumerate() {
            if at < p.shape[axis] {
                let mut idx = o.to_vec();
                idx[axis] = at;
                return offsets[k] + offset(&idx, &part_strides[k]);
            }
            at -= p.shape[axis];
        }
        unreachable!("the output axis is the sum of the parts' axes (verified)")
    });
    Tensor {
        dtype: parts[0].dtype,
        shape,
        data: data.pick(&index),
    }
}

pub(super) fn pad(
    ctx: Ctx,
    axis: usize,
    low: usize,
    value: f64,
    x: &Tensor,
    shape: Vec<usize>,
) -> Tensor {
    // The fill value is appended as one extra element that padding positions pick.
    let fill = ctx.numbers(x.dtype, vec![1], vec![value]);
    let (data, _) = joined(&[x, &fill]);
    let s = strides(&x.shape);
    let n = x.shape[axis];
    let index = map_indices(&shape, |o| {
        if o[axis] < low || o[axis] >= low + n {
            x.numel()
        } else {
            offset(o, &s) - low * s[axis]
        }
    });
    Tensor {
        dtype: x.dtype,
        shape,
        data: data.pick(&index),
    }
}
