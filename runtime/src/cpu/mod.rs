//! The CPU backend: runs a schedule on `f32` buffers with fast kernels (matrix products
//! through the `gemm` crate, both cores through `rayon`, pointwise kernels JIT-compiled
//! by Cranelift).
//!
//! Compiling a graph schedules it (`compiler::schedule`): composites are expanded
//! except those with library kernels here (attention in `attention.rs`, the row
//! composites in `rows.rs`), chains of elementwise ops are fused into pointwise kernels
//! of the kernel IR (`fused.rs`), additive epilogues fold into matrix products, and the
//! remaining ops run library kernels (`kernels.rs`, `routing.rs`). Buffers are shared
//! and dropped after their last use, so peak memory follows the live set; a training
//! loop keeps its parameters and state in a [`Resident`]. Floats other than `f32` are
//! not supported here (the interpreter runs them). Every kernel is tested against the
//! reference interpreter on random inputs (`runtime/tests/cpu_vs_interp.rs`).

mod attention;
mod fused;
mod kernels;
mod routing;
mod rows;

use crate::interp::{bind_shapes_except, Execution, RunError};
use crate::tensor::{Data, Tensor};
use smelt_compiler::codegen::cranelift::{self, JitKernel};
use smelt_compiler::ir::{DType, Def, Graph, Op, ValueId};
use smelt_compiler::kernel::PointwiseKernel;
use smelt_compiler::schedule::{schedule_with, Schedule, Step};
use std::collections::HashMap;
use std::sync::Arc;

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

/// A value during a run: its buffer and concrete shape. Buffers are immutable once
/// written and shared, so a reshape, a loopback exchange or a resident parameter is an
/// alias rather than a copy.
#[derive(Clone, Debug)]
pub(crate) struct Val {
    data: Arc<Buf>,
    pub shape: Vec<usize>,
}

impl Val {
    pub fn new(buf: Buf, shape: Vec<usize>) -> Val {
        Val {
            data: Arc::new(buf),
            shape,
        }
    }

    /// The same buffer seen with another shape of as many elements.
    fn alias(&self, shape: Vec<usize>) -> Val {
        Val {
            data: self.data.clone(),
            shape,
        }
    }

    pub fn buf(&self) -> &Buf {
        &self.data
    }

    pub fn f32(&self) -> &[f32] {
        match self.buf() {
            Buf::F32(v) => v,
            _ => unreachable!("operand is f32 (verified types)"),
        }
    }
}

/// A graph prepared for the CPU backend.
#[derive(Debug, Clone)]
pub struct CpuProgram {
    schedule: Schedule,
    /// Native code for each step that is a pointwise kernel (`None` for library steps,
    /// or when the kernel runs on the kernel-IR evaluator).
    jit: Vec<Option<Arc<JitKernel>>>,
    /// `last_read[v]`: the last step that reads value `v` (outputs and updates: never).
    last_read: Vec<usize>,
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
        CpuProgram::compile_with(graph, true)
    }

    /// Like [`CpuProgram::compile`]; `fuse: false` runs every op as its own kernel (the
    /// op-by-op baseline of `smelt bench`).
    pub fn compile_with(graph: &Graph, fuse: bool) -> Result<CpuProgram, Unsupported> {
        CpuProgram::compile_options(graph, fuse, true)
    }

    /// Like [`CpuProgram::compile_with`]; `jit: false` runs pointwise kernels on the
    /// kernel-IR evaluator instead of native code (the reference the JIT is tested against).
    pub fn compile_options(
        graph: &Graph,
        fuse: bool,
        jit: bool,
    ) -> Result<CpuProgram, Unsupported> {
        CpuProgram::from_schedule(schedule_with(graph, fuse), jit)
    }

    /// Prepares an already scheduled graph (as stored in a compiled artefact): only the
    /// pointwise kernels are compiled to native code (`jit: false`: evaluated instead).
    pub fn from_schedule(schedule: Schedule, jit: bool) -> Result<CpuProgram, Unsupported> {
        let g = &schedule.graph;
        if let Some(v) = g
            .values
            .iter()
            .find(|v| v.ty.dtype.is_float() && v.ty.dtype != DType::F32)
        {
            return Err(Unsupported {
                value: v.name.clone(),
                reason: format!("{} is not supported yet", v.ty.dtype),
            });
        }
        let mut last_read = vec![0usize; g.values.len()];
        for (i, step) in schedule.steps.iter().enumerate() {
            for r in step.reads(g) {
                last_read[r.index()] = i;
            }
        }
        for &o in g.outputs.iter().chain(g.updates.iter().map(|(_, v)| v)) {
            last_read[o.index()] = usize::MAX;
        }
        // Native code depends only on a kernel's body, not on the values it reads or
        // their shapes, so kernels with equal bodies (the same update for every
        // parameter, the same block in every layer) share one compilation.
        let mut compiled: HashMap<String, Arc<JitKernel>> = HashMap::new();
        let mut native = |k: &PointwiseKernel| -> Result<Arc<JitKernel>, Unsupported> {
            let body = format!("{:?}", (k.rank, &k.exprs));
            if let Some(j) = compiled.get(&body) {
                return Ok(j.clone());
            }
            let j = Arc::new(compile_kernel(k)?);
            compiled.insert(body, j.clone());
            Ok(j)
        };
        let jit = schedule
            .steps
            .iter()
            .map(|s| match s {
                Step::Pointwise(k) if jit => native(k).map(Some),
                Step::MatMul { init: Some(k), .. } if jit => native(k).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CpuProgram {
            schedule,
            jit,
            last_read,
        })
    }

    /// The schedule this program runs.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs the program on `feeds` (every input, parameter and state value by name).
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        let (outputs, updates) = self.run_held(feeds, &Resident::default())?;
        Ok(Execution {
            outputs,
            updates: updates
                .0
                .into_iter()
                .map(|(name, (dtype, v))| (name, to_tensor(dtype, &v)))
                .collect(),
        })
    }

    /// Runs one step of a loop whose parameters and state stay in this backend's
    /// buffers: values named in `resident` are read from it, the others from `feeds`.
    /// Returns the outputs and the updates, which stay on the backend until
    /// [`Resident::apply`] makes them the new state (a training loop checks the loss
    /// first). Nothing is converted to or from `f64` for held values.
    pub fn run_resident(
        &self,
        feeds: &HashMap<String, Tensor>,
        resident: &Resident,
    ) -> Result<(Vec<Tensor>, Updates), RunError> {
        self.run_held(feeds, resident)
    }

    fn run_held(
        &self,
        feeds: &HashMap<String, Tensor>,
        resident: &Resident,
    ) -> Result<(Vec<Tensor>, Updates), RunError> {
        let g = &self.schedule.graph;
        let held = |name: &str| resident.values.contains_key(name);
        let bindings = bind_shapes_except(g, feeds, &held)?;
        let mut env: Vec<Option<Val>> = vec![None; g.values.len()];
        for id in g.ids() {
            if !matches!(g.value(id).def, Def::Node { .. }) {
                let name = &g.value(id).name;
                env[id.index()] = Some(match resident.values.get(name) {
                    Some((_, v)) => v.clone(),
                    None => to_val(&feeds[name]),
                });
            }
        }
        for (i, step) in self.schedule.steps.iter().enumerate() {
            let out = step.output();
            let v = g.value(out);
            let shape = v.ty.shape.eval(&bindings).map_err(RunError::Unbound)?;
            let reads = step.reads(g);
            let args: Vec<&Val> = reads
                .iter()
                .map(|o| {
                    env[o.index()].as_ref().unwrap_or_else(|| {
                        panic!(
                            "internal: step {i} reads %{} outside its live range",
                            g.value(*o).name
                        )
                    })
                })
                .collect();
            let val = match step {
                Step::Pointwise(k) => Val::new(
                    match &self.jit[i] {
                        Some(native) => fused::run_jit(k, native, &args, &shape),
                        None => fused::run(k, &args, &shape),
                    },
                    shape,
                ),
                Step::Library(_) => {
                    let Def::Node { op, .. } = &v.def else {
                        unreachable!("library steps are nodes")
                    };
                    match op {
                        // Row-major data does not move: same buffer, new shape. A
                        // loopback exchange with one rank is the identity.
                        Op::Reshape | Op::AllToAll { .. } => args[0].alias(shape),
                        _ => Val::new(
                            kernels::eval(op, &args, &step.library_operands(g), v.ty.dtype, &shape)
                                .map_err(|message| RunError::Eval {
                                    value: out,
                                    name: v.name.clone(),
                                    message,
                                })?,
                            shape,
                        ),
                    }
                }
                Step::MatMul { lhs, rhs, init, .. } => {
                    // The additive epilogue first, then the product accumulates into it.
                    let start = init.as_ref().map(|k| match &self.jit[i] {
                        Some(native) => fused::run_jit(k, native, &args[2..], &shape),
                        None => fused::run(k, &args[2..], &shape),
                    });
                    let product = kernels::matmul(
                        args[0],
                        lhs.transposed,
                        args[1],
                        rhs.transposed,
                        &shape,
                        start,
                    );
                    Val::new(product, shape)
                }
            };
            debug_assert_eq!(val.buf().len(), val.shape.iter().product::<usize>());
            env[out.index()] = Some(val);
            for r in reads {
                if self.last_read[r.index()] == i {
                    env[r.index()] = None;
                }
            }
        }
        let kept = |id: ValueId| env[id.index()].clone().expect("kept to the end");
        let outputs = g
            .outputs
            .iter()
            .map(|&o| to_tensor(g.ty(o).dtype, &kept(o)))
            .collect();
        let updates = g
            .updates
            .iter()
            .map(|&(t, v)| (g.value(t).name.clone(), (g.ty(t).dtype, kept(v))))
            .collect();
        Ok((outputs, Updates(updates)))
    }
}

/// Parameters and optimiser state held in the CPU backend's `f32` buffers across the
/// steps of a training loop, by name.
#[derive(Debug, Clone, Default)]
pub struct Resident {
    values: HashMap<String, (DType, Val)>,
}

/// The updates of one [`CpuProgram::run_resident`], still in the backend's buffers.
#[derive(Debug)]
pub struct Updates(Vec<(String, (DType, Val))>);

impl Resident {
    /// Takes `tensors` (parameters and state of `program`'s graph, checked against
    /// their declared types) into the backend.
    pub fn new(
        program: &CpuProgram,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Resident, RunError> {
        let g = &program.schedule.graph;
        let mut values = HashMap::new();
        for (name, t) in tensors {
            let id = g
                .find(name)
                .filter(|&id| !matches!(g.value(id).def, Def::Node { .. } | Def::Input))
                .ok_or_else(|| RunError::Unknown(name.clone()))?;
            let name = name.clone();
            let ty = g.ty(id);
            let static_shape: Option<Vec<usize>> = ty
                .dims()
                .iter()
                .map(|d| d.as_static().map(|n| n as usize))
                .collect();
            if t.dtype != ty.dtype || static_shape.as_ref() != Some(&t.shape) {
                return Err(RunError::Mismatch {
                    value: id,
                    name,
                    expected: ty.to_string(),
                    found: t.type_string(),
                    why: String::new(),
                });
            }
            values.insert(name, (t.dtype, to_val(t)));
        }
        Ok(Resident { values })
    }

    /// Makes the updates the new values (no copy).
    pub fn apply(&mut self, updates: Updates) {
        self.values.extend(updates.0);
    }

    /// The held values as host tensors (for checkpoints).
    pub fn to_tensors(&self) -> HashMap<String, Tensor> {
        self.values
            .iter()
            .map(|(name, (dtype, v))| (name.clone(), to_tensor(*dtype, v)))
            .collect()
    }
}

/// Compiles a pointwise kernel to native code.
fn compile_kernel(k: &PointwiseKernel) -> Result<JitKernel, Unsupported> {
    cranelift::compile(k).map_err(|reason| Unsupported {
        value: k.name.clone(),
        reason,
    })
}

fn to_val(t: &Tensor) -> Val {
    let buf = match &t.data {
        Data::Float(v) => Buf::F32(v.iter().map(|&x| x as f32).collect()),
        Data::Int(v) => Buf::Int(v.clone()),
        Data::Bool(v) => Buf::Bool(v.clone()),
    };
    Val::new(buf, t.shape.clone())
}

fn to_tensor(dtype: DType, v: &Val) -> Tensor {
    let data = match v.buf() {
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
