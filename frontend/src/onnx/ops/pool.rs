//! Vision ops around convolutions: `MaxPool`, `AveragePool`, `GlobalMaxPool`,
//! `GlobalAveragePool` and `BatchNormalization` (inference), over any number of
//! spatial axes.
//!
//! A pool is written with the IR's primitives: the input padded (with −∞ for a max,
//! zeros for an average), one strided slice per kernel tap, and the taps folded with
//! `max` or `add`; an average divides by the number of elements each window counts,
//! worked out here (it depends only on the sizes). `ceil_mode` windows that run past
//! the padded input read padding that no window counts.

use super::one;
use crate::onnx::import::{unsupported, Importer, NodeCtx, OpResult, Out};
use crate::onnx::tensor::{Const, ConstData};
use smelt_compiler::ir::ops::conv::MAX_TAPS;
use smelt_compiler::ir::ops::{BinaryOp, ReduceOp, UnaryOp};
use smelt_compiler::ir::{DType, Op, Shape, ValueId};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    match op {
        "MaxPool" => one(pool(im, node, true)?),
        "AveragePool" => one(pool(im, node, false)?),
        "GlobalMaxPool" | "GlobalAveragePool" => one(global(im, node, op == "GlobalMaxPool")?),
        "BatchNormalization" => one(batch_norm(im, node)?),
        _ => Ok(None),
    }
}

/// The windows of a pool along each spatial axis.
struct Windows {
    kernel: Vec<u64>,
    strides: Vec<u64>,
    dilations: Vec<u64>,
    /// Padding before and after each axis, as the model asks.
    begin: Vec<u64>,
    end: Vec<u64>,
    /// Padding after each axis that only lets `ceil_mode`'s last window fit.
    extra: Vec<u64>,
    out: Vec<u64>,
}

impl Windows {
    fn new(node: &NodeCtx, sizes: &[u64]) -> OpResult<Windows> {
        let n = sizes.len();
        let kernel = node
            .ints("kernel_shape")
            .ok_or("a pool needs kernel_shape")?;
        let list = |name: &str, default: i64, len: usize| -> OpResult<Vec<u64>> {
            let v = node.ints(name).unwrap_or_else(|| vec![default; len]);
            if v.len() != len || v.iter().any(|&x| x < 0) {
                return Err(format!("pool attribute {name} must have {len} values >= 0").into());
            }
            Ok(v.into_iter().map(|x| x as u64).collect())
        };
        if kernel.len() != n || kernel.iter().any(|&k| k < 1) {
            return Err(format!("kernel_shape {kernel:?} does not fit {n} spatial axes").into());
        }
        let kernel: Vec<u64> = kernel.into_iter().map(|k| k as u64).collect();
        let (strides, dilations) = (list("strides", 1, n)?, list("dilations", 1, n)?);
        if strides.contains(&0) || dilations.contains(&0) {
            return Err("pool strides and dilations must be at least 1".into());
        }
        let pads = list("pads", 0, 2 * n)?;
        let (mut begin, mut end) = (pads[..n].to_vec(), pads[n..].to_vec());
        let ceil = node.int_or("ceil_mode", 0)? != 0;
        let auto_pad = node.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        // Attributes come from the file: every size is checked, and so is the node
        // count of the expansion (one slice per tap).
        kernel
            .iter()
            .try_fold(1u64, |t, &k| t.checked_mul(k))
            .filter(|&t| t <= MAX_TAPS)
            .ok_or_else(|| {
                format!("a pool of more than {MAX_TAPS} taps ({kernel:?}) is not supported")
            })?;
        let overflow = || format!("pool sizes overflow (input {sizes:?}, kernel {kernel:?})");
        let fits = |v: Option<u64>| -> OpResult<u64> { v.ok_or_else(|| overflow().into()) };
        let mut out = vec![0; n];
        let mut extra = vec![0; n];
        for a in 0..n {
            let reach = fits(
                dilations[a]
                    .checked_mul(kernel[a] - 1)
                    .and_then(|r| r.checked_add(1)),
            )?;
            match auto_pad.as_str() {
                "NOTSET" => {}
                "VALID" => (begin[a], end[a]) = (0, 0),
                "SAME_UPPER" | "SAME_LOWER" => {
                    let upper = auto_pad == "SAME_UPPER";
                    let split = same_padding(sizes[a], strides[a], reach, upper);
                    (begin[a], end[a]) = split.ok_or_else(overflow)?;
                }
                other => return Err(format!("pool auto_pad {other} is not supported").into()),
            }
            let padded = fits(
                sizes[a]
                    .checked_add(begin[a])
                    .and_then(|p| p.checked_add(end[a])),
            )?;
            if padded < reach {
                return Err(format!(
                    "pool window {reach} is larger than the padded input {padded}"
                )
                .into());
            }
            let span = padded - reach;
            out[a] = if ceil {
                // The last window must start inside the input or its leading padding
                // (both sums fit: they are at most `padded`, plus one stride).
                let o = span.div_ceil(strides[a]) + 1;
                let last_start = fits((o - 1).checked_mul(strides[a]))?;
                if last_start >= sizes[a] + begin[a] {
                    o - 1
                } else {
                    o
                }
            } else {
                span / strides[a] + 1
            };
            let last_end = (out[a] - 1)
                .checked_mul(strides[a])
                .and_then(|e| e.checked_add(reach));
            extra[a] = fits(last_end)?.saturating_sub(padded);
        }
        Ok(Windows {
            kernel,
            strides,
            dilations,
            begin,
            end,
            extra,
            out,
        })
    }

    /// How many elements window `o` of axis `a` counts: those inside the input, or
    /// inside the input and its padding (`with_pads`).
    fn count(&self, a: usize, o: u64, size: u64, with_pads: bool) -> u64 {
        let (low, high) = if with_pads {
            (0, size + self.begin[a] + self.end[a])
        } else {
            (self.begin[a], self.begin[a] + size)
        };
        (0..self.kernel[a])
            .map(|k| o * self.strides[a] + k * self.dilations[a])
            .filter(|&i| i >= low && i < high)
            .count() as u64
    }
}

/// ONNX's `SAME_UPPER`/`SAME_LOWER` padding of an axis of `size` for windows reaching
/// `reach` elements every `stride`: as many outputs as `size / stride` rounded up, the
/// padding split in two with the odd element at the end (`upper`) or the start.
/// `None` if the sizes overflow.
pub(super) fn same_padding(size: u64, stride: u64, reach: u64, upper: bool) -> Option<(u64, u64)> {
    let outputs = size.div_ceil(stride);
    let covered = outputs
        .saturating_sub(1)
        .checked_mul(stride)?
        .checked_add(reach)?;
    let total = covered.saturating_sub(size);
    let (small, large) = (total / 2, total - total / 2);
    Some(if upper {
        (small, large)
    } else {
        (large, small)
    })
}

/// `MaxPool` (`max`) or `AveragePool`.
fn pool(im: &mut Importer, node: &NodeCtx, max: bool) -> OpResult<ValueId> {
    if node.wants_output(1) {
        return unsupported("MaxPool's Indices output is not supported");
    }
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    // A max pads with the smallest value of the dtype, which no window's max can be.
    let lowest = match ty.dtype {
        d if d.is_float() => f64::NEG_INFINITY,
        DType::I32 if max => f64::from(i32::MIN),
        DType::I64 if max => i64::MIN as f64,
        _ => {
            return unsupported(format!(
                "{} takes float tensors here, found {ty}",
                node.op()
            ))
        }
    };
    let dims = im.static_dims(x, "a pool's input")?;
    if dims.len() < 3 {
        return Err(format!("a pool needs [N, C, spatial...], found {ty}").into());
    }
    let sizes = &dims[2..];
    let w = Windows::new(node, sizes)?;
    let fill = if max { lowest } else { 0.0 };
    let mut padded = x;
    for a in 0..sizes.len() {
        let (low, high) = (w.begin[a], w.end[a] + w.extra[a]);
        if low + high > 0 {
            padded = im.op(
                Op::Pad {
                    axis: 2 + a,
                    low,
                    high,
                    value: fill,
                },
                &[padded],
            )?;
        }
    }
    let taps: u64 = w.kernel.iter().product();
    let mut folded: Option<ValueId> = None;
    for t in 0..taps {
        // Tap `t` as a multi-index over the kernel, last axis fastest.
        let mut rest = t;
        let mut window = padded;
        for a in (0..sizes.len()).rev() {
            let k = rest % w.kernel[a];
            rest /= w.kernel[a];
            let start = k * w.dilations[a];
            window = im.op(
                Op::Slice {
                    axis: 2 + a,
                    start,
                    end: start + w.strides[a] * (w.out[a] - 1) + 1,
                    step: w.strides[a],
                },
                &[window],
            )?;
        }
        let op = if max { BinaryOp::Max } else { BinaryOp::Add };
        folded = Some(match folded {
            Some(acc) => im.op(Op::Binary(op), &[acc, window])?,
            None => window,
        });
    }
    let folded = folded.ok_or("a pool kernel has at least one tap")?;
    if max {
        return Ok(folded);
    }
    let with_pads = node.int_or("count_include_pad", 0)? != 0;
    let mut counts = vec![1.0f64];
    for (a, &size) in sizes.iter().enumerate() {
        let along: Vec<f64> = (0..w.out[a])
            .map(|o| w.count(a, o, size, with_pads) as f64)
            .collect();
        counts = counts
            .iter()
            .flat_map(|c| along.iter().map(move |n| c * n))
            .collect();
    }
    let counts = im.constant(&Const {
        dtype: ty.dtype,
        shape: w.out.iter().map(|&o| o as usize).collect(),
        data: ConstData::Float(counts),
    })?;
    let result = im.dims(folded);
    let counts_ty = ty.with_shape(Shape(result.clone()));
    let spatial: Vec<usize> = (2..result.len()).collect();
    let counts = im.op_typed(Op::Broadcast { dims: spatial }, &[counts], counts_ty)?;
    im.op(Op::Binary(BinaryOp::Div), &[folded, counts])
}

/// `GlobalMaxPool` / `GlobalAveragePool`: over every spatial axis, kept as size 1.
fn global(im: &mut Importer, node: &NodeCtx, max: bool) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let rank = im.dims(x).len();
    if rank < 3 {
        return Err(format!("a global pool needs [N, C, spatial...], found {}", im.ty(x)).into());
    }
    let axes: Vec<usize> = (2..rank).collect();
    let op = if max { ReduceOp::Max } else { ReduceOp::Mean };
    let reduced = im.op(
        Op::Reduce {
            op,
            axes: axes.clone(),
        },
        &[x],
    )?;
    im.keep_dims(reduced, rank, &axes)
}

/// `BatchNormalization` in inference mode: `(x − mean) / sqrt(var + ε) · scale + bias`
/// per channel (axis 1).
fn batch_norm(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    if node.int_or("training_mode", 0)? != 0 {
        return unsupported(
            "BatchNormalization in training mode (batch statistics) is not supported",
        );
    }
    let x = im.input(node, 0)?;
    let dims = im.dims(x);
    if dims.len() < 2 {
        return Err(format!("BatchNormalization needs [N, C, ...], found {}", im.ty(x)).into());
    }
    let eps = node.float_or("epsilon", 1e-5)?;
    let per_channel = |im: &mut Importer, i: usize| -> OpResult<ValueId> {
        let v = im.input(node, i)?;
        if im.dims(v) != [dims[1].clone()] {
            return Err(format!(
                "BatchNormalization's input {i} must be [C] = [{}], found {}",
                dims[1],
                im.ty(v)
            )
            .into());
        }
        let ty = im.ty(v).with_shape(Shape(dims.clone()));
        im.op_typed(Op::Broadcast { dims: vec![1] }, &[v], ty)
    };
    let (scale, bias, mean, var) = (
        per_channel(im, 1)?,
        per_channel(im, 2)?,
        per_channel(im, 3)?,
        per_channel(im, 4)?,
    );
    let eps = im.splat(eps, im.ty(x).dtype, dims.clone())?;
    let var = im.op(Op::Binary(BinaryOp::Add), &[var, eps])?;
    let inv = im.op(Op::Unary(UnaryOp::Rsqrt), &[var])?;
    let centred = im.op(Op::Binary(BinaryOp::Sub), &[x, mean])?;
    let normed = im.op(Op::Binary(BinaryOp::Mul), &[centred, inv])?;
    let scaled = im.op(Op::Binary(BinaryOp::Mul), &[normed, scale])?;
    im.op(Op::Binary(BinaryOp::Add), &[scaled, bias])
}
