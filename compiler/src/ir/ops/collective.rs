//! Communication between ranks: `all_reduce`, the gradient sum behind data
//! parallelism, and `all_to_all`, the exchange behind expert parallelism (DeepSeek-V3's
//! MoE dispatch and combine).
//!
//! `all_reduce %x`: every rank of the world receives the elementwise sum of `%x` over
//! all ranks. The runtime runs it on the process's collective engine (MPI across
//! processes, or a simulated world of threads); with one rank it is the identity. Each
//! rank's output depends on every rank's input, so its gradient is the same sum of the
//! adjoints: `∂L/∂x_s = Σ_r ∂L/∂y_r`.
//!
//! `all_to_all %x {axis}`: the ranks of the expert-parallel group each split `axis`
//! into one chunk per rank and send chunk `j` to rank `j`; rank `i` receives chunk `i`
//! of every rank, in rank order. smelt runs one rank per program today, so the exchange
//! is a loopback and the value passes through unchanged; what the op adds is *where*
//! the traffic is: backends run it as a communication kernel (on the GPU, on the SMs
//! reserved by `--comm-sms`, overlapping compute).
//!
//! The exchange is a permutation that is its own inverse, so its gradient is the same
//! exchange of the adjoint.

use super::{expect_arity, ShapeResult};
use crate::ir::{Builder, Op, TensorType, ValueId};

pub(super) fn infer_all_reduce(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    if !x[0].dtype.is_float() {
        return Err(format!(
            "all_reduce sums floating-point values, found {}",
            x[0]
        ));
    }
    Ok(x[0].clone())
}

pub(super) fn vjp_all_reduce(b: &mut Builder, g: ValueId) -> ValueId {
    b.add(Op::AllReduce, &[g])
}

pub(super) fn infer_all_to_all(axis: usize, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    if axis >= x[0].rank() {
        return Err(format!("axis {axis} is out of range for {}", x[0]));
    }
    Ok(x[0].clone())
}

pub(super) fn vjp_all_to_all(axis: usize, b: &mut Builder, g: ValueId) -> ValueId {
    b.add(Op::AllToAll { axis }, &[g])
}
