//! Scheduling: from a graph to an ordered list of kernels with a memory plan.
//!
//! [`schedule`] expands composites (except those the CPU backend runs whole: attention
//! and its backward pieces, and the row composites along the last axis, softmax to
//! cross_entropy and their gradients; see [`cpu_keeps`]), fuses chains of elementwise, broadcast and
//! permute ops into [`PointwiseKernel`]s (`fusion.rs`), leaves the other ops (matmul,
//! reductions, gathers, reshapes) as library calls, folds transposes into the matrix
//! products that read them (`transpose.rs`), and plans buffer memory by liveness
//! (`memory.rs`). The CPU backend runs a schedule; `smelt dump-ir --stage scheduled`
//! prints it.

mod epilogue;
mod first_fit;
mod fusion;
pub mod memory;
mod overlap;
pub mod serial;
mod transpose;

pub use fusion::{is_fusable, single_op_kernel};
pub use memory::MemoryPlan;

use crate::ir::ops::Composite;
use crate::ir::{Bindings, Graph, ValueId};
use crate::ir::{DType, TensorType};
use crate::kernel::PointwiseKernel;
use crate::passes::decompose::decompose_except;
use std::fmt::Write;

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A fused elementwise kernel.
    Pointwise(PointwiseKernel),
    /// A graph node run by a library kernel (reduction, gather, ...).
    Library(ValueId),
    /// A `matmul` node, whose operands the kernel reads directly, each possibly through
    /// a transpose folded into the read.
    MatMul {
        /// The product.
        output: ValueId,
        /// The left operand.
        lhs: MatMulOperand,
        /// The right operand.
        rhs: MatMulOperand,
        /// An additive epilogue folded in (`epilogue.rs`): this kernel's value is
        /// computed first and the product is added to it; the step then writes the
        /// kernel's output instead of `output`.
        init: Option<Box<PointwiseKernel>>,
    },
}

/// What a [`Step::MatMul`] reads for one operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatMulOperand {
    /// The value read.
    pub value: ValueId,
    /// Read with its last two axes swapped (the operand is `permute` of `value`).
    pub transposed: bool,
}

impl Step {
    /// The value this step writes.
    pub fn output(&self) -> ValueId {
        match self {
            Step::Pointwise(k) => k.output,
            Step::Library(v) => *v,
            Step::MatMul { init: Some(k), .. } => k.output,
            Step::MatMul { output, .. } => *output,
        }
    }

    /// The values this step reads, in operand order.
    pub fn reads(&self, g: &Graph) -> Vec<ValueId> {
        match self {
            Step::Pointwise(k) => k.inputs.clone(),
            Step::Library(v) => transpose::reads(g, *v),
            Step::MatMul { lhs, rhs, init, .. } => {
                let mut r = vec![lhs.value, rhs.value];
                r.extend(init.iter().flat_map(|k| k.inputs.iter().copied()));
                r
            }
        }
    }

    /// How a library step reads each operand of its node, in operand order: a
    /// `grouped_matmul` may read its weight through a transpose folded into the read
    /// (`transpose.rs`); other reads are plain. Empty for other steps.
    pub fn library_operands(&self, g: &Graph) -> Vec<MatMulOperand> {
        match self {
            Step::Library(v) => transpose::operands(g, *v),
            _ => Vec::new(),
        }
    }
}

/// A graph lowered to steps.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The graph the steps refer to (composites expanded, but those the backend runs
    /// whole).
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
    // Attention and the row composites have library kernels; the op-by-op baseline runs
    // the row composites' decomposition.
    let graph = decompose_except(graph, &|c, types| {
        cpu_keeps(c, types) || (fuse && types.first().is_some_and(|t| c.is_row_op_along_last(t)))
    });
    let mut steps = fusion::fuse(&graph, fuse);
    if fuse {
        steps = epilogue::fold_additive_epilogues(&graph, steps);
    }
    let steps = overlap::defer_collective_consumers(&graph, steps);
    Schedule { graph, steps }
}

/// The composites the CPU backend runs whole, as library steps: `paged_attention` on
/// f32 (reading the cache blocks in place), and attention and its backward pieces on
/// f32 (per batch entry, `gemm` products and one fused pass over each score row,
/// instead of a transposed copy of k, a mask, reductions and pointwise passes over the
/// T×S scores).
pub fn cpu_keeps(c: &Composite, types: &[&TensorType]) -> bool {
    match c {
        Composite::Attention { .. } | Composite::AttentionGrad { .. } => {
            types.iter().all(|t| t.dtype == DType::F32)
        }
        // Reads each row's cache blocks in place (one pass per query row).
        Composite::PagedAttention { .. } => types[0].dtype == DType::F32,
        // One unfolded product per image and group instead of one per kernel tap.
        Composite::Conv(_) => types.iter().all(|t| t.dtype == DType::F32),
        _ => false,
    }
}

/// Fuses an already expanded graph (a backend that keeps some composites expands the
/// others itself; the kept ones become library steps).
pub fn schedule_graph(graph: &Graph) -> Schedule {
    let steps = fusion::fuse(graph, true);
    Schedule {
        graph: graph.clone(),
        steps,
    }
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
        // `%a^T`: read transposed, no transpose materialised.
        let read = |o: &MatMulOperand| {
            format!("{}{}", name(o.value), if o.transposed { "^T" } else { "" })
        };
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
                    let crate::ir::Def::Node { op, .. } = &g.value(*v).def else {
                        unreachable!("library steps are nodes")
                    };
                    let ins: Vec<String> = step.library_operands(g).iter().map(read).collect();
                    let _ = writeln!(
                        s,
                        "  step {i}: {} ({}) -> {}: {}",
                        op.name(),
                        ins.join(", "),
                        name(out),
                        g.ty(out)
                    );
                }
                Step::MatMul { lhs, rhs, init, .. } => {
                    let _ = writeln!(
                        s,
                        "  step {i}: matmul ({}, {}) -> {}: {}",
                        read(lhs),
                        read(rhs),
                        name(out),
                        g.ty(out)
                    );
                    if let Some(k) = init {
                        let ins: Vec<String> = k.inputs.iter().map(|&v| name(v)).collect();
                        let _ = writeln!(s, "    added to kernel {} ({})", k.name, ins.join(", "));
                        s.push_str(&k.to_text(name));
                    }
                }
            }
        }
        let plan = MemoryPlan::new(self, bindings);
        s.push_str(&plan.to_text(g));
        s.push_str("}\n");
        s
    }
}
