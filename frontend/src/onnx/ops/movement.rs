//! Shape and movement ops: `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Transpose`,
//! `Concat`, `Split`, `Slice`, `Expand`, `Gather`, and the shape computations folded at
//! import time: `Shape`, `Size`, `ConstantOfShape`, `Range`.
//!
//! Shape operands must be known at import time, as numbers or as symbolic sizes of the
//! inputs' dynamic axes ([`ShapeValue`]). Small integer computations on them (`Shape`
//! -> `Gather` -> `Unsqueeze` -> `Concat`, `Slice` of a shape, with `Add`/`Sub`/`Mul`/
//! `Div`, `Equal`, `Where`, `Max`/`Min`) are folded, so exported dynamic-shape patterns
//! import once with symbolic dimensions; `Range` up to a symbolic size becomes an
//! `iota`, and a `Slice` of data may end at a symbolic size when it keeps the axis
//! whole.

use super::one;
use crate::onnx::import::{
    broadcast_shapes, norm_axis, unsupported, Importer, NodeCtx, OpResult, Out,
};
use crate::onnx::shape_values::{self, ShapeValue, SymInt};
use crate::onnx::tensor::{round_float, Const, ConstData};
use smelt_compiler::ir::ops::{BinaryOp, CompareOp};
use smelt_compiler::ir::{DType, Dim, Op, Shape, TensorType, ValueId};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    if let Some(folded) = fold(im, node, op)? {
        return Ok(Some(vec![folded]));
    }
    match op {
        "Reshape" => {
            let x = im.input(node, 0)?;
            let shape = if node.opset < 5 {
                node.ints("shape")
                    .ok_or("'Reshape' needs attribute 'shape'")?
                    .into_iter()
                    .map(SymInt::Int)
                    .collect()
            } else {
                im.sizes_input(node, 1)?
                    .ok_or("'Reshape' needs a shape input")?
                    .elems
            };
            let allow_zero = node.int_or("allowzero", 0)? != 0;
            let dims = reshape_dims(&im.dims(x), &shape, allow_zero)?;
            one(im.reshape(x, dims)?)
        }
        "Flatten" => {
            let x = im.input(node, 0)?;
            let dims = im.dims(x);
            let r = dims.len() as i64;
            let axis = node.int_or("axis", 1)?;
            let axis = if axis < 0 { axis + r } else { axis };
            if !(0..=r).contains(&axis) {
                return Err(format!("axis {axis} is out of range for rank {r}").into());
            }
            let (head, tail) = dims.split_at(axis as usize);
            let prod = |ds: &[Dim]| Shape(ds.to_vec()).numel();
            one(im.reshape(x, vec![prod(head)?, prod(tail)?])?)
        }
        "Squeeze" => {
            let x = im.input(node, 0)?;
            let dims = im.dims(x);
            let axes = axes_operand(im, node, 13)?;
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|&a| norm_axis(a, dims.len()))
                    .collect::<OpResult<_>>()?,
                None => (0..dims.len())
                    .filter(|&i| dims[i] == Dim::fixed(1))
                    .collect(),
            };
            for &a in &axes {
                if dims[a] != Dim::fixed(1) {
                    return Err(format!("cannot squeeze axis {a} of size {}", dims[a]).into());
                }
            }
            let kept = (0..dims.len())
                .filter(|i| !axes.contains(i))
                .map(|i| dims[i].clone())
                .collect();
            one(im.reshape(x, kept)?)
        }
        "Unsqueeze" => {
            let x = im.input(node, 0)?;
            let axes = axes_operand(im, node, 13)?.ok_or("'Unsqueeze' needs axes")?;
            let dims = unsqueeze_dims(im.dims(x), &axes)?;
            one(im.reshape(x, dims)?)
        }
        "Transpose" => {
            let x = im.input(node, 0)?;
            let r = im.ty(x).rank();
            let perm: Vec<usize> = match node.ints("perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| norm_axis(a, r))
                    .collect::<OpResult<_>>()?,
                None => (0..r).rev().collect(),
            };
            one(im.permute(x, perm)?)
        }
        "Concat" => {
            let xs = (0..node.input_count())
                .filter(|&i| node.input_name(i).is_some())
                .map(|i| im.input(node, i))
                .collect::<OpResult<Vec<_>>>()?;
            let first = *xs.first().ok_or("'Concat' needs inputs")?;
            let axis = norm_axis(
                node.int("axis")?.ok_or("'Concat' needs attribute 'axis'")?,
                im.ty(first).rank(),
            )?;
            one(im.op(Op::Concat { axis }, &xs)?)
        }
        "Split" => split(im, node),
        "Slice" => one(slice(im, node)?),
        "Expand" => {
            let x = im.input(node, 0)?;
            let target = im
                .sizes_input(node, 1)?
                .ok_or("'Expand' needs a shape input")?
                .to_dims("'Expand' shape")?;
            let dims = broadcast_shapes(&[im.dims(x), target])?;
            one(im.broadcast_to(x, &dims)?)
        }
        "Gather" => one(gather(im, node)?),
        "ConstantOfShape" => {
            let dims = im
                .sizes_input(node, 0)?
                .ok_or("'ConstantOfShape' needs a shape input")?
                .to_dims("shape")?;
            let (dtype, value) = match node.tensor("value")? {
                Some(t) if t.numel() == 1 => (t.dtype, t.as_f64s()[0]),
                Some(_) => return Err("'value' must hold one element".into()),
                None => (DType::F32, 0.0),
            };
            one(im.splat(value, dtype, dims)?)
        }
        _ => Ok(None),
    }
}

/// The axes of `Squeeze`/`Unsqueeze`/reductions: an attribute before `input_from`, an
/// optional second input from then on.
pub(super) fn axes_operand(
    im: &Importer,
    node: &NodeCtx,
    input_from: i64,
) -> OpResult<Option<Vec<i64>>> {
    if node.opset < input_from {
        Ok(node.ints("axes"))
    } else {
        Ok(im.const_input(node, 1)?.map(|c| c.as_i64s()))
    }
}

fn unsqueeze_dims(dims: Vec<Dim>, axes: &[i64]) -> OpResult<Vec<Dim>> {
    let rank = dims.len() + axes.len();
    let mut axes = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<OpResult<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    if axes.len() != rank - dims.len() {
        return Err("'Unsqueeze' axes repeat".into());
    }
    let mut it = dims.into_iter();
    Ok((0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::fixed(1)
            } else {
                it.next().unwrap_or_else(|| Dim::fixed(1))
            }
        })
        .collect())
}

/// The target dims of `Reshape` (`0` copies the input dim unless `allow_zero`, `-1` is inferred).
fn reshape_dims(input: &[Dim], shape: &[SymInt], allow_zero: bool) -> OpResult<Vec<Dim>> {
    let shown: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_text = format!("[{}]", shown.join(", "));
    let mut dims: Vec<Option<Dim>> = Vec::new();
    for (i, s) in shape.iter().enumerate() {
        dims.push(match s {
            SymInt::Int(0) if !allow_zero => {
                Some(input.get(i).cloned().ok_or_else(|| {
                    format!("reshape shape {shape_text}: no input dim {i} to copy")
                })?)
            }
            SymInt::Int(-1) => None,
            s => Some(
                s.to_dim()
                    .ok_or_else(|| format!("reshape shape {shape_text} has size {s}"))?,
            ),
        });
    }
    let unknown = dims.iter().filter(|d| d.is_none()).count();
    if unknown > 1 {
        return Err(format!("reshape shape {shape_text} has more than one -1").into());
    }
    if unknown == 1 {
        let total = Shape(input.to_vec()).numel()?;
        let known = Shape(dims.iter().flatten().cloned().collect()).numel()?;
        let inferred = total.div_exact(&known).ok_or_else(|| {
            format!(
                "cannot infer the -1 of reshape shape {shape_text} from input [{}]",
                Shape(input.to_vec())
            )
        })?;
        for d in &mut dims {
            if d.is_none() {
                *d = Some(inferred.clone());
            }
        }
    }
    Ok(dims.into_iter().flatten().collect())
}

fn split(im: &mut Importer, node: &NodeCtx) -> OpResult<Option<Vec<Out>>> {
    let x = im.input(node, 0)?;
    let rank = im.ty(x).rank();
    let axis = norm_axis(node.int_or("axis", 0)?, rank)?;
    let n = im.static_dims(x, "'Split'")?[axis];
    let outputs = node.proto.output.len() as u64;
    let sizes: Vec<u64> = if node.opset < 13 {
        node.ints("split")
            .map(|s| s.iter().map(|&v| v.max(0) as u64).collect())
            .unwrap_or_default()
    } else {
        im.const_input(node, 1)?
            .map(|c| c.as_i64s().iter().map(|&v| v.max(0) as u64).collect())
            .unwrap_or_default()
    };
    let sizes = if !sizes.is_empty() {
        sizes
    } else {
        let parts = node
            .int("num_outputs")?
            .map_or(outputs, |k| k.max(1) as u64);
        if parts == 0 {
            return Err("'Split' has no outputs".into());
        }
        let chunk = n.div_ceil(parts);
        (0..parts)
            .map(|i| chunk.min(n.saturating_sub(i * chunk)))
            .collect()
    };
    if sizes.iter().sum::<u64>() != n {
        return Err(format!("split sizes {sizes:?} do not add up to {n}").into());
    }
    let mut start = 0;
    let mut out = Vec::new();
    for s in sizes {
        let part = im.op(
            Op::Slice {
                axis,
                start,
                end: start + s,
                step: 1,
            },
            &[x],
        )?;
        out.push(Out::Ir(part));
        start += s;
    }
    Ok(Some(out))
}

fn slice(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let dims = im.dims(x);
    let rank = dims.len();
    let (starts, ends, axes, steps) = if node.opset < 10 {
        (
            node.ints("starts").ok_or("'Slice' needs 'starts'")?,
            node.ints("ends")
                .ok_or("'Slice' needs 'ends'")?
                .into_iter()
                .map(SymInt::Int)
                .collect(),
            node.ints("axes"),
            None,
        )
    } else {
        let get = |i| im.const_input(node, i).map(|c| c.map(|c| c.as_i64s()));
        // Ends may be symbolic sizes (`x[:, :seq]` with `seq` from `Shape`).
        let ends = im.sizes_input(node, 2)?.ok_or("'Slice' needs ends")?;
        (
            get(1)?.ok_or("'Slice' needs starts")?,
            ends.elems,
            get(3)?,
            get(4)?,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("'Slice' starts, ends, axes and steps differ in length".into());
    }
    let mut y = x;
    for i in 0..starts.len() {
        let axis = norm_axis(axes[i], rank)?;
        let Some(n) = dims[axis].as_static() else {
            // A symbolic axis may only be kept whole (PyTorch's `x[:, 0:]`, `x[:, :seq]`).
            let to_the_end = match &ends[i] {
                SymInt::Int(e) => *e >= i64::from(i32::MAX),
                SymInt::Dim(d) => *d == dims[axis],
            };
            if starts[i] == 0 && steps[i] == 1 && to_the_end {
                continue;
            }
            return unsupported(format!(
                "'Slice' of axis {axis} (size {}) from {} to {} by {}: a symbolic axis may only be sliced whole",
                dims[axis], starts[i], ends[i], steps[i]
            ));
        };
        let SymInt::Int(end) = ends[i] else {
            return unsupported(format!(
                "'Slice' of axis {axis} (size {n}) ends at {}, a symbolic size",
                ends[i]
            ));
        };
        let n = i128::from(n);
        let step = i128::from(steps[i]);
        let (s, e) = (i128::from(starts[i]), i128::from(end));
        let wrap = |v: i128| if v < 0 { v + n } else { v };
        if step == 0 {
            return Err("'Slice' step must not be 0".into());
        }
        if step > 0 {
            let s = wrap(s).clamp(0, n);
            let e = wrap(e).clamp(0, n).max(s);
            y = im.op(
                Op::Slice {
                    axis,
                    start: s as u64,
                    end: e as u64,
                    step: step as u64,
                },
                &[y],
            )?;
        } else {
            // Backward slices pick their indices with a gather.
            let s = wrap(s).clamp(0, n - 1);
            let e = wrap(e).clamp(-1, n - 1);
            let mut idx = Vec::new();
            let mut k = s;
            while k > e {
                idx.push(k as i64);
                k += step;
            }
            let c = Const::ints(idx);
            let idx = im.constant(&c)?;
            y = im.op(Op::Gather { axis }, &[y, idx])?;
        }
    }
    Ok(y)
}

fn gather(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let table = im.input(node, 0)?;
    let rank = im.ty(table).rank();
    let axis = norm_axis(node.int_or("axis", 0)?, rank)?;
    let n = im.dims(table)[axis].as_static();
    // Negative indices count from the end; the IR's gather takes 0..n only.
    let idx = match (im.const_input(node, 1).ok().flatten(), n) {
        (Some(c), Some(n)) => {
            let fixed: Vec<i64> = c
                .as_i64s()
                .iter()
                .map(|&i| if i < 0 { i + n as i64 } else { i })
                .collect();
            im.constant(&Const {
                dtype: c.dtype,
                shape: c.shape.clone(),
                data: ConstData::Int(fixed),
            })?
        }
        (_, Some(n)) => {
            let idx = im.input(node, 1)?;
            let zero = im.splat_like(0.0, idx)?;
            let size = im.splat_like(n as f64, idx)?;
            let neg = im.op(Op::Compare(CompareOp::Lt), &[idx, zero])?;
            let wrapped = im.op(Op::Binary(BinaryOp::Add), &[idx, size])?;
            im.op(Op::Select, &[neg, wrapped, idx])?
        }
        (_, None) => im.input(node, 1)?,
    };
    im.op(Op::Gather { axis }, &[table, idx])
}

/// Folds shape computations whose operands are all known at import time.
fn fold(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Out>> {
    match op {
        "Shape" => {
            let x = im.input(node, 0)?;
            let dims = im.dims(x);
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(node.int_or("start", 0)?);
            let end = clampi(node.int_or("end", r)?).max(start);
            Ok(Some(Out::known(ShapeValue::from_dims(&dims[start..end]))))
        }
        "Size" => {
            let x = im.input(node, 0)?;
            let count = Shape(im.dims(x)).numel()?;
            Ok(Some(Out::known(ShapeValue {
                scalar: true,
                ..ShapeValue::from_dims(&[count])
            })))
        }
        "Range" => range(im, node),
        _ if shape_values::ELEMENTWISE.contains(&op) => fold_elementwise(im, node, op),
        "Slice" => fold_slice(im, node),
        "Unsqueeze" | "Squeeze" | "Concat" | "Gather" | "Identity" | "Cast" => {
            Ok(fold_small_ints(im, node, op)?.map(Out::known))
        }
        _ => Ok(None),
    }
}

/// `Slice` of a 1-D integer vector known at import time (`Shape(x)[:-1]`), whose
/// starts, ends and steps are constants (opset 10 and later).
fn fold_slice(im: &Importer, node: &NodeCtx) -> OpResult<Option<Out>> {
    let Some(v) = node.input_name(0).and_then(|n| im.known(n)) else {
        return Ok(None);
    };
    if v.scalar || node.opset < 10 {
        return Ok(None);
    }
    let get = |i| im.const_input(node, i).map(|c| c.map(|c| c.as_i64s()));
    let (Some(starts), Some(ends)) = (get(1)?, get(2)?) else {
        return Ok(None);
    };
    let axes = get(3)?.unwrap_or_else(|| vec![0]);
    let steps = get(4)?.unwrap_or_else(|| vec![1]);
    if [starts.len(), ends.len(), steps.len()] != [1, 1, 1] || !matches!(axes[..], [0] | [-1]) {
        return Ok(None);
    }
    let n = v.elems.len() as i64;
    let (start, end, step) = (starts[0], ends[0], steps[0]);
    if step == 0 {
        return Err("'Slice' step must not be 0".into());
    }
    let wrap = |x: i64| if x < 0 { x.saturating_add(n) } else { x };
    let picked: Vec<i64> = if step > 0 {
        let (s, e) = (wrap(start).clamp(0, n), wrap(end).clamp(0, n));
        (s..e).step_by(step as usize).collect()
    } else {
        let (s, e) = (
            wrap(start).clamp(-1, n - 1).max(0),
            wrap(end).clamp(-1, n - 1),
        );
        if n == 0 {
            return Ok(Some(Out::known(ShapeValue { elems: vec![], ..v })));
        }
        let mut out = Vec::new();
        let mut k = s;
        while k > e {
            out.push(k);
            k += step;
        }
        out
    };
    let elems = picked
        .iter()
        .map(|&i| v.elems[i as usize].clone())
        .collect();
    Ok(Some(Out::known(ShapeValue { elems, ..v })))
}

/// Integer arithmetic and comparisons on small integer values known at import time
/// (sizes above all: `batch * sequence`, `hidden / heads`), so that the shapes they
/// build stay known.
fn fold_elementwise(im: &Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Out>> {
    let mut operands = Vec::new();
    for i in 0..node.input_count() {
        match node.input_name(i).and_then(|name| im.known(name)) {
            Some(v) => operands.push(v),
            None => return Ok(None),
        }
    }
    let condition_first = op == "Where";
    // `Max` and `Min` take any number of operands; only pairs are folded.
    if operands.len() != if condition_first { 3 } else { 2 } {
        return Ok(None);
    }
    let ints_only = operands
        .iter()
        .enumerate()
        .all(|(i, v)| v.dtype.is_int() || (condition_first && i == 0));
    if !ints_only {
        return Ok(None);
    }
    Ok(Some(Out::known(shape_values::elementwise(op, &operands)?)))
}

/// `Range`: a constant when its operands are known numbers; `iota` over a symbolic
/// length when it counts from 0 by 1 up to a symbolic size (position ids).
fn range(im: &mut Importer, node: &NodeCtx) -> OpResult<Option<Out>> {
    let known = |i: usize| node.input_name(i).and_then(|n| im.known(n));
    if let (Some(start), Some(limit), Some(delta)) = (known(0), known(1), known(2)) {
        if limit.is_symbolic() {
            let is = |v: &ShapeValue, n: i64| v.elems == [SymInt::Int(n)];
            if !(is(&start, 0) && is(&delta, 1)) {
                return unsupported(format!(
                    "'Range' from {start} to {limit} by {delta}: only ranges from 0 by 1 may end at a symbolic size"
                ));
            }
            let length = limit.to_dims("'Range' limit")?;
            let ty = TensorType::new(limit.dtype, Shape(length));
            return Ok(Some(Out::Ir(im.op_typed(Op::Iota { axis: 0 }, &[], ty)?)));
        }
    }
    let get = |i| -> OpResult<Const> {
        im.const_input(node, i)?
            .ok_or_else(|| format!("'Range' needs input {i}").into())
    };
    let (start, limit, delta) = (get(0)?, get(1)?, get(2)?);
    let dtype = start.dtype;
    let (s, l, d) = (start.as_f64s()[0], limit.as_f64s()[0], delta.as_f64s()[0]);
    if d == 0.0 {
        return Err("'Range' delta must not be 0".into());
    }
    let count = ((l - s) / d).ceil().max(0.0);
    if count > 1e8 {
        return unsupported(format!("'Range' of {count} elements is too large"));
    }
    let count = count as usize;
    let data = if dtype.is_float() {
        // Each element is start + i * delta computed in the output type.
        let (s, d) = (round_float(dtype, s), round_float(dtype, d));
        ConstData::Float(
            (0..count)
                .map(|i| round_float(dtype, s + i as f64 * d))
                .collect(),
        )
    } else {
        let (s, d) = (start.as_i64s()[0], delta.as_i64s()[0]);
        ConstData::Int((0..count as i64).map(|i| s + i * d).collect())
    };
    Ok(Some(Out::Const(Const {
        dtype,
        shape: vec![count],
        data,
    })))
}

/// Integer tensors of rank <= 1 known at import time (symbolic sizes included) stay
/// known through these ops.
fn fold_small_ints(im: &Importer, node: &NodeCtx, op: &str) -> OpResult<Option<ShapeValue>> {
    let mut known = Vec::new();
    for i in 0..node.input_count() {
        let Some(name) = node.input_name(i) else {
            continue;
        };
        match im.known(name) {
            Some(v) if v.dtype != DType::Bool || op == "Identity" => known.push(v),
            _ => return Ok(None),
        }
    }
    let Some(first) = known.first() else {
        return Ok(None);
    };
    Ok(match op {
        "Identity" => Some(first.clone()),
        "Cast" => match node
            .int("to")?
            .map(|t| crate::onnx::tensor::ir_dtype(t as i32))
        {
            Some(Ok(t)) if t.is_int() => Some(first.cast(t)),
            _ => None,
        },
        "Unsqueeze" => {
            let axes = axes_operand(im, node, 13)?.unwrap_or_default();
            let len = Dim::fixed(first.elems.len() as u64);
            let rank = if first.scalar { 0 } else { 1 };
            let dims = unsqueeze_dims(vec![len; rank], &axes)?;
            (dims.len() == 1).then(|| ShapeValue {
                scalar: false,
                ..first.clone()
            })
        }
        "Squeeze" => (first.elems.len() == 1).then(|| ShapeValue {
            scalar: true,
            ..first.clone()
        }),
        "Concat" => {
            if known.iter().any(|v| v.scalar) {
                return Ok(None);
            }
            Some(ShapeValue {
                dtype: first.dtype,
                scalar: false,
                elems: known.iter().flat_map(|v| v.elems.clone()).collect(),
            })
        }
        "Gather" if known.len() == 2 && !first.scalar => {
            let n = first.elems.len() as i64;
            let idx = &known[1];
            let mut elems = Vec::new();
            for i in &idx.elems {
                let SymInt::Int(i) = *i else {
                    return Ok(None);
                };
                let j = if i < 0 { i + n } else { i };
                match first.elems.get(j as usize) {
                    Some(e) if j >= 0 => elems.push(e.clone()),
                    _ => return Err(format!("gather index {i} is out of range for {n}").into()),
                }
            }
            Some(ShapeValue {
                dtype: first.dtype,
                scalar: idx.scalar,
                elems,
            })
        }
        _ => None,
    })
}
