//! Picks how a graph runs: the CPU backend, the reference interpreter, or the GPU
//! path (on a real GPU, or simulated on the CPU).

use crate::cpu::{CpuProgram, Unsupported};
use crate::cuda::{CudaError, CudaRunner};
use crate::gpusim;
use crate::interp::{execute, Execution, Precision, RunError};
use crate::tensor::Tensor;
use smelt_compiler::gpu::plan::check_comm_sms;
use smelt_compiler::gpu::GpuTarget;
use smelt_compiler::ir::Graph;
use std::collections::HashMap;
use std::sync::Arc;

/// Which GPU the GPU path plans for, and its communication SMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Target name: `h800`, `h100` or `h200`.
    pub target: &'static str,
    /// SMs reserved for communication kernels.
    pub comm_sms: u32,
}

/// Where a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (f32 kernels, all cores).
    Cpu,
    /// The reference interpreter at the given precision.
    Interp(Precision),
    /// The GPU kernels in the kernel-IR evaluator, on the CPU.
    GpuSim(GpuOptions),
    /// The GPU kernels on an NVIDIA GPU.
    Cuda(GpuOptions),
}

/// Why a graph cannot be prepared for a device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The CPU backend lacks something.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The GPU could not be opened (or the GPU options are invalid).
    #[error(transparent)]
    Cuda(#[from] CudaError),
}

/// A graph ready to run on a device.
#[derive(Debug, Clone)]
pub enum Engine {
    /// Compiled for the CPU backend.
    Cpu(CpuProgram),
    /// Interpreted.
    Interp(Graph, Precision),
    /// Simulated GPU kernels.
    GpuSim(Graph, GpuTarget, u32),
    /// On a GPU (loaded at the first run, kept for runs of the same shapes).
    Cuda(Arc<CudaRunner>),
}

fn gpu_target(o: GpuOptions) -> Result<GpuTarget, CudaError> {
    let target = GpuTarget::by_name(o.target).map_err(CudaError::from)?;
    check_comm_sms(&target, o.comm_sms).map_err(CudaError::from)?;
    Ok(target)
}

impl Engine {
    /// Prepares `graph` for `device`.
    pub fn new(graph: &Graph, device: Device) -> Result<Engine, EngineError> {
        Ok(match device {
            Device::Cpu => Engine::Cpu(CpuProgram::compile(graph)?),
            Device::Interp(p) => Engine::Interp(graph.clone(), p),
            Device::GpuSim(o) => Engine::GpuSim(graph.clone(), gpu_target(o)?, o.comm_sms),
            Device::Cuda(o) => Engine::Cuda(Arc::new(CudaRunner::new(
                graph,
                gpu_target(o)?,
                o.comm_sms,
            )?)),
        })
    }

    /// Runs once on `feeds`.
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        match self {
            Engine::Cpu(p) => p.run(feeds),
            Engine::Interp(g, p) => execute(g, feeds, *p),
            Engine::GpuSim(g, t, comm) => gpusim::execute(g, feeds, t, *comm),
            Engine::Cuda(r) => r.run(feeds),
        }
    }
}
