//! A graph compiled for the GPU: its kernels in schedule order, the buffers they bind,
//! and the constant data uploaded before the first launch.

use super::eval::{self, Data, EvalError};
use super::kir::Elem;
use super::lower::{elem_of, lower_step, KernelCall, Shapes};
use super::target::Arch;
use crate::ir::ops::Op;
use crate::ir::{Bindings, Def, Graph, ValueId};
use crate::schedule::Schedule;
use std::collections::HashMap;

/// What fills a buffer before the program runs.
#[derive(Clone, Debug, PartialEq)]
pub enum Contents {
    /// Given by the caller (inputs, parameters, optimiser state).
    Given,
    /// A constant's values (one value: splat).
    Constant(Vec<f64>),
    /// Written by a kernel.
    Computed,
}

/// One device buffer: a graph value.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// The value it holds.
    pub value: ValueId,
    /// Element type.
    pub elem: Elem,
    /// Elements.
    pub len: usize,
    /// How it is filled.
    pub contents: Contents,
}

/// A compiled GPU program.
#[derive(Clone, Debug)]
pub struct GpuProgram {
    /// The scheduled graph (composites expanded) the kernels refer to.
    pub graph: Graph,
    /// Every value's concrete shape.
    pub shapes: Shapes,
    /// Buffers of the values kernels read or write, or the caller gives or takes.
    pub buffers: Vec<Buffer>,
    /// Kernel launches in a valid order.
    pub calls: Vec<KernelCall>,
    /// The architecture its module targets: `sm_90a` exactly when a kernel uses wgmma.
    pub arch: Arch,
}

/// Why a schedule could not be lowered to GPU kernels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuProgramError {
    /// A value's shape has a symbol without a binding.
    #[error("%{value}: {message} (bind every symbol, e.g. --bind B=8)")]
    Unbound {
        /// The value.
        value: String,
        /// Which symbol is unbound.
        message: String,
    },
    /// A step has no GPU kernel (an op, a dtype or a size the GPU backend lacks).
    #[error("{0}")]
    Unsupported(String),
    /// A lowering wrote a buffer other than its kernel's first argument, which nothing
    /// would read back (a bug in the lowering, not in the model).
    #[error("internal: kernel {kernel} writes its buffer parameter {param}; a kernel of a program writes only its first argument")]
    WritesOtherBuffer {
        /// The kernel.
        kernel: String,
        /// The parameter it writes.
        param: usize,
    },
}

/// Why the kernel-IR evaluator could not run a program.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    /// An input, parameter or state was not given.
    #[error("no data given for %{0}")]
    Missing(String),
    /// A kernel failed in the evaluator.
    #[error(transparent)]
    Kernel(#[from] EvalError),
}

impl GpuProgram {
    /// Lowers a schedule with every symbol bound by `bindings`, for any Hopper GPU
    /// (`sm_90a` allowed, so 16-bit matmuls that fit use wgmma).
    pub fn new(schedule: &Schedule, bindings: &Bindings) -> Result<GpuProgram, GpuProgramError> {
        GpuProgram::for_arch(schedule, bindings, Arch::Sm90a)
    }

    /// Lowers a schedule with kernels that `allowed` has (`Sm90` keeps 16-bit matmuls
    /// on `mma.sync`).
    pub fn for_arch(
        schedule: &Schedule,
        bindings: &Bindings,
        allowed: Arch,
    ) -> Result<GpuProgram, GpuProgramError> {
        let g = &schedule.graph;
        let mut shapes = Vec::with_capacity(g.values.len());
        for v in &g.values {
            shapes.push(
                v.ty.shape
                    .eval(bindings)
                    .map_err(|e| GpuProgramError::Unbound {
                        value: v.name.clone(),
                        message: e.to_string(),
                    })?,
            );
        }
        let mut calls = Vec::new();
        for (i, step) in schedule.steps.iter().enumerate() {
            calls.extend(
                lower_step(g, &shapes, i, step, allowed).map_err(GpuProgramError::Unsupported)?,
            );
        }
        // The evaluator and the CUDA runtime read back only argument 0 of a call.
        for call in &calls {
            if let Some(&param) = call.kernel.written_params().iter().find(|&&p| p != 0) {
                return Err(GpuProgramError::WritesOtherBuffer {
                    kernel: call.kernel.name.clone(),
                    param,
                });
            }
        }
        let calls = hoist_communication(calls);
        let mut used: Vec<ValueId> = calls.iter().flat_map(|c| c.args.clone()).collect();
        used.extend(g.outputs.iter().copied());
        for (target, value) in &g.updates {
            used.push(*target);
            used.push(*value);
        }
        used.sort();
        used.dedup();
        let mut buffers = Vec::new();
        for v in used {
            let contents = match &g.value(v).def {
                Def::Input | Def::Param(_) | Def::State(_) => Contents::Given,
                Def::Node {
                    op: Op::Constant { values },
                    ..
                } => Contents::Constant(values.clone()),
                Def::Node { .. } => Contents::Computed,
            };
            buffers.push(Buffer {
                value: v,
                elem: elem_of(g.ty(v).dtype).map_err(GpuProgramError::Unsupported)?,
                len: shapes[v.index()].iter().product(),
                contents,
            });
        }
        let arch = if calls.iter().any(|c| c.kernel.needs_sm90a) {
            Arch::Sm90a
        } else {
            Arch::Sm90
        };
        Ok(GpuProgram {
            graph: g.clone(),
            shapes,
            buffers,
            calls,
            arch,
        })
    }

    /// All kernels, in launch order.
    pub fn kernels(&self) -> Vec<super::kir::Kernel> {
        self.calls.iter().map(|c| c.kernel.clone()).collect()
    }

    /// Runs the program in the kernel-IR evaluator: `given` holds the inputs,
    /// parameters and state; each call gets `grid(call)` blocks. Returns every buffer.
    pub fn simulate(
        &self,
        given: &HashMap<ValueId, Data>,
        grid: impl Fn(&KernelCall) -> u32,
    ) -> Result<HashMap<ValueId, Data>, SimulateError> {
        let mut mem: HashMap<ValueId, Data> = HashMap::new();
        for buf in &self.buffers {
            let data = match &buf.contents {
                Contents::Given => given.get(&buf.value).cloned().ok_or_else(|| {
                    SimulateError::Missing(self.graph.value(buf.value).name.clone())
                })?,
                Contents::Constant(values) => constant(buf, values),
                Contents::Computed => Data::zeros(buf.elem, buf.len),
            };
            mem.insert(buf.value, data);
        }
        for call in &self.calls {
            let mut args: Vec<Data> = call
                .args
                .iter()
                .map(|v| mem.get(v).cloned().expect("every argument has a buffer"))
                .collect();
            eval::run(&call.kernel, grid(call), 132, &mut args)?;
            // Only the first argument is written.
            mem.insert(call.args[0], args.swap_remove(0));
        }
        Ok(mem)
    }
}

/// Issues each communication call right after the last call it reads from. Streams run
/// in issue order, so a dispatch issued late would queue behind a combine that waits for
/// compute, and compute would then wait for the dispatch; issued early, it overlaps the
/// compute before it. Every buffer holds one value written once, so moving a call up
/// to just after its producers keeps every read after its write.
fn hoist_communication(calls: Vec<KernelCall>) -> Vec<KernelCall> {
    let mut out: Vec<KernelCall> = Vec::with_capacity(calls.len());
    for call in calls {
        if call.role != super::lower::Role::Comm {
            out.push(call);
            continue;
        }
        let after = out
            .iter()
            .rposition(|c| call.args[1..].contains(&c.args[0]))
            .map_or(0, |i| i + 1);
        out.insert(after, call);
    }
    out
}

/// A constant buffer's initial contents (one value: splat), for every device that
/// fills it (the evaluator here, the CUDA runtime).
pub fn constant(buf: &Buffer, values: &[f64]) -> Data {
    let at = |i: usize| {
        if values.len() == 1 {
            values[0]
        } else {
            values[i]
        }
    };
    let n = buf.len;
    match buf.elem {
        Elem::F32 => Data::F32((0..n).map(|i| at(i) as f32).collect()),
        Elem::F16 => Data::F16(
            (0..n)
                .map(|i| half::f16::from_f64(at(i)).to_bits())
                .collect(),
        ),
        Elem::BF16 => Data::BF16(
            (0..n)
                .map(|i| half::bf16::from_f64(at(i)).to_bits())
                .collect(),
        ),
        Elem::I32 => Data::I32((0..n).map(|i| at(i) as i64 as i32).collect()),
        Elem::I64 => Data::I64((0..n).map(|i| at(i) as i64).collect()),
        Elem::U8 => Data::U8((0..n).map(|i| u8::from(at(i) != 0.0)).collect()),
    }
}
