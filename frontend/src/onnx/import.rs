//! The import context: ONNX value names bound to IR values or import-time constants,
//! node attributes, and the building blocks every op mapping uses (numpy broadcasting
//! made explicit, reshapes, casts, constants).

use super::proto::{AttributeProto, NodeProto};
use super::shape_values::ShapeValue;
use super::tensor::{decode_tensor, Const, ConstData};
use smelt_compiler::ir::{Builder, DType, Dim, Op, Shape, TensorType, ValueId};
use std::collections::HashMap;

/// Why a node could not be imported.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// A valid model uses something the importer or the IR does not support.
    Unsupported(String),
    /// The model is invalid (wrong arity, bad attribute, type mismatch).
    Invalid(String),
}

impl From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail::Invalid(message)
    }
}

impl From<smelt_compiler::ir::SizeOverflow> for Fail {
    fn from(e: smelt_compiler::ir::SizeOverflow) -> Fail {
        Fail::Invalid(e.to_string())
    }
}

impl From<smelt_compiler::ir::BuildError> for Fail {
    fn from(e: smelt_compiler::ir::BuildError) -> Fail {
        Fail::Invalid(e.to_string())
    }
}

impl From<&str> for Fail {
    fn from(message: &str) -> Fail {
        Fail::Invalid(message.to_string())
    }
}

/// The result type of op mappings.
pub type OpResult<T> = Result<T, Fail>;

/// Shorthand for an `Unsupported` failure.
pub fn unsupported<T>(message: impl Into<String>) -> OpResult<T> {
    Err(Fail::Unsupported(message.into()))
}

/// What an ONNX value name stands for: an IR value, a constant known at import time,
/// or both (a constant already materialised, or a graph input whose value was given);
/// or a small integer vector holding symbolic sizes, which only shape operands take.
#[derive(Clone, Debug, Default)]
pub struct Slot {
    /// The IR value.
    pub id: Option<ValueId>,
    /// The value, when known at import time.
    pub konst: Option<Const>,
    /// The value, when known at import time only in terms of symbolic sizes.
    pub sizes: Option<ShapeValue>,
}

/// One result of an op mapping.
pub enum Out {
    /// An IR value.
    Ir(ValueId),
    /// A value computed at import time (shapes and other static data).
    Const(Const),
    /// A shape computation's result, possibly with symbolic sizes.
    Sizes(ShapeValue),
}

impl Out {
    /// `v` as a constant when it has no symbolic element.
    pub fn known(v: ShapeValue) -> Out {
        match v.to_const() {
            Some(c) => Out::Const(c),
            None => Out::Sizes(v),
        }
    }
}

/// The node being imported: its proto and the opset in force.
pub struct NodeCtx<'a> {
    /// The node.
    pub proto: &'a NodeProto,
    /// The opset version of the default domain.
    pub opset: i64,
}

impl NodeCtx<'_> {
    /// The op type.
    pub fn op(&self) -> &str {
        self.proto.op_type.as_deref().unwrap_or("")
    }

    /// Number of inputs, trailing absent ones included.
    pub fn input_count(&self) -> usize {
        self.proto.input.len()
    }

    /// The name of input `i`, if given (absent optional inputs have empty names).
    pub fn input_name(&self, i: usize) -> Option<&str> {
        self.proto
            .input
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// True if output `i` is requested.
    pub fn wants_output(&self, i: usize) -> bool {
        self.proto.output.get(i).is_some_and(|n| !n.is_empty())
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.proto
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    /// True if attribute `name` is present.
    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> OpResult<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => {
                a.i.map(Some)
                    .ok_or_else(|| Fail::from(format!("attribute '{name}' must be an integer")))
            }
        }
    }

    /// An integer attribute with a default.
    pub fn int_or(&self, name: &str, default: i64) -> OpResult<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A float attribute with a default.
    pub fn float_or(&self, name: &str, default: f64) -> OpResult<f64> {
        match self.attr(name) {
            None => Ok(default),
            Some(a) => {
                a.f.map(f64::from)
                    .ok_or_else(|| Fail::from(format!("attribute '{name}' must be a float")))
            }
        }
    }

    /// A list-of-integers attribute.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A list-of-floats attribute.
    pub fn floats(&self, name: &str) -> Option<Vec<f64>> {
        self.attr(name)
            .map(|a| a.floats.iter().map(|&x| f64::from(x)).collect())
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> OpResult<Option<String>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match &a.s {
                Some(s) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
                None => Err(format!("attribute '{name}' must be a string").into()),
            },
        }
    }

    /// A tensor attribute, decoded.
    pub fn tensor(&self, name: &str) -> OpResult<Option<Const>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) => match &a.t {
                Some(t) => decode_tensor(t)
                    .map(Some)
                    .map_err(|e| Fail::Unsupported(format!("attribute '{name}': {e}"))),
                None => Err(format!("attribute '{name}' must be a tensor").into()),
            },
        }
    }
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}").into());
    }
    Ok(a as usize)
}

/// The importer's state while walking one graph.
pub struct Importer {
    /// The IR graph being built.
    pub b: Builder,
    /// ONNX value names in scope.
    pub slots: HashMap<String, Slot>,
    /// Declared ONNX element type codes (graph inputs, initializers, `value_info`), by
    /// name, plus `STRING` for the results of nodes that give strings: the IR type does
    /// not tell an int4 from an int32 (`CastLike` needs to) or strings from `i64` keys.
    pub elem_types: HashMap<String, i32>,
}

impl Importer {
    /// The slot of ONNX value `name`.
    fn slot(&self, name: &str) -> OpResult<&Slot> {
        self.slots
            .get(name)
            .ok_or_else(|| format!("value '{name}' is used before it is defined").into())
    }

    /// The IR value of ONNX value `name`, materialising a constant if needed.
    pub fn value(&mut self, name: &str) -> OpResult<ValueId> {
        let slot = self.slot(name)?.clone();
        if let Some(id) = slot.id {
            return Ok(id);
        }
        if let Some(sizes) = &slot.sizes {
            return unsupported(format!(
                "value '{name}' ({sizes}) holds sizes of symbolic dimensions and is used as data; such values may only be shape operands (of Reshape, Expand, ConstantOfShape, Range)"
            ));
        }
        let konst = slot
            .konst
            .ok_or_else(|| format!("value '{name}' has no definition"))?;
        let id = self.constant(&konst)?;
        if let Some(s) = self.slots.get_mut(name) {
            s.id = Some(id);
        }
        Ok(id)
    }

    /// Required input `i` of `node` as an IR value.
    pub fn input(&mut self, node: &NodeCtx, i: usize) -> OpResult<ValueId> {
        let name = node
            .input_name(i)
            .ok_or_else(|| format!("'{}' needs input {i}", node.op()))?;
        self.value(name)
    }

    /// Optional input `i` of `node` as an IR value.
    pub fn opt_input(&mut self, node: &NodeCtx, i: usize) -> OpResult<Option<ValueId>> {
        match node.input_name(i) {
            Some(name) => self.value(name).map(Some),
            None => Ok(None),
        }
    }

    /// The value of ONNX value `name` as a small integer vector, if it is known at
    /// import time as one (symbolic sizes included).
    pub fn known(&self, name: &str) -> Option<ShapeValue> {
        let slot = self.slots.get(name)?;
        match (&slot.sizes, &slot.konst) {
            (Some(sizes), _) => Some(sizes.clone()),
            (None, Some(c)) => ShapeValue::from_const(c),
            (None, None) => None,
        }
    }

    /// Optional input `i` that gives sizes (a shape operand), known at import time with
    /// symbolic sizes allowed.
    pub fn sizes_input(&self, node: &NodeCtx, i: usize) -> OpResult<Option<ShapeValue>> {
        let Some(name) = node.input_name(i) else {
            return Ok(None);
        };
        match self.known(name) {
            Some(v) => Ok(Some(v)),
            // Known, but not as an integer vector: not a valid shape operand.
            None if self.slot(name)?.konst.is_some() => Err(format!(
                "input {i} ('{name}') of '{}' must be an integer tensor of rank 0 or 1",
                node.op()
            )
            .into()),
            None => self.const_input(node, i).map(|_| None),
        }
    }

    /// Optional input `i` whose value must be known at import time (shapes, axes).
    pub fn const_input(&self, node: &NodeCtx, i: usize) -> OpResult<Option<Const>> {
        let Some(name) = node.input_name(i) else {
            return Ok(None);
        };
        let slot = self.slot(name)?;
        if let Some(sizes) = &slot.sizes {
            return unsupported(format!(
                "input {i} ('{name}') of '{}' is {sizes}, which depends on symbolic dimensions, and this operand must be static",
                node.op()
            ));
        }
        match &slot.konst {
            Some(c) => Ok(Some(c.clone())),
            None => unsupported(format!(
                "input {i} ('{name}') of '{}' must be known at import time (an initializer, a Constant, or a graph input whose value is given), because the IR's shapes are static",
                node.op()
            )),
        }
    }

    /// The type of `id`.
    pub fn ty(&self, id: ValueId) -> TensorType {
        self.b.ty(id).clone()
    }

    /// The dimensions of `id`.
    pub fn dims(&self, id: ValueId) -> Vec<Dim> {
        self.b.ty(id).dims().to_vec()
    }

    /// The static sizes of `id`, or an error naming the op that needs them.
    pub fn static_dims(&self, id: ValueId, why: &str) -> OpResult<Vec<u64>> {
        let ty = self.b.ty(id);
        ty.shape
            .as_static()
            .ok_or_else(|| Fail::Unsupported(format!("{why} needs static dimensions, found {ty}")))
    }

    /// Adds a node whose type the op infers.
    pub fn op(&mut self, op: Op, operands: &[ValueId]) -> OpResult<ValueId> {
        Ok(self.b.node(None, op, operands, None)?)
    }

    /// Adds a node with a declared result type.
    pub fn op_typed(&mut self, op: Op, operands: &[ValueId], ty: TensorType) -> OpResult<ValueId> {
        Ok(self.b.node(None, op, operands, Some(ty))?)
    }

    /// An IR constant holding `c`.
    pub fn constant(&mut self, c: &Const) -> OpResult<ValueId> {
        let mut values = match &c.data {
            ConstData::Float(v) => v.clone(),
            ConstData::Int(v) => v.iter().map(|&x| x as f64).collect(),
            ConstData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        };
        // A uniform constant prints as one value; NaN never compares equal, so keep it.
        if values.len() > 1 && values.iter().all(|&x| x == values[0]) {
            values.truncate(1);
        }
        let shape: Vec<u64> = c.shape.iter().map(|&d| d as u64).collect();
        self.op_typed(
            Op::Constant { values },
            &[],
            TensorType::fixed(c.dtype, &shape),
        )
    }

    /// A constant of `dtype` and `dims` holding `value` everywhere.
    pub fn splat(&mut self, value: f64, dtype: DType, dims: Vec<Dim>) -> OpResult<ValueId> {
        self.op_typed(
            Op::Constant {
                values: vec![value],
            },
            &[],
            TensorType::new(dtype, Shape(dims)),
        )
    }

    /// A constant like `x` holding `value` everywhere.
    pub fn splat_like(&mut self, value: f64, x: ValueId) -> OpResult<ValueId> {
        let ty = self.ty(x);
        self.splat(value, ty.dtype, ty.dims().to_vec())
    }

    /// `x` reshaped to `dims` (no node if it already has them).
    pub fn reshape(&mut self, x: ValueId, dims: Vec<Dim>) -> OpResult<ValueId> {
        if self.dims(x) == dims {
            return Ok(x);
        }
        let ty = self.ty(x).with_shape(Shape(dims));
        self.op_typed(Op::Reshape, &[x], ty)
    }

    /// `x` converted to `dtype` (no node if it already is).
    pub fn cast(&mut self, x: ValueId, dtype: DType) -> OpResult<ValueId> {
        let ty = self.ty(x);
        if ty.dtype == dtype {
            return Ok(x);
        }
        self.op_typed(Op::Cast, &[x], ty.with_dtype(dtype))
    }

    /// `x` permuted by `perm` (no node for the identity).
    pub fn permute(&mut self, x: ValueId, perm: Vec<usize>) -> OpResult<ValueId> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.op(Op::Permute { perm }, &[x])
    }

    /// `x` broadcast numpy-style (axes aligned on the right) to `dims`.
    pub fn broadcast_to(&mut self, x: ValueId, dims: &[Dim]) -> OpResult<ValueId> {
        let have = self.dims(x);
        if have == dims {
            return Ok(x);
        }
        if have.len() > dims.len() {
            return Err(format!("cannot broadcast {} to rank {}", self.ty(x), dims.len()).into());
        }
        let offset = dims.len() - have.len();
        let ty = self.ty(x).with_shape(Shape(dims.to_vec()));
        self.op_typed(
            Op::Broadcast {
                dims: (offset..dims.len()).collect(),
            },
            &[x],
            ty,
        )
    }

    /// The numpy broadcast of the shapes of `xs`.
    pub fn broadcast_dims(&self, xs: &[ValueId]) -> OpResult<Vec<Dim>> {
        let shapes: Vec<Vec<Dim>> = xs.iter().map(|&x| self.dims(x)).collect();
        broadcast_shapes(&shapes)
    }

    /// `xs` broadcast to their common shape.
    pub fn broadcast_all(&mut self, xs: &[ValueId]) -> OpResult<Vec<ValueId>> {
        let dims = self.broadcast_dims(xs)?;
        xs.iter().map(|&x| self.broadcast_to(x, &dims)).collect()
    }

    /// `x` with the reduced `axes` put back as size-1 axes (ONNX `keepdims`).
    pub fn keep_dims(&mut self, x: ValueId, full_rank: usize, axes: &[usize]) -> OpResult<ValueId> {
        let reduced = self.dims(x);
        let mut it = reduced.into_iter();
        let dims: Vec<Dim> = (0..full_rank)
            .map(|a| {
                if axes.contains(&a) {
                    Dim::fixed(1)
                } else {
                    it.next().unwrap_or_else(|| Dim::fixed(1))
                }
            })
            .collect();
        self.reshape(x, dims)
    }
}

/// The numpy broadcast of several shapes.
pub fn broadcast_shapes(shapes: &[Vec<Dim>]) -> OpResult<Vec<Dim>> {
    let rank = shapes.iter().map(Vec::len).max().unwrap_or(0);
    let one = Dim::fixed(1);
    let mut out = vec![one.clone(); rank];
    for s in shapes {
        let offset = rank - s.len();
        for (i, d) in s.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == one {
                *o = d.clone();
            } else if *d != one && d != o {
                return Err(format!(
                    "shapes {} cannot be broadcast together",
                    shapes
                        .iter()
                        .map(|s| Shape(s.clone()).to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
                .into());
            }
        }
    }
    Ok(out)
}

/// The product of static `dims`, checked.
pub fn numel(dims: &[u64]) -> OpResult<u64> {
    Ok(dims.iter().try_fold(1, |acc, &d| {
        smelt_compiler::ir::size_mul(acc, d, || format!("the element count of {dims:?}"))
    })?)
}

/// Static sizes as dimensions.
pub fn fixed_dims(dims: &[u64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::fixed(d)).collect()
}
