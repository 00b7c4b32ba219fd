//! Picks how a graph runs: the CPU backend or the reference interpreter.

use crate::cpu::{CpuProgram, Unsupported};
use crate::interp::{execute, Execution, Precision, RunError};
use crate::tensor::Tensor;
use smelt_compiler::ir::Graph;
use std::collections::HashMap;

/// Where a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend (f32 kernels, all cores).
    Cpu,
    /// The reference interpreter at the given precision.
    Interp(Precision),
}

/// A graph ready to run on a device.
#[derive(Debug, Clone)]
pub enum Engine {
    /// Compiled for the CPU backend.
    Cpu(CpuProgram),
    /// Interpreted.
    Interp(Graph, Precision),
}

impl Engine {
    /// Prepares `graph` for `device`.
    pub fn new(graph: &Graph, device: Device) -> Result<Engine, Unsupported> {
        Ok(match device {
            Device::Cpu => Engine::Cpu(CpuProgram::compile(graph)?),
            Device::Interp(p) => Engine::Interp(graph.clone(), p),
        })
    }

    /// Runs once on `feeds`.
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        match self {
            Engine::Cpu(p) => p.run(feeds),
            Engine::Interp(g, p) => execute(g, feeds, *p),
        }
    }
}
