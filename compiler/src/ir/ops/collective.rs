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
//!
//! `all_gather %x {axis, ranks}`: every rank receives the operands of all `ranks`
//! ranks concatenated along `axis` in rank order. `reduce_scatter %x {axis, ranks}`:
//! the sum over all ranks, cut along `axis` into `ranks` chunks, of which rank `r`
//! keeps chunk `r`. The world's size is an attribute because the result's shape
//! depends on it; running in a world of another size is an error. Each is the other's
//! gradient (ZeRO-1 reduces gradients with one and gathers parameters with the other).

use super::{expect_arity, ShapeResult};
use crate::ir::{Builder, Dim, Op, Shape, TensorType, ValueId};

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

fn collective_axis(name: &str, axis: usize, ranks: u64, x: &TensorType) -> Result<(), String> {
    if ranks == 0 {
        return Err(format!("{name} needs at least one rank"));
    }
    if axis >= x.rank() {
        return Err(format!("axis {axis} is out of range for {x}"));
    }
    if !x.dtype.is_float() {
        return Err(format!("{name} moves floating-point values, found {x}"));
    }
    Ok(())
}

pub(super) fn infer_all_gather(axis: usize, ranks: u64, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    collective_axis("all_gather", axis, ranks, x[0])?;
    let mut dims = x[0].dims().to_vec();
    dims[axis] = dims[axis].mul(&Dim::from(ranks))?;
    Ok(TensorType::new(x[0].dtype, Shape(dims)))
}

pub(super) fn infer_reduce_scatter(axis: usize, ranks: u64, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    collective_axis("reduce_scatter", axis, ranks, x[0])?;
    let mut dims = x[0].dims().to_vec();
    let whole = dims[axis].as_static().ok_or_else(|| {
        format!(
            "reduce_scatter needs a static axis {axis} to cut, found {}",
            x[0]
        )
    })?;
    if whole % ranks != 0 {
        return Err(format!(
            "reduce_scatter cuts axis {axis} of {} into {ranks} equal chunks: {whole} is not a multiple",
            x[0]
        ));
    }
    dims[axis] = Dim::from(whole / ranks);
    Ok(TensorType::new(x[0].dtype, Shape(dims)))
}
