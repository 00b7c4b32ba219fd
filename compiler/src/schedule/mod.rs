//! Scheduling: from a graph to an ordered list of kernels with a memory plan.
//!
//! [`schedule`] expands composites, fuses chains of elementwise, broadcast and
//! permute ops into [`PointwiseKernel`]s (`fusion.rs`), leaves the other ops (matmul,
//! reductions, gathers, reshapes) as library calls, and plans buffer memory by liveness
//! (`memory.rs`). The CPU backend runs a schedule; `smelt dump-ir --stage scheduled`
//! prints it.

mod fusion;
pub mod memory;
pub mod serial;

pub use fusion::is_fusable;
pub use memory::MemoryPlan;

use crate::ir::{Bindings, Graph, ValueId};
use crate::kernel::PointwiseKernel;
use crate::passes::decompose;
use std::fmt::Write;

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A fused elementwise kernel.
    Pointwise(PointwiseKernel),
    /// A graph node run by a library kernel (matmul, reduction, gather, ...).
    Library(ValueId),
}

impl Step {
    /// The value this step writes.
    pub fn output(&self) -> ValueId {
        match self {
            Step::Pointwise(k) => k.output,
            Step::Library(v) => *v,
        }
    }
}

/// A graph lowered to steps.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The graph the steps refer to (composites expanded).
    pub graph: Graph,
    /// Steps in execution order; every value a step reads is written by an earlier
    /// step or is an input, parameter or state value.
    pub steps: Vec<Step>,
}

/// Lowers `graph` (verified) to a schedule.
pub fn schedule(graph: &Graph) -> Schedule {
    schedule_with(graph, true)
}

/// Like [`schedule`]; with `fuse` false every elementwise op gets its own kernel (the
/// op-by-op baseline that benchmarks compare fusion against).
pub fn schedule_with(graph: &Graph, fuse: bool) -> Schedule {
    let graph = decompose(graph);
    let steps = fusion::fuse(&graph, fuse);
    Schedule { graph, steps }
}

impl Schedule {
    /// Number of fused kernels and of library steps.
    pub fn counts(&self) -> (usize, usize) {
        let fused = self
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Pointwise(_)))
            .count();
        (fused, self.steps.len() - fused)
    }

    /// The schedule in text: each step with what it reads and writes, then the memory
    /// plan for `bindings` (symbols not bound count as 1).
    pub fn to_text(&self, bindings: &Bindings) -> String {
        let g = &self.graph;
        let name = |v: ValueId| format!("%{}", g.value(v).name);
        let mut s = String::new();
        let (fused, library) = self.counts();
        let _ = writeln!(s, "schedule @{} {{", g.name);
        let _ = writeln!(
            s,
            "  # {} steps: {fused} fused pointwise kernels, {library} library calls",
            self.steps.len()
        );
        for (i, step) in self.steps.iter().enumerate() {
            let out = step.output();
            match step {
                Step::Pointwise(k) => {
                    let ins: Vec<String> = k.inputs.iter().map(|&v| name(v)).collect();
                    let _ = writeln!(
                        s,
                        "  step {i}: kernel {} ({} ops) ({}) -> {}: {}",
                        k.name,
                        k.op_count(),
                        ins.join(", "),
                        name(out),
                        g.ty(out)
                    );
                    s.push_str(&k.to_text(name));
                }
                Step::Library(v) => {
                    let crate::ir::Def::Node { op, operands } = &g.value(*v).def else {
                        unreachable!("library steps are nodes")
                    };
                    let ins: Vec<String> = operands.iter().map(|&o| name(o)).collect();
                    let _ = writeln!(
                        s,
                        "  step {i}: {} ({}) -> {}: {}",
                        op.name(),
                        ins.join(", "),
                        name(out),
                        g.ty(out)
                    );
                }
            }
        }
        let plan = MemoryPlan::new(self, bindings);
        s.push_str(&plan.to_text(g));
        s.push_str("}\n");
        s
    }
}
