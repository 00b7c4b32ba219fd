//! The reference interpreter: the oracle that defines what every op computes.
//!
//! It is deliberately naive: one op at a time over whole tensors, index arithmetic
//! written out, every float computed in `f64` and then rounded to the value's dtype
//! (in [`Precision::F64`] mode `f32` values keep full `f64` precision, which makes it the
//! accuracy reference for finite-difference checks). Composite ops run their
//! decomposition, so they mean exactly what `compiler::ir::ops::composite` says.
//! Every fast path in smelt is tested against this module on random inputs.

mod elementwise;
pub use elementwise::holds;
mod indexing;
mod linalg;
mod movement;
mod reduce;
mod routing;
pub(crate) use routing::ranks_before;
mod source;

use crate::tensor::{round_to, Data, Tensor};
use smelt_compiler::ir::{
    Bindings, Builder, DType, Def, DimError, Graph, Op, SizeOverflow, ValueId,
};
use std::collections::HashMap;
use thiserror::Error;

/// How floats of dtype `f32` are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Round every `f32` result to `f32` (what a real `f32` program computes, up to order).
    #[default]
    F32,
    /// Keep `f32` values in `f64` (the high-precision reference). Narrower floats
    /// (f16, bf16, f8e4m3) are storage formats and are rounded in both modes; `f64`
    /// values are computed in `f64` in both.
    F64,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RunError {
    /// An input or parameter was not given.
    #[error("missing value for {kind} '%{name}' ({ty})")]
    Missing {
        /// The input or parameter.
        value: ValueId,
        /// `input` or `param`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Its declared type.
        ty: String,
    },
    /// A given tensor does not fit the declared type.
    #[error("'%{name}' expects {expected}, but the given tensor is {found}{why}")]
    Mismatch {
        /// The input or parameter.
        value: ValueId,
        /// Its name.
        name: String,
        /// Its declared type.
        expected: String,
        /// The given tensor's type.
        found: String,
        /// Extra detail (which symbol conflicts).
        why: String,
    },
    /// A tensor was given for a name the graph does not have as input or parameter.
    #[error("the model has no input or parameter named '{0}'")]
    Unknown(String),
    /// A symbolic dimension could not be determined from the given tensors.
    #[error("dimension '{0}' is not bound by any input")]
    Unbound(String),
    /// A size does not fit in 64 bits under the bindings of the given inputs.
    #[error(transparent)]
    Size(#[from] SizeOverflow),
    /// The run would need more memory than the limit.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// An op failed on the given data (an index out of range).
    #[error("%{name}: {message}")]
    Eval {
        /// The failing value.
        value: ValueId,
        /// Its name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

impl From<DimError> for RunError {
    fn from(e: DimError) -> RunError {
        match e {
            DimError::Unbound(sym) => RunError::Unbound(sym),
            DimError::Overflow(e) => RunError::Size(e),
        }
    }
}

/// Evaluation context: the precision rule applied to every float result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub precision: Precision,
}

impl Ctx {
    /// Rounds `x` as a value of `dtype` under the precision rule.
    pub fn round(&self, dtype: DType, x: f64) -> f64 {
        if dtype == DType::F32 && self.precision == Precision::F64 {
            x
        } else {
            round_to(dtype, x)
        }
    }

    /// A float tensor from exact values, rounded under the precision rule.
    pub fn floats(&self, dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        let values = values.into_iter().map(|x| self.round(dtype, x)).collect();
        Tensor {
            dtype,
            shape,
            data: Data::Float(values),
        }
    }

    /// A tensor of `dtype` from numbers: rounded floats, truncated ints, or `!= 0` bools.
    pub fn numbers(&self, dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        let data = if dtype.is_float() {
            return self.floats(dtype, shape, values);
        } else if dtype.is_int() {
            Data::Int(
                values
                    .into_iter()
                    .map(|x| wrap_int(dtype, x as i64))
                    .collect(),
            )
        } else {
            Data::Bool(values.into_iter().map(|x| x != 0.0).collect())
        };
        Tensor { dtype, shape, data }
    }
}

/// Wraps an integer to the range of `dtype` (two's complement), like a real machine.
pub fn wrap_int(dtype: DType, x: i64) -> i64 {
    match dtype {
        DType::I32 => x as i32 as i64,
        _ => x,
    }
}

/// Row-major strides of `shape`.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f` with every multi-index of `shape` in row-major order; collects the results.
pub(crate) fn map_indices<T>(shape: &[usize], mut f: impl FnMut(&[usize]) -> T) -> Vec<T> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(f(&idx));
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// Flat offset of multi-index `idx` under `strides`.
pub(crate) fn offset(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// Binds every symbolic dimension from the shapes of the given inputs and parameters,
/// checking each given tensor against its declared type.
pub fn bind_shapes(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<Bindings, RunError> {
    bind_shapes_except(graph, feeds, &|_| false)
}

/// Like [`bind_shapes`], for values other than those `held` says a backend already holds
/// (checked when they were handed over; parameters and state have static shapes).
pub fn bind_shapes_except(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    held: &dyn Fn(&str) -> bool,
) -> Result<Bindings, RunError> {
    for name in feeds.keys() {
        match graph.find(name) {
            Some(id) if !matches!(graph.value(id).def, Def::Node { .. }) => {}
            _ => return Err(RunError::Unknown(name.clone())),
        }
    }
    let mut bindings = Bindings::new();
    let fed: Vec<(ValueId, &Tensor)> = graph
        .ids()
        .filter(|&id| {
            !matches!(graph.value(id).def, Def::Node { .. }) && !held(&graph.value(id).name)
        })
        .map(|id| {
            let v = graph.value(id);
            let kind = match v.def {
                Def::Input => "input",
                Def::Param(_) => "param",
                _ => "state",
            };
            feeds
                .get(&v.name)
                .map(|t| (id, t))
                .ok_or_else(|| RunError::Missing {
                    value: id,
                    kind,
                    name: v.name.clone(),
                    ty: v.ty.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    let given: Vec<(ValueId, DType, &[usize])> = fed
        .iter()
        .map(|&(id, t)| (id, t.dtype, &t.shape[..]))
        .collect();
    bind_more(graph, &mut bindings, &given)?;
    Ok(bindings)
}

/// Binds the symbols of values given as `(value, dtype, shape)` (plain symbols like
/// `B` first, then every dimension is checked, products included), adding to
/// `bindings`.
pub fn bind_more(
    graph: &Graph,
    bindings: &mut Bindings,
    given: &[(ValueId, DType, &[usize])],
) -> Result<(), RunError> {
    let mismatch = |id: ValueId, dtype: DType, shape: &[usize], why: String| RunError::Mismatch {
        value: id,
        name: graph.value(id).name.clone(),
        expected: graph.ty(id).to_string(),
        found: type_string(dtype, shape),
        why,
    };
    for &(id, dtype, shape) in given {
        let ty = graph.ty(id);
        if ty.dtype != dtype || ty.rank() != shape.len() {
            return Err(mismatch(id, dtype, shape, String::new()));
        }
        for (d, &n) in ty.dims().iter().zip(shape) {
            if let [sym] = d.syms() {
                if d.coeff() == 1 {
                    if let Some(&old) = bindings.get(sym) {
                        if old != n as u64 {
                            return Err(mismatch(
                                id,
                                dtype,
                                shape,
                                format!(" ({sym} is already {old} from another input)"),
                            ));
                        }
                    }
                    bindings.insert(sym.clone(), n as u64);
                }
            }
        }
    }
    for &(id, dtype, shape) in given {
        for (d, &n) in graph.ty(id).dims().iter().zip(shape) {
            match d.eval(bindings) {
                Ok(m) if m == n as u64 => {}
                Ok(m) => {
                    return Err(mismatch(
                        id,
                        dtype,
                        shape,
                        format!(" (dimension {d} is {m})"),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// A type printed like the IR's (`f32[2, 3]`).
pub fn type_string(dtype: DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("{dtype}[{}]", dims.join(", "))
}

/// The results of one run: the outputs in order, and the new values of updated
/// parameters and state, by name.
#[derive(Debug, Clone)]
pub struct Execution {
    /// The graph's outputs, in order.
    pub outputs: Vec<Tensor>,
    /// `(name, new value)` for each of the graph's updates, in order.
    pub updates: Vec<(String, Tensor)>,
}

/// Runs `graph` on `feeds` (every input and parameter, by name) and returns the outputs
/// in order.
pub fn run(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    precision: Precision,
) -> Result<Vec<Tensor>, RunError> {
    execute(graph, feeds, precision).map(|e| e.outputs)
}

/// Runs `graph` on `feeds` and returns its outputs and its updates.
pub fn execute(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    precision: Precision,
) -> Result<Execution, RunError> {
    let bindings = bind_shapes(graph, feeds)?;
    let ctx = Ctx { precision };
    let mut env: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for id in graph.ids() {
        let v = graph.value(id);
        let value = match &v.def {
            Def::Input | Def::Param(_) | Def::State(_) => {
                let t = &feeds[&v.name];
                match &t.data {
                    // Given floats are rounded like any computed value of that dtype.
                    Data::Float(xs) => ctx.floats(t.dtype, t.shape.clone(), xs.clone()),
                    _ => t.clone(),
                }
            }
            Def::Node { op, operands } => {
                let args: Vec<&Tensor> = operands
                    .iter()
                    .map(|o| {
                        env[o.index()]
                            .as_ref()
                            .expect("operands are defined before use (verified)")
                    })
                    .collect();
                let shape = v.ty.shape.eval(&bindings)?;
                eval(ctx, op, &args, v.ty.dtype, shape).map_err(|message| RunError::Eval {
                    value: id,
                    name: v.name.clone(),
                    message,
                })?
            }
        };
        env[id.index()] = Some(value);
    }
    let value = |id: ValueId| env[id.index()].clone().expect("every value is computed");
    Ok(Execution {
        outputs: graph.outputs.iter().map(|&o| value(o)).collect(),
        updates: graph
            .updates
            .iter()
            .map(|&(t, v)| (graph.value(t).name.clone(), value(v)))
            .collect(),
    })
}

/// Evaluates one op whose result has `dtype` and the concrete `shape`.
fn eval(
    ctx: Ctx,
    op: &Op,
    x: &[&Tensor],
    dtype: DType,
    shape: Vec<usize>,
) -> Result<Tensor, String> {
    Ok(match op {
        Op::Unary(u) => elementwise::unary(ctx, *u, x[0]),
        Op::Binary(b) => elementwise::binary(ctx, *b, x[0], x[1])?,
        Op::Compare(c) => elementwise::compare(*c, x[0], x[1]),
        Op::Select => elementwise::select(x[0], x[1], x[2]),
        Op::Cast => ctx.numbers(dtype, shape, x[0].to_f64_vec()),
        Op::Reduce { op, axes } => reduce::reduce(ctx, *op, axes, x[0], shape),
        Op::MatMul => linalg::matmul(ctx, x[0], x[1], shape),
        Op::Reshape => Tensor {
            shape,
            ..x[0].clone()
        },
        // One rank: the exchange sends every chunk back to its own rank.
        Op::AllToAll { .. } => x[0].clone(),
        Op::AllReduce => {
            let mut values = x[0].to_f64_vec();
            crate::comm::with_current(|w| w.all_reduce_f64(&mut values))
                .map_err(|e| e.to_string())?;
            ctx.numbers(dtype, shape, values)
        }
        Op::AllGather { .. } | Op::ReduceScatter { .. } => {
            let sum: crate::comm::SumFn<f64> = |w, v| w.all_reduce_f64(v);
            let result = crate::comm::gather_or_scatter(op, &x[0].to_f64_vec(), &x[0].shape, sum)
                .expect("a gather or a scatter")
                .map_err(|e| e.to_string())?;
            ctx.numbers(dtype, shape, result)
        }
        Op::Permute { perm } => movement::permute(perm, x[0], shape),
        Op::Broadcast { dims } => movement::broadcast(dims, x[0], shape),
        Op::Slice {
            axis, start, step, ..
        } => movement::slice(*axis, *start as usize, *step as usize, x[0], shape),
        Op::Concat { axis } => movement::concat(*axis, x, shape),
        Op::Pad {
            axis, low, value, ..
        } => movement::pad(ctx, *axis, *low as usize, *value, x[0], shape),
        Op::Gather { axis } => indexing::gather(*axis, x[0], x[1], shape)?,
        Op::ScatterAdd { axis } => indexing::scatter_add(ctx, *axis, x[0], x[1], x[2])?,
        Op::TopK { k } => routing::top_k(*k as usize, x[0], shape),
        Op::GroupedMatMul => routing::grouped_matmul(ctx, x[0], x[1], x[2], shape)?,
        Op::GroupedMatMulWeightGrad { .. } => {
            routing::grouped_weight_grad(ctx, x[0], x[1], x[2], shape)?
        }
        Op::Constant { values } => source::constant(ctx, values, dtype, shape),
        Op::Iota { axis } => source::iota(ctx, *axis, dtype, shape),
        Op::RandomUniform { low, high, seed } => {
            source::uniform(ctx, *low, *high, *seed, dtype, shape)
        }
        Op::RandomNormal { mean, std, seed } => {
            source::normal(ctx, *mean, *std, *seed, dtype, shape)
        }
        Op::Composite(c) => {
            // A composite means its decomposition: build it for these operand types and run it.
            let mut b = Builder::new(c.name());
            let mut feeds = HashMap::new();
            let ids: Vec<ValueId> = x
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let name = format!("arg{i}");
                    let ty = smelt_compiler::ir::TensorType::fixed(
                        t.dtype,
                        &t.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
                    );
                    feeds.insert(name.clone(), (*t).clone());
                    b.input(&name, ty).expect("fresh argument names are unique")
                })
                .collect();
            let out = c.decompose(&mut b, &ids);
            b.output(out).expect("a decomposition has one output");
            let sub = b.finish();
            run(&sub, &feeds, ctx.precision)
                .map_err(|e| e.to_string())?
                .pop()
                .expect("one output")
        }
    })
}
