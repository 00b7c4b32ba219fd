//! Building graphs in code: each added node is type-checked by its op's shape rule,
//! so a builder can only make graphs that verify.

use super::ops::{BinaryOp, CompareOp, Op, ReduceOp, UnaryOp};
use super::{
    is_value_name, BuildError, Def, Graph, Init, ParamTypeError, TensorType, Value, ValueId,
};
use rustc_hash::FxHashSet;

/// Incrementally builds a [`Graph`].
pub struct Builder {
    graph: Graph,
    names: FxHashSet<String>,
    /// Names that generated names must avoid (values that will be added later).
    reserved: FxHashSet<String>,
    next_anon: usize,
    /// The outputs and the update targets so far, as sets: checking a new one against
    /// the lists would be quadratic in a deep model's parameter count.
    outputs: FxHashSet<ValueId>,
    updated: FxHashSet<ValueId>,
}

impl Builder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Builder {
        Builder {
            graph: Graph {
                name: name.to_string(),
                values: Vec::new(),
                outputs: Vec::new(),
                updates: Vec::new(),
            },
            names: FxHashSet::default(),
            reserved: FxHashSet::default(),
            next_anon: 0,
            outputs: FxHashSet::default(),
            updated: FxHashSet::default(),
        }
    }

    /// The graph so far.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The type of `id`.
    pub fn ty(&self, id: ValueId) -> &TensorType {
        self.graph.ty(id)
    }

    fn fresh_name(&mut self) -> String {
        loop {
            let name = self.next_anon.to_string();
            self.next_anon += 1;
            if !self.names.contains(&name) && !self.reserved.contains(&name) {
                return name;
            }
        }
    }

    fn push(
        &mut self,
        name: Option<&str>,
        ty: TensorType,
        def: Def,
    ) -> Result<ValueId, BuildError> {
        ty.check_size()?;
        let name = match name {
            Some(n) if !is_value_name(n) => return Err(BuildError::InvalidName(n.to_string())),
            Some(n) if self.names.contains(n) => return Err(BuildError::Duplicate(n.to_string())),
            Some(n) => n.to_string(),
            None => self.fresh_name(),
        };
        self.names.insert(name.clone());
        self.graph.values.push(Value { name, ty, def });
        Ok(ValueId(self.graph.values.len() as u32 - 1))
    }

    /// Adds an input.
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<ValueId, BuildError> {
        self.push(Some(name), ty, Def::Input)
    }

    /// Adds a parameter (static float shape required).
    pub fn param(&mut self, name: &str, ty: TensorType, init: Init) -> Result<ValueId, BuildError> {
        check_param_type(&ty)?;
        init.check()?;
        self.push(Some(name), ty, Def::Param(init))
    }

    /// Adds a persistent state value (static float shape required).
    pub fn state(&mut self, name: &str, ty: TensorType, init: Init) -> Result<ValueId, BuildError> {
        check_param_type(&ty)?;
        init.check()?;
        self.push(Some(name), ty, Def::State(init))
    }

    /// Keeps generated names clear of `names`, which the caller will add later.
    pub fn reserve_names<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        self.reserved.extend(names.into_iter().cloned());
    }

    /// Whether `name` was reserved with [`Builder::reserve_names`] and is still unused.
    pub fn is_reserved_and_free(&self, name: &str) -> bool {
        self.reserved.contains(name) && !self.names.contains(name)
    }

    /// Continues building `graph`: new values are appended after its values.
    pub fn from_graph(graph: Graph) -> Builder {
        let names = graph.values.iter().map(|v| v.name.clone()).collect();
        let outputs = graph.outputs.iter().copied().collect();
        let updated = graph.updates.iter().map(|&(target, _)| target).collect();
        Builder {
            graph,
            names,
            reserved: FxHashSet::default(),
            next_anon: 0,
            outputs,
            updated,
        }
    }

    /// Declares that parameter or state `target` takes `value` after a run.
    pub fn update(&mut self, target: ValueId, value: ValueId) -> Result<(), BuildError> {
        let updated_before = self.updated.contains(&target);
        super::verify::check_update(&self.graph, target, value, updated_before)?;
        self.updated.insert(target);
        self.graph.updates.push((target, value));
        Ok(())
    }

    /// Adds a node; `name` and `declared` are optional. Returns the error of the op's
    /// shape rule, or a mismatch between the declared and the inferred type.
    pub fn node(
        &mut self,
        name: Option<&str>,
        op: Op,
        operands: &[ValueId],
        declared: Option<TensorType>,
    ) -> Result<ValueId, BuildError> {
        if let Some(bad) = operands
            .iter()
            .find(|o| o.index() >= self.graph.values.len())
        {
            return Err(BuildError::UndefinedOperand(*bad));
        }
        let types: Vec<&TensorType> = operands.iter().map(|&o| self.graph.ty(o)).collect();
        let ty = op
            .infer(&types, declared.as_ref())
            .map_err(|message| BuildError::Shape {
                op: op.name().to_string(),
                message,
            })?;
        if let Some(d) = declared {
            if d != ty {
                return Err(BuildError::DeclaredType {
                    op: op.name().to_string(),
                    declared: d,
                    inferred: ty,
                });
            }
        }
        self.push(
            name,
            ty,
            Def::Node {
                op,
                operands: operands.to_vec(),
            },
        )
    }

    /// Adds a node of type `ty` without running the op's shape rule: for copying ops of a
    /// verified graph, whose types are known to be right. Verify the result.
    pub fn node_of_known_type(
        &mut self,
        name: Option<&str>,
        op: Op,
        operands: &[ValueId],
        ty: TensorType,
    ) -> Result<ValueId, BuildError> {
        if let Some(bad) = operands
            .iter()
            .find(|o| o.index() >= self.graph.values.len())
        {
            return Err(BuildError::UndefinedOperand(*bad));
        }
        let operands = operands.to_vec();
        self.push(name, ty, Def::Node { op, operands })
    }

    /// Adds an anonymous node whose type is inferred; panics if the op's shape rule
    /// rejects it. For code (like decompositions) that only combines well-typed values.
    pub fn add(&mut self, op: Op, operands: &[ValueId]) -> ValueId {
        let name = op.name();
        self.node(None, op, operands, None)
            .unwrap_or_else(|e| panic!("internal: well-typed '{name}' rejected: {e}"))
    }

    /// Like [`Builder::add`], for ops that need a declared type.
    pub fn add_typed(&mut self, op: Op, operands: &[ValueId], ty: TensorType) -> ValueId {
        let name = op.name();
        self.node(None, op, operands, Some(ty))
            .unwrap_or_else(|e| panic!("internal: well-typed '{name}' rejected: {e}"))
    }

    /// Marks `id` as an output.
    pub fn output(&mut self, id: ValueId) -> Result<(), BuildError> {
        if !self.outputs.insert(id) {
            return Err(BuildError::AlreadyOutput(self.graph.value(id).name.clone()));
        }
        self.graph.outputs.push(id);
        Ok(())
    }

    /// Whether `id` is an output already.
    pub fn is_output(&self, id: ValueId) -> bool {
        self.outputs.contains(&id)
    }

    /// The finished graph.
    pub fn finish(self) -> Graph {
        self.graph
    }

    // Shorthands for well-typed construction.

    /// `op x`.
    pub fn unary(&mut self, op: UnaryOp, x: ValueId) -> ValueId {
        self.add(Op::Unary(op), &[x])
    }

    /// `op a, b`.
    pub fn binary(&mut self, op: BinaryOp, a: ValueId, b: ValueId) -> ValueId {
        self.add(Op::Binary(op), &[a, b])
    }

    /// `op a, b` (a comparison).
    pub fn compare(&mut self, op: CompareOp, a: ValueId, b: ValueId) -> ValueId {
        self.add(Op::Compare(op), &[a, b])
    }

    /// A constant of type `ty` holding `value` everywhere.
    pub fn splat(&mut self, value: f64, ty: TensorType) -> ValueId {
        self.add_typed(
            Op::Constant {
                values: vec![value],
            },
            &[],
            ty,
        )
    }

    /// `op x, splat(value)`.
    pub fn binary_scalar(&mut self, op: BinaryOp, x: ValueId, value: f64) -> ValueId {
        let c = self.splat(value, self.ty(x).clone());
        self.binary(op, x, c)
    }

    /// A reduction over `axes`.
    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: Vec<usize>) -> ValueId {
        self.add(Op::Reduce { op, axes }, &[x])
    }

    /// Zeros of `x`'s type.
    pub fn zeros_like(&mut self, x: ValueId) -> ValueId {
        self.splat(0.0, self.ty(x).clone())
    }

    /// `x` with its last two axes swapped.
    pub fn transpose_last(&mut self, x: ValueId) -> ValueId {
        let r = self.ty(x).rank();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.add(Op::Permute { perm }, &[x])
    }

    /// Renames value `id` if `name` is free; returns whether it did.
    pub fn rename(&mut self, id: ValueId, name: &str) -> bool {
        if !is_value_name(name) || self.names.contains(name) {
            return false;
        }
        let old = std::mem::replace(&mut self.graph.values[id.index()].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string());
        true
    }

    /// Broadcasts `x` to `ty`, operand axis `i` going to result axis `dims[i]`.
    pub fn broadcast(&mut self, x: ValueId, dims: Vec<usize>, ty: TensorType) -> ValueId {
        self.add_typed(Op::Broadcast { dims }, &[x], ty)
    }

    /// Broadcasts `x`, which is `like` with `axis` removed, back to `like`'s shape.
    pub fn broadcast_back(&mut self, x: ValueId, like: ValueId, axis: usize) -> ValueId {
        let ty = self.ty(like).with_dtype(self.ty(x).dtype);
        let dims = (0..ty.rank()).filter(|&i| i != axis).collect();
        self.broadcast(x, dims, ty)
    }
}

/// Parameters are what the runtime allocates and trains: static shapes, float dtypes.
pub fn check_param_type(ty: &TensorType) -> Result<(), ParamTypeError> {
    if ty.shape.as_static().is_none() {
        return Err(ParamTypeError::NotStatic(ty.clone()));
    }
    if !ty.dtype.is_float() {
        return Err(ParamTypeError::NotFloat(ty.clone()));
    }
    Ok(())
}
