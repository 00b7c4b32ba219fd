//! The CPU backend: runs a graph op by op on `f32` buffers with fast kernels (matrix
//! products through the `gemm` crate, both cores through `rayon`).
//!
//! Compiling a graph expands its composites (`compiler::passes::decompose`) and plans
//! buffer lifetimes: each value is dropped after its last use, so peak memory follows
//! the live set, not the graph size. Floats other than `f32` are not supported here
//! (the interpreter runs them). Every kernel is tested against the reference
//! interpreter on random inputs (`runtime/tests/cpu_vs_interp.rs`).
//! The fused, JIT-compiled backend (issue 9) will replace the op-by-op loop.

mod kernels;

use crate::interp::{bind_shapes, Execution, RunError};
use crate::tensor::{Data, Tensor};
use smelt_compiler::ir::{DType, Def, Graph, ValueId};
use smelt_compiler::passes::decompose;
use std::collections::HashMap;

/// A buffer of the CPU backend.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Buf {
    F32(Vec<f32>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Buf {
    fn len(&self) -> usize {
        match self {
            Buf::F32(v) => v.len(),
            Buf::Int(v) => v.len(),
            Buf::Bool(v) => v.len(),
        }
    }
}

/// A value during a run: its buffer and concrete shape.
#[derive(Clone, Debug)]
pub(crate) struct Val {
    pub buf: Buf,
    pub shape: Vec<usize>,
}

impl Val {
    pub fn f32(&self) -> &[f32] {
        match &self.buf {
            Buf::F32(v) => v,
            _ => unreachable!("operand is f32 (verified types)"),
        }
    }
}

/// A graph prepared for the CPU backend.
#[derive(Debug, Clone)]
pub struct CpuProgram {
    graph: Graph,
    /// `last_use[v]`: the last node that reads value `v` (outputs and updates: never freed).
    last_use: Vec<usize>,
}

/// Why a graph cannot run on the CPU backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the cpu backend cannot run %{value}: {reason} (use --device interp)")]
pub struct Unsupported {
    /// The value.
    pub value: String,
    /// Why.
    pub reason: String,
}

impl CpuProgram {
    /// Prepares `graph` (which must verify).
    pub fn compile(graph: &Graph) -> Result<CpuProgram, Unsupported> {
        let graph = decompose(graph);
        for v in &graph.values {
            if v.ty.dtype.is_float() && v.ty.dtype != DType::F32 {
                return Err(Unsupported {
                    value: v.name.clone(),
                    reason: format!("{} is not supported yet", v.ty.dtype),
                });
            }
        }
        let n = graph.values.len();
        let mut last_use: Vec<usize> = (0..n).collect();
        for id in graph.ids() {
            if let Def::Node { operands, .. } = &graph.value(id).def {
                for o in operands {
                    last_use[o.index()] = id.index();
                }
            }
        }
        for &o in graph
            .outputs
            .iter()
            .chain(graph.updates.iter().map(|(_, v)| v))
        {
            last_use[o.index()] = usize::MAX;
        }
        Ok(CpuProgram { graph, last_use })
    }

    /// The graph this program runs (composites expanded).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the program on `feeds` (every input, parameter and state value by name).
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        let g = &self.graph;
        let bindings = bind_shapes(g, feeds)?;
        let mut env: Vec<Option<Val>> = vec![None; g.values.len()];
        for id in g.ids() {
            let v = g.value(id);
            let shape = v.ty.shape.eval(&bindings).map_err(RunError::Unbound)?;
            let val = match &v.def {
                Def::Input | Def::Param(_) | Def::State(_) => to_val(&feeds[&v.name]),
                Def::Node { op, operands } => {
                    let args: Vec<&Val> = operands
                        .iter()
                        .map(|o| {
                            env[o.index()]
                                .as_ref()
                                .expect("operands are live until their last use")
                        })
                        .collect();
                    let buf = kernels::eval(op, &args, v.ty.dtype, &shape).map_err(|message| {
                        RunError::Eval {
                            value: id,
                            name: v.name.clone(),
                            message,
                        }
                    })?;
                    debug_assert_eq!(buf.len(), shape.iter().product::<usize>());
                    Val { buf, shape }
                }
            };
            env[id.index()] = Some(val);
            if let Def::Node { operands, .. } = &v.def {
                for o in operands {
                    if self.last_use[o.index()] == id.index() {
                        env[o.index()] = None;
                    }
                }
            }
        }
        let take = |id: ValueId| {
            to_tensor(
                g.ty(id).dtype,
                env[id.index()].as_ref().expect("kept to the end"),
            )
        };
        Ok(Execution {
            outputs: g.outputs.iter().map(|&o| take(o)).collect(),
            updates: g
                .updates
                .iter()
                .map(|&(t, v)| (g.value(t).name.clone(), take(v)))
                .collect(),
        })
    }
}

fn to_val(t: &Tensor) -> Val {
    let buf = match &t.data {
        Data::Float(v) => Buf::F32(v.iter().map(|&x| x as f32).collect()),
        Data::Int(v) => Buf::Int(v.clone()),
        Data::Bool(v) => Buf::Bool(v.clone()),
    };
    Val {
        buf,
        shape: t.shape.clone(),
    }
}

fn to_tensor(dtype: DType, v: &Val) -> Tensor {
    let data = match &v.buf {
        Buf::F32(x) => Data::Float(x.iter().map(|&a| f64::from(a)).collect()),
        Buf::Int(x) => Data::Int(x.clone()),
        Buf::Bool(x) => Data::Bool(x.clone()),
    };
    Tensor {
        dtype,
        shape: v.shape.clone(),
        data,
    }
}
