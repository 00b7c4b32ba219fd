//! Neural-network ops: `Softmax`, `LogSoftmax`, `LayerNormalization`,
//! `RMSNormalization`, `SoftmaxCrossEntropyLoss`, `Attention`, `Trilu`, `CumSum`, `Conv`.

use super::linalg::matmul;
use super::one;
use crate::onnx::import::{norm_axis, Importer, NodeCtx, OpResult, Out};
use smelt_compiler::ir::ops::conv::Conv2d;
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, Composite, ReduceOp, UnaryOp};
use smelt_compiler::ir::{DType, Dim, Op, Shape, TensorType, ValueId};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    match op {
        "Softmax" | "LogSoftmax" => one(softmax(im, node, op == "LogSoftmax")?),
        "LayerNormalization" | "RMSNormalization" => {
            normalization(im, node, op == "RMSNormalization")
        }
        "SoftmaxCrossEntropyLoss" => cross_entropy(im, node),
        "Attention" => attention(im, node),
        "Trilu" => one(trilu(im, node)?),
        "CumSum" => one(cumsum(im, node)?),
        "Conv" => one(conv(im, node)?),
        _ => Ok(None),
    }
}

fn bin(im: &mut Importer, op: BinaryOp, a: ValueId, b: ValueId) -> OpResult<ValueId> {
    im.op(Op::Binary(op), &[a, b])
}

fn product(dims: &[Dim]) -> OpResult<Dim> {
    Ok(Shape(dims.to_vec()).numel()?)
}

/// Before opset 13, softmax normalises the 2-D coercion `[prod(:axis), prod(axis:)]`.
fn softmax(im: &mut Importer, node: &NodeCtx, log: bool) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let dims = im.dims(x);
    let legacy = node.opset < 13;
    let axis = norm_axis(
        node.int_or("axis", if legacy { 1 } else { -1 })?,
        dims.len(),
    )?;
    let (work, axis) = if legacy {
        let coerced = vec![product(&dims[..axis])?, product(&dims[axis..])?];
        (im.reshape(x, coerced)?, 1)
    } else {
        (x, axis)
    };
    let c = if log {
        Composite::LogSoftmax { axis }
    } else {
        Composite::Softmax { axis }
    };
    let y = im.op(Op::Composite(c), &[work])?;
    im.reshape(y, dims)
}

/// Layer and RMS normalisation over axes `axis..`: the normalised axes are flattened
/// into one so the IR's last-axis composites apply.
fn normalization(im: &mut Importer, node: &NodeCtx, rms: bool) -> OpResult<Option<Vec<Out>>> {
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let dims = ty.dims().to_vec();
    let axis = norm_axis(node.int_or("axis", -1)?, dims.len())?;
    let eps = node.float_or("epsilon", 1e-5)?;
    // stash_type 1 (the default) computes in f32.
    let work_dtype = if node.int_or("stash_type", 1)? == 1 {
        DType::F32
    } else {
        ty.dtype
    };
    let (prefix, suffix) = dims.split_at(axis);
    let n = product(suffix)?;
    let mut flat_dims = prefix.to_vec();
    flat_dims.push(n.clone());
    let xw = im.cast(x, work_dtype)?;
    let xf = im.reshape(xw, flat_dims)?;
    let vector = |im: &mut Importer, v: ValueId| -> OpResult<ValueId> {
        let v = im.cast(v, work_dtype)?;
        let v = im.broadcast_to(v, suffix)?;
        im.reshape(v, vec![n.clone()])
    };
    let scale = im.input(node, 1)?;
    let scale = vector(im, scale)?;
    let y = if rms {
        im.op(Op::Composite(Composite::RmsNorm { eps }), &[xf, scale])?
    } else {
        let bias = match im.opt_input(node, 2)? {
            Some(b) => vector(im, b)?,
            None => im.splat(0.0, work_dtype, vec![n.clone()])?,
        };
        im.op(
            Op::Composite(Composite::LayerNorm { eps }),
            &[xf, scale, bias],
        )?
    };
    let y = im.reshape(y, dims.clone())?;
    let y = im.cast(y, ty.dtype)?;
    let mut out = vec![Out::Ir(y)];
    if !rms && (node.wants_output(1) || node.wants_output(2)) {
        // Mean and inverse standard deviation, with the normalised axes kept as 1s.
        let last = prefix.len();
        let mean = im.op(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: vec![last],
            },
            &[xf],
        )?;
        let mean_b = im.op_typed(
            Op::Broadcast {
                dims: (0..last).collect(),
            },
            &[mean],
            im.ty(xf),
        )?;
        let centred = bin(im, BinaryOp::Sub, xf, mean_b)?;
        let sq = bin(im, BinaryOp::Mul, centred, centred)?;
        let var = im.op(
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: vec![last],
            },
            &[sq],
        )?;
        let e = im.splat_like(eps, var)?;
        let var = bin(im, BinaryOp::Add, var, e)?;
        let inv = im.op(Op::Unary(UnaryOp::Rsqrt), &[var])?;
        let kept: Vec<Dim> = prefix
            .iter()
            .cloned()
            .chain(suffix.iter().map(|_| Dim::fixed(1)))
            .collect();
        let mean = im.reshape(mean, kept.clone())?;
        let inv = im.reshape(inv, kept)?;
        out.push(Out::Ir(mean));
        out.push(Out::Ir(inv));
    }
    Ok(Some(out))
}

/// `SoftmaxCrossEntropyLoss`: scores `[N, C, d...]`, labels `[N, d...]`, optional class
/// weights `[C]`. Labels pick their class through a one-hot mask, so an ignored label
/// outside `0..C` is harmless.
fn cross_entropy(im: &mut Importer, node: &NodeCtx) -> OpResult<Option<Vec<Out>>> {
    let scores = im.input(node, 0)?;
    let labels = im.input(node, 1)?;
    let weights = im.opt_input(node, 2)?;
    let st = im.ty(scores);
    let r = st.rank();
    if r < 2 {
        return Err(format!("scores must be [N, C, ...], found {st}").into());
    }
    let logp = im.op(Op::Composite(Composite::LogSoftmax { axis: 1 }), &[scores])?;
    let label_ty = im.ty(labels);
    let classes = im.op_typed(Op::Iota { axis: 1 }, &[], st.with_dtype(label_ty.dtype))?;
    let spread: Vec<usize> = (0..r).filter(|&a| a != 1).collect();
    let labels_b = im.op_typed(
        Op::Broadcast { dims: spread },
        &[labels],
        st.with_dtype(label_ty.dtype),
    )?;
    let hit = im.op(Op::Compare(CompareOp::Eq), &[classes, labels_b])?;
    let zero = im.splat_like(0.0, logp)?;
    let picked = im.op(Op::Select, &[hit, logp, zero])?;
    let picked = im.op(
        Op::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
        },
        &[picked],
    )?;
    let mut loss = im.op(Op::Unary(UnaryOp::Neg), &[picked])?;
    let ignore = node.int("ignore_index")?;
    let weighted = weights.is_some() || ignore.is_some();
    let mut w = None;
    if weighted {
        let per_element = match weights {
            Some(wt) => {
                let wb = im.op_typed(Op::Broadcast { dims: vec![1] }, &[wt], st.clone())?;
                let masked = im.op(Op::Select, &[hit, wb, zero])?;
                im.op(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: vec![1],
                    },
                    &[masked],
                )?
            }
            None => im.splat_like(1.0, loss)?,
        };
        let per_element = match ignore {
            Some(i) => {
                let ii = im.splat_like(i as f64, labels)?;
                let keep = im.op(Op::Compare(CompareOp::Ne), &[labels, ii])?;
                let z = im.splat_like(0.0, per_element)?;
                im.op(Op::Select, &[keep, per_element, z])?
            }
            None => per_element,
        };
        loss = bin(im, BinaryOp::Mul, loss, per_element)?;
        w = Some(per_element);
    }
    let all: Vec<usize> = (0..r - 1).collect();
    let reduction = node.string("reduction")?.unwrap_or_else(|| "mean".into());
    let y = match reduction.as_str() {
        "none" => loss,
        "sum" => im.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: all,
            },
            &[loss],
        )?,
        "mean" => match w {
            Some(w) => {
                let total = im.op(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: all.clone(),
                    },
                    &[loss],
                )?;
                let wsum = im.op(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes: all,
                    },
                    &[w],
                )?;
                bin(im, BinaryOp::Div, total, wsum)?
            }
            None => im.op(
                Op::Reduce {
                    op: ReduceOp::Mean,
                    axes: all,
                },
                &[loss],
            )?,
        },
        other => return Err(format!("unknown reduction '{other}'").into()),
    };
    Ok(Some(vec![Out::Ir(y), Out::Ir(logp)]))
}

fn trilu(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let r = ty.rank();
    if r < 2 {
        return Err(format!("'Trilu' needs rank >= 2, found {ty}").into());
    }
    let k = im
        .const_input(node, 1)?
        .map(|c| c.as_i64s().first().copied().unwrap_or(0))
        .unwrap_or(0);
    let upper = node.int_or("upper", 1)? != 0;
    let idx_ty = ty.with_dtype(DType::I64);
    let rows = im.op_typed(Op::Iota { axis: r - 2 }, &[], idx_ty.clone())?;
    let cols = im.op_typed(Op::Iota { axis: r - 1 }, &[], idx_ty)?;
    let shift = im.splat_like(k as f64, rows)?;
    let diagonal = bin(im, BinaryOp::Add, rows, shift)?;
    // Keep j >= i + k (upper) or j <= i + k (lower).
    let cmp = if upper { CompareOp::Ge } else { CompareOp::Le };
    let keep = im.op(Op::Compare(cmp), &[cols, diagonal])?;
    let zero = im.splat_like(0.0, x)?;
    im.op(Op::Select, &[keep, x, zero])
}

/// `CumSum` as a product with a triangular 0/1 matrix along the summed axis.
fn cumsum(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let r = ty.rank();
    let axis = im
        .const_input(node, 1)?
        .ok_or("'CumSum' needs an axis input")?
        .as_i64s()
        .first()
        .copied()
        .ok_or("'CumSum' axis is empty")?;
    let axis = norm_axis(axis, r)?;
    let n = ty.dims()[axis]
        .as_static()
        .ok_or_else(|| format!("'CumSum' needs a static size on axis {axis}, found {ty}"))?;
    let exclusive = node.int_or("exclusive", 0)? != 0;
    let reverse = node.int_or("reverse", 0)? != 0;
    let mut perm: Vec<usize> = (0..r).filter(|&a| a != axis).collect();
    perm.push(axis);
    let moved = im.permute(x, perm.clone())?;
    let mdims = im.dims(moved);
    let rows = product(&mdims[..r - 1])?;
    let flat = im.reshape(moved, vec![rows, Dim::fixed(n)])?;
    // weights[i][j] = 1 when input i contributes to output j.
    let mut w = Vec::with_capacity((n * n) as usize);
    for i in 0..n {
        for j in 0..n {
            let take = match (reverse, exclusive) {
                (false, false) => i <= j,
                (false, true) => i < j,
                (true, false) => i >= j,
                (true, true) => i > j,
            };
            w.push(if take { 1.0 } else { 0.0 });
        }
    }
    let weights = im.op_typed(
        Op::Constant { values: w },
        &[],
        TensorType::fixed(ty.dtype, &[n, n]),
    )?;
    let y = im.op(Op::MatMul, &[flat, weights])?;
    let y = im.reshape(y, mdims)?;
    let mut inverse = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    im.permute(y, inverse)
}

/// Splits `[B, S, heads*H]` into `[B, heads, S, H]`.
fn split_heads(im: &mut Importer, x: ValueId, heads: i64) -> OpResult<ValueId> {
    let d = im.dims(x);
    let hidden = d[2]
        .as_static()
        .ok_or("'Attention' needs a static hidden size")?;
    if heads <= 0 || hidden % heads as u64 != 0 {
        return Err(format!("hidden size {hidden} is not divisible by {heads} heads").into());
    }
    let h = hidden / heads as u64;
    let x = im.reshape(
        x,
        vec![
            d[0].clone(),
            d[1].clone(),
            Dim::fixed(heads as u64),
            Dim::fixed(h),
        ],
    )?;
    im.permute(x, vec![0, 2, 1, 3])
}

/// Repeats each of the `kv` heads of `[B, kv, S, H]` `reps` times (grouped-query attention).
fn repeat_heads(im: &mut Importer, x: ValueId, reps: u64) -> OpResult<ValueId> {
    if reps == 1 {
        return Ok(x);
    }
    let d = im.dims(x);
    let x5 = im.reshape(
        x,
        vec![
            d[0].clone(),
            d[1].clone(),
            Dim::fixed(1),
            d[2].clone(),
            d[3].clone(),
        ],
    )?;
    let wide = vec![
        d[0].clone(),
        d[1].clone(),
        Dim::fixed(reps),
        d[2].clone(),
        d[3].clone(),
    ];
    let x5 = im.broadcast_to(x5, &wide)?;
    im.reshape(
        x5,
        vec![
            d[0].clone(),
            d[1].mul(&Dim::fixed(reps))?,
            d[2].clone(),
            d[3].clone(),
        ],
    )
}

/// `Attention` (opset 23), following ONNX's reference: optional past keys and values,
/// grouped heads, boolean or additive masks, causal masking offset by the past length,
/// softcap, and the optional `qk_matmul_output`.
fn attention(im: &mut Importer, node: &NodeCtx) -> OpResult<Option<Vec<Out>>> {
    let q_in = im.input(node, 0)?;
    let (k_in, v_in) = (im.input(node, 1)?, im.input(node, 2)?);
    let out_dtype = im.ty(q_in).dtype;
    // Narrow floats compute in f32 like the reference; f64 keeps its precision.
    let work = if out_dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let three_d = im.ty(q_in).rank() == 3;
    let (mut q, mut k, mut v) = (
        im.cast(q_in, work)?,
        im.cast(k_in, work)?,
        im.cast(v_in, work)?,
    );
    if three_d {
        let qh = node
            .int("q_num_heads")?
            .ok_or("3-D 'Attention' needs q_num_heads")?;
        let kvh = node
            .int("kv_num_heads")?
            .ok_or("3-D 'Attention' needs kv_num_heads")?;
        q = split_heads(im, q, qh)?;
        k = split_heads(im, k, kvh)?;
        v = split_heads(im, v, kvh)?;
    }
    let past_len = match im.opt_input(node, 4)? {
        Some(pk) => {
            let pk32 = im.cast(pk, work)?;
            let n = im.dims(pk)[2]
                .as_static()
                .ok_or("static past length needed")?;
            k = im.op(Op::Concat { axis: 2 }, &[pk32, k])?;
            n
        }
        None => 0,
    };
    if let Some(pv) = im.opt_input(node, 5)? {
        let pv = im.cast(pv, work)?;
        v = im.op(Op::Concat { axis: 2 }, &[pv, v])?;
    }
    let present_k = k;
    let present_v = v;
    let qd = im.dims(q);
    let kd = im.dims(k);
    let (qh, kvh) = (
        qd[1].as_static().ok_or("static head count needed")?,
        kd[1].as_static().ok_or("static head count needed")?,
    );
    if kvh == 0 || qh % kvh != 0 {
        return Err(format!("{qh} query heads cannot share {kvh} key/value heads").into());
    }
    let k = repeat_heads(im, k, qh / kvh)?;
    let v = repeat_heads(im, v, qh / kvh)?;
    let head = qd[3].as_static().ok_or("static head size needed")?;
    let scale = node.float_or("scale", 1.0 / (head as f64).sqrt())?;
    let kt = im.permute(k, vec![0, 1, 3, 2])?;
    let scores = matmul(im, q, kt)?;
    let s = im.splat_like(scale, scores)?;
    let mut scores = bin(im, BinaryOp::Mul, scores, s)?;
    let softcap = node.float_or("softcap", 0.0)?;
    if softcap > 0.0 {
        let c = im.splat_like(softcap, scores)?;
        let t = bin(im, BinaryOp::Div, scores, c)?;
        let t = im.op(Op::Unary(UnaryOp::Tanh), &[t])?;
        scores = bin(im, BinaryOp::Mul, t, c)?;
    }
    let qk_capped = scores;
    let sd = im.dims(scores);
    let (sq, skv) = (
        sd[2].as_static().ok_or("static lengths needed")?,
        sd[3].as_static().ok_or("static lengths needed")?,
    );
    if let Some(mask) = im.opt_input(node, 3)? {
        let mt = im.ty(mask);
        let mut bias = if mt.dtype == DType::Bool {
            let zero = im.splat(0.0, work, mt.dims().to_vec())?;
            let ninf = im.splat(f64::NEG_INFINITY, work, mt.dims().to_vec())?;
            im.op(Op::Select, &[mask, zero, ninf])?
        } else {
            im.cast(mask, work)?
        };
        // A mask shorter than the keys is padded with "masked out".
        let have = mt.dims().last().and_then(Dim::as_static).unwrap_or(skv);
        if have < skv {
            let axis = mt.rank() - 1;
            bias = im.op(
                Op::Pad {
                    axis,
                    low: 0,
                    high: skv - have,
                    value: f64::NEG_INFINITY,
                },
                &[bias],
            )?;
        }
        let bias = im.broadcast_to(bias, &sd)?;
        scores = bin(im, BinaryOp::Add, scores, bias)?;
    }
    if let Some(seqlen) = im.opt_input(node, 6)? {
        // `nonpad_kv_seqlen` (opset 24): batch entry b sees only its first
        // `seqlen[b]` keys; the rest are padding.
        let batch = sd[0].clone();
        let dims = vec![batch.clone(), Dim::fixed(skv)];
        let idx_ty = TensorType::new(DType::I64, Shape(dims.clone()));
        let positions = im.op_typed(Op::Iota { axis: 1 }, &[], idx_ty)?;
        let seqlen = im.cast(seqlen, DType::I64)?;
        let seqlen = im.reshape(seqlen, vec![batch.clone(), Dim::fixed(1)])?;
        let seqlen = im.broadcast_to(seqlen, &dims)?;
        let real = im.op(Op::Compare(CompareOp::Lt), &[positions, seqlen])?;
        let zero = im.splat(0.0, work, dims.clone())?;
        let ninf = im.splat(f64::NEG_INFINITY, work, dims)?;
        let bias = im.op(Op::Select, &[real, zero, ninf])?;
        let bias = im.reshape(
            bias,
            vec![batch, Dim::fixed(1), Dim::fixed(1), Dim::fixed(skv)],
        )?;
        let bias = im.broadcast_to(bias, &sd)?;
        scores = bin(im, BinaryOp::Add, scores, bias)?;
    }
    if node.int_or("is_causal", 0)? != 0 {
        // Query i sees the past and new keys j <= i.
        let idx_ty = TensorType::fixed(DType::I64, &[sq, skv]);
        let rows = im.op_typed(Op::Iota { axis: 0 }, &[], idx_ty.clone())?;
        let cols = im.op_typed(Op::Iota { axis: 1 }, &[], idx_ty)?;
        let offset = im.splat_like(past_len as f64, rows)?;
        let limit = bin(im, BinaryOp::Add, rows, offset)?;
        let visible = im.op(Op::Compare(CompareOp::Le), &[cols, limit])?;
        let zero = im.splat(0.0, work, vec![Dim::fixed(sq), Dim::fixed(skv)])?;
        let ninf = im.splat(
            f64::NEG_INFINITY,
            work,
            vec![Dim::fixed(sq), Dim::fixed(skv)],
        )?;
        let bias = im.op(Op::Select, &[visible, zero, ninf])?;
        let bias = im.broadcast_to(bias, &sd)?;
        scores = bin(im, BinaryOp::Add, scores, bias)?;
    }
    let p = im.op(Op::Composite(Composite::Softmax { axis: 3 }), &[scores])?;
    let mut y = matmul(im, p, v)?;
    if three_d {
        let yd = im.dims(y);
        y = im.permute(y, vec![0, 2, 1, 3])?;
        y = im.reshape(y, vec![yd[0].clone(), yd[2].clone(), yd[1].mul(&yd[3])?])?;
    }
    let y = im.cast(y, out_dtype)?;
    let qk = match node.int_or("qk_matmul_output_mode", 0)? {
        2 => scores,
        3 => p,
        _ => qk_capped,
    };
    let mut out = vec![Out::Ir(y)];
    for extra in [present_k, present_v, qk] {
        out.push(Out::Ir(im.cast(extra, out_dtype)?));
    }
    Ok(Some(out))
}

/// `Conv` over 1 or 2 spatial axes (a 1-D convolution runs as a 2-D one of height 1),
/// with `auto_pad`, `pads`, `strides`, `dilations`, `group` and an optional bias.
fn conv(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let (x, w) = (im.input(node, 0)?, im.input(node, 1)?);
    let x_dims = im.dims(x);
    let spatial = x_dims.len().saturating_sub(2);
    if !(1..=2).contains(&spatial) || im.dims(w).len() != x_dims.len() {
        return Err(format!(
            "Conv over {spatial} spatial axes is not supported (1 or 2 are), input {}, weights {}",
            im.ty(x),
            im.ty(w)
        )
        .into());
    }
    let w_dims = im.static_dims(w, "Conv weights")?;
    let in_sizes = im.static_dims(x, "Conv input")?;
    let list = |name: &str, default: i64| -> Vec<i64> {
        node.ints(name).unwrap_or_else(|| vec![default; spatial])
    };
    let (strides, dilations) = (list("strides", 1), list("dilations", 1));
    let kernel = &w_dims[2..];
    let sizes = &in_sizes[2..];
    let mut pads = node.ints("pads").unwrap_or_else(|| vec![0; 2 * spatial]);
    let auto_pad = node.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    if strides.len() != spatial || dilations.len() != spatial || pads.len() != 2 * spatial {
        return Err("Conv's strides, dilations and pads must match its spatial axes".into());
    }
    if strides
        .iter()
        .chain(&dilations)
        .chain(&pads)
        .any(|&v| v < 0)
    {
        return Err("Conv's strides, dilations and pads must not be negative".into());
    }
    match auto_pad.as_str() {
        "NOTSET" => {}
        "VALID" => pads.iter_mut().for_each(|p| *p = 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            for a in 0..spatial {
                let stride = strides[a].max(1) as u64;
                let reach = (dilations[a] as u64)
                    .checked_mul(kernel[a].saturating_sub(1))
                    .and_then(|r| r.checked_add(1));
                let split = reach.and_then(|r| {
                    super::pool::same_padding(sizes[a], stride, r, auto_pad == "SAME_UPPER")
                });
                let (low, high) = split
                    .filter(|&(l, h)| l.max(h) <= i64::MAX as u64)
                    .ok_or("Conv sizes overflow")?;
                (pads[a], pads[spatial + a]) = (low as i64, high as i64);
            }
        }
        other => return Err(format!("Conv auto_pad {other} is not supported").into()),
    }
    // Two spatial axes: a 1-D convolution gets a height of 1.
    let (attrs, x2, w2) = if spatial == 2 {
        let p = |i: usize| pads[i] as u64;
        let conv = Conv2d {
            strides: [strides[0] as u64, strides[1] as u64],
            pads: [p(0), p(1), p(2), p(3)],
            dilations: [dilations[0] as u64, dilations[1] as u64],
            groups: node.int_or("group", 1)? as u64,
        };
        (conv, x, w)
    } else {
        let conv = Conv2d {
            strides: [1, strides[0] as u64],
            pads: [0, pads[0] as u64, 0, pads[1] as u64],
            dilations: [1, dilations[0] as u64],
            groups: node.int_or("group", 1)? as u64,
        };
        let mut xd = x_dims.clone();
        xd.insert(2, Dim::fixed(1));
        let wd: Vec<Dim> = [w_dims[0], w_dims[1], 1, w_dims[2]]
            .into_iter()
            .map(Dim::fixed)
            .collect();
        (conv, im.reshape(x, xd)?, im.reshape(w, wd)?)
    };
    let mut y = im.op(Op::Composite(Composite::Conv(attrs)), &[x2, w2])?;
    if spatial == 1 {
        let mut dims = im.dims(y);
        dims.remove(2);
        y = im.reshape(y, dims)?;
    }
    if let Some(bias) = im.opt_input(node, 2)? {
        let dims = im.dims(y);
        let ty = im.ty(bias).with_shape(Shape(dims));
        let b = im.op_typed(Op::Broadcast { dims: vec![1] }, &[bias], ty)?;
        y = bin(im, BinaryOp::Add, y, b)?;
    }
    Ok(y)
}
