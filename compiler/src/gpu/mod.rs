//! The GPU path: Hopper kernels as PTX text, and the SM plan that launches them.
//!
//! ```text
//! Schedule ──lower──▶ GpuProgram (KernelCalls of kir::Kernel) ──ptx──▶ .ptx module
//!                          │                        └──eval──▶ CPU run of the same kernels
//!                          └──plan (GpuTarget, --comm-sms)──▶ SmPlan: stream, grid, SM budget
//! ```
//!
//! - `kir.rs`: the kernel IR (one thread's program, PTX-shaped, structured control flow).
//! - `build.rs`: building kernels in code.
//! - `math.rs`: the IR's float functions in PTX's fast instructions.
//! - `lower/`: schedule steps to kernels, one file per op family.
//! - `comm/`: communication kernels (MoE all-to-all) behind a transport trait.
//! - `eval/`: the kernel-IR evaluator (grid, blocks, lockstep threads, shared memory,
//!   barriers, race detection) that tests kernel logic without a GPU.
//! - `ptx.rs`: kernel IR to PTX text.
//! - `program.rs`: a lowered graph with its buffers; simulation in the evaluator.
//! - `plan.rs`: the SM plan.
//! - `target.rs`: H800, H100 and H200 descriptions.
//! - `wgmma.rs`: the shared-memory and register layouts of `wgmma`, written down once.

pub mod build;
pub mod comm;
pub mod eval;
pub mod kir;
pub mod lower;
pub mod math;
pub mod plan;
pub mod program;
pub mod ptx;
pub mod ptxas;
pub mod target;
pub mod wgmma;

pub use plan::SmPlan;

use crate::ir::Graph;
use crate::schedule::{schedule_graph, Schedule};

/// The GPU's schedule of `graph`: like the CPU's, except that composites with a fused
/// GPU kernel stay whole: attention and its backward pieces (within the kernels'
/// head-size limit), and the row composites along the last axis (softmax, log_softmax,
/// layer_norm, rms_norm, cross_entropy and their gradients, see `lower::rows`).
pub fn schedule(graph: &Graph) -> Schedule {
    use crate::ir::ops::Composite;
    let keep = |c: &Composite, types: &[&crate::ir::TensorType]| {
        lower::attention::supported(c, types) || lower::rows::supported(c, types)
    };
    schedule_graph(&crate::passes::decompose::decompose_except(graph, &keep))
}

pub use program::GpuProgram;
pub use target::GpuTarget;
