//! The cost model a target supplies: how long an op takes, from the floating-point
//! work it does and the bytes it moves against the target's peak compute and memory
//! bandwidth (a roofline), plus a fixed cost per kernel launch.
//!
//! Every op is assumed to run as its own kernel that reads its operands from memory and
//! writes its result (no fusion yet), except `reshape` and splat constants, which are
//! metadata. Symbolic dimensions are costed at [`RooflineTarget::symbol_size`].

use crate::ir::{Builder, Def, Dim, Graph, Op, TensorType};
use std::fmt;

/// The work of one op or a whole graph.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    /// Floating-point operations.
    pub flops: f64,
    /// Bytes read and written.
    pub bytes: f64,
    /// Kernels launched.
    pub kernels: f64,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            flops: self.flops + o.flops,
            bytes: self.bytes + o.bytes,
            kernels: self.kernels + o.kernels,
        }
    }
}

/// A target's cost model, used by extraction to pick the cheapest equivalent program.
pub trait CostModel: Sync {
    /// The work of `op` on operands of types `operands` giving a result of type `result`.
    fn work(&self, op: &Op, operands: &[&TensorType], result: &TensorType) -> Work;

    /// Estimated seconds for `work` on this target.
    fn seconds(&self, work: &Work) -> f64;
}

/// A roofline target: `max(flops / peak, bytes / bandwidth) + kernels * launch`.
#[derive(Clone, Debug)]
pub struct RooflineTarget {
    /// Peak floating-point operations per second.
    pub peak_flops: f64,
    /// Memory bandwidth in bytes per second.
    pub bandwidth: f64,
    /// Seconds per kernel launch (dispatch, thread wake-up).
    pub launch_seconds: f64,
    /// The size assumed for each symbolic dimension (`B`, `T`).
    pub symbol_size: u64,
}

impl RooflineTarget {
    /// The CPU backend on this 2-core machine: about 150 GFLOP/s in f32 (`gemm` on both
    /// cores), about 20 GB/s of memory bandwidth, and a few microseconds per op for
    /// dispatch and `rayon` wake-up.
    pub fn cpu() -> RooflineTarget {
        RooflineTarget {
            peak_flops: 150e9,
            bandwidth: 20e9,
            launch_seconds: 2e-6,
            symbol_size: 32,
        }
    }

    fn elements(&self, ty: &TensorType) -> f64 {
        ty.dims().iter().map(|d| self.dim(d)).product()
    }

    fn dim(&self, d: &Dim) -> f64 {
        d.coeff() as f64 * (self.symbol_size as f64).powi(d.syms().len() as i32)
    }

    fn bytes(&self, ty: &TensorType) -> f64 {
        self.elements(ty) * ty.dtype.size_bytes() as f64
    }

    /// Floating-point work of a composite: the sum over its decomposition.
    fn composite_flops(&self, op: &Op, operands: &[&TensorType]) -> f64 {
        let Op::Composite(c) = op else { return 0.0 };
        let mut b = Builder::new("composite");
        let mut ids = Vec::new();
        for (i, t) in operands.iter().enumerate() {
            match b.input(&format!("x{i}"), (*t).clone()) {
                Ok(id) => ids.push(id),
                Err(_) => return 0.0,
            }
        }
        c.decompose(&mut b, &ids);
        let g = b.finish();
        g.values
            .iter()
            .filter_map(|v| match &v.def {
                Def::Node { op, operands } => {
                    let tys: Vec<&TensorType> = operands.iter().map(|o| g.ty(*o)).collect();
                    Some(self.work(op, &tys, &v.ty).flops)
                }
                _ => None,
            })
            .sum()
    }
}

impl CostModel for RooflineTarget {
    fn work(&self, op: &Op, operands: &[&TensorType], result: &TensorType) -> Work {
        let n = self.elements(result);
        let moved = operands.iter().map(|t| self.bytes(t)).sum::<f64>() + self.bytes(result);
        let kernel = |flops: f64, bytes: f64| Work {
            flops,
            bytes,
            kernels: 1.0,
        };
        match op {
            Op::Reshape => Work::default(),
            Op::Constant { values } if values.len() == 1 => Work::default(),
            Op::Constant { .. } => kernel(0.0, self.bytes(result)),
            Op::Unary(u) => {
                // Transcendentals cost several multiply-adds each.
                use crate::ir::ops::UnaryOp::*;
                let per = match u {
                    Neg | Abs => 1.0,
                    Sqrt | Rsqrt | Recip => 4.0,
                    Exp | Log | Tanh | Erf | Sin | Cos => 10.0,
                };
                kernel(per * n, moved)
            }
            Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => kernel(n, moved),
            Op::Reduce { .. } => kernel(operands.first().map_or(0.0, |t| self.elements(t)), moved),
            Op::MatMul => {
                let k = operands
                    .first()
                    .and_then(|a| a.dims().last())
                    .map_or(1.0, |d| self.dim(d));
                kernel(2.0 * n * k, moved)
            }
            Op::Permute { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Gather { .. }
            | Op::ScatterAdd { .. } => kernel(0.0, moved),
            Op::Iota { .. } | Op::RandomUniform { .. } | Op::RandomNormal { .. } => {
                kernel(n, self.bytes(result))
            }
            Op::Composite(_) => kernel(self.composite_flops(op, operands), moved),
        }
    }

    fn seconds(&self, w: &Work) -> f64 {
        (w.flops / self.peak_flops).max(w.bytes / self.bandwidth) + w.kernels * self.launch_seconds
    }
}

/// The estimated cost of a whole graph.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphCost {
    /// Summed work of every op.
    pub work: Work,
    /// Number of op nodes.
    pub ops: usize,
    /// Summed estimated seconds.
    pub seconds: f64,
}

impl fmt::Display for GraphCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.4} GFLOP, {:.2} MB moved, {} ops, {} kernels, est. {:.3} ms",
            self.work.flops / 1e9,
            self.work.bytes / 1e6,
            self.ops,
            self.work.kernels,
            self.seconds * 1e3
        )
    }
}

/// The cost of running every op of `graph` once.
pub fn graph_cost(graph: &Graph, model: &dyn CostModel) -> GraphCost {
    let mut total = GraphCost::default();
    for v in &graph.values {
        if let Def::Node { op, operands } = &v.def {
            let tys: Vec<&TensorType> = operands.iter().map(|&o| graph.ty(o)).collect();
            let w = model.work(op, &tys, &v.ty);
            total.work = total.work + w;
            total.ops += 1;
            total.seconds += model.seconds(&w);
        }
    }
    total
}
