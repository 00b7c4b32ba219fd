//! The cost model a target supplies: how long an op takes, from the floating-point
//! work it does and the bytes it moves against the target's peak compute and memory
//! bandwidth (a roofline), plus a fixed cost per kernel launch.
//!
//! Every op is assumed to run as its own kernel that reads its operands from memory and
//! writes its result (no fusion yet), except `reshape` and splat constants, which are
//! metadata, and ops that every reader folds into its own read ([`CostModel::folds_into`]:
//! a transpose feeding only matrix products). Symbolic dimensions are costed at [`RooflineTarget::symbol_size`].

use crate::ir::ops::movement::swaps_last_two;
use crate::ir::{Builder, Def, Dim, Graph, Op, TensorType, ValueId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

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

    /// True if `consumer` reads the result of `producer` straight from `producer`'s
    /// operand, so that `producer` costs nothing when only such consumers read it.
    fn folds_into(&self, producer: &Op, consumer: &Op) -> bool {
        let _ = (producer, consumer);
        false
    }
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
    /// Composite flops computed so far (shared by clones).
    pub composite_flops: CompositeFlops,
}

/// The floating-point work of composites already decomposed, by symbol size, composite
/// and operand types: a deep model has the same few composites in every layer, and
/// decomposing one for every node costed (extraction, whole-graph costs) was a tenth of
/// its compile time.
#[derive(Clone, Debug, Default)]
pub struct CompositeFlops(Arc<Mutex<HashMap<CompositeKey, f64>>>);

/// Symbol size, the composite's debug form and its operand types.
type CompositeKey = (u64, String, Vec<TensorType>);

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
            composite_flops: CompositeFlops::default(),
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
        let key = (
            self.symbol_size,
            format!("{c:?}"),
            operands.iter().map(|&t| t.clone()).collect(),
        );
        let cache = &self.composite_flops.0;
        if let Some(&flops) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return flops;
        }
        let flops = self.decomposed_flops(c, operands);
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, flops);
        flops
    }

    fn decomposed_flops(&self, c: &crate::ir::ops::Composite, operands: &[&TensorType]) -> f64 {
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
            Op::Unary(u) => kernel(u.def().flops * n, moved),
            Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => kernel(n, moved),
            Op::Reduce { .. } => kernel(operands.first().map_or(0.0, |t| self.elements(t)), moved),
            // K multiply-adds per result element: the lhs (a grouped product's x: [T, K])
            // ends in K.
            Op::MatMul | Op::GroupedMatMul => {
                let k = operands
                    .first()
                    .and_then(|a| a.dims().last())
                    .map_or(1.0, |d| self.dim(d));
                kernel(2.0 * n * k, moved)
            }
            // Each (t, k, n) of x [T, K] and dy [T, N] is one multiply-add.
            Op::GroupedMatMulWeightGrad { .. } => {
                let cols = operands
                    .get(1)
                    .and_then(|d| d.dims().last())
                    .map_or(1.0, |d| self.dim(d));
                let xs = operands.first().map_or(0.0, |t| self.elements(t));
                kernel(2.0 * xs * cols, moved)
            }
            Op::TopK { .. } => kernel(operands.first().map_or(0.0, |t| self.elements(t)), moved),
            Op::Permute { .. }
            | Op::Broadcast { .. }
            | Op::Slice { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Gather { .. }
            | Op::ScatterAdd { .. }
            | Op::AllToAll { .. }
            | Op::AllGather { .. } => kernel(0.0, moved),
            // The sum over ranks: one add per element and rank; with one rank, a copy.
            Op::AllReduce => kernel(n, moved),
            Op::ReduceScatter { .. } => {
                kernel(operands.first().map_or(0.0, |t| self.elements(t)), moved)
            }
            Op::Iota { .. } | Op::RandomUniform { .. } | Op::RandomNormal { .. } => {
                kernel(n, self.bytes(result))
            }
            Op::Composite(_) => kernel(self.composite_flops(op, operands), moved),
        }
    }

    fn seconds(&self, w: &Work) -> f64 {
        (w.flops / self.peak_flops).max(w.bytes / self.bandwidth) + w.kernels * self.launch_seconds
    }

    /// The CPU backend's matrix product reads a transposed operand through strides, and
    /// so does a grouped product its weight, the only rank-3 operand it has
    /// (`schedule/transpose.rs`).
    fn folds_into(&self, producer: &Op, consumer: &Op) -> bool {
        let Op::Permute { perm } = producer else {
            return false;
        };
        swaps_last_two(perm)
            && (*consumer == Op::MatMul || (*consumer == Op::GroupedMatMul && perm.len() == 3))
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

/// The cost of running every op of `graph` once, except ops folded into all their
/// readers (which need no kernel).
pub fn graph_cost(graph: &Graph, model: &dyn CostModel) -> GraphCost {
    let folded = folded_values(graph, model);
    let mut total = GraphCost::default();
    for (v, id) in graph.values.iter().zip(graph.ids()) {
        if let Def::Node { op, operands } = &v.def {
            total.ops += 1;
            if folded[id.index()] {
                continue;
            }
            let tys: Vec<&TensorType> = operands.iter().map(|&o| graph.ty(o)).collect();
            let w = model.work(op, &tys, &v.ty);
            total.work = total.work + w;
            total.seconds += model.seconds(&w);
        }
    }
    total
}

/// Per value: a node that is read, only by consumers that fold it into their read, and
/// is neither an output nor an update.
fn folded_values(graph: &Graph, model: &dyn CostModel) -> Vec<bool> {
    let op = |id: ValueId| match &graph.value(id).def {
        Def::Node { op, .. } => Some(op),
        _ => None,
    };
    let mut read = vec![false; graph.values.len()];
    let mut materialised = vec![false; graph.values.len()];
    for &o in graph
        .outputs
        .iter()
        .chain(graph.updates.iter().map(|(_, v)| v))
    {
        materialised[o.index()] = true;
    }
    for id in graph.ids() {
        if let Def::Node {
            op: consumer,
            operands,
        } = &graph.value(id).def
        {
            for &o in operands {
                read[o.index()] = true;
                let folds = op(o).is_some_and(|p| model.folds_into(p, consumer));
                materialised[o.index()] |= !folds;
            }
        }
    }
    read.iter()
        .zip(&materialised)
        .map(|(&r, &m)| r && !m)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text;

    /// Kernels counted for a graph body over `%a: f32[2, 6, 4]` and `%b: f32[2, 6, 5]`.
    fn kernels(body: &str) -> f64 {
        let src =
            format!("graph @t {{\ninput %a: f32[2, 6, 4]\ninput %b: f32[2, 6, 5]\n{body}\n}}\n");
        let g = text::parse(&src).unwrap_or_else(|e| panic!("{e}")).graph;
        graph_cost(&g, &RooflineTarget::cpu()).work.kernels
    }

    #[test]
    fn a_transpose_read_only_by_matmuls_is_free() {
        let at = "%at = permute %a {perm = [0, 2, 1]}\n";
        let check = |body: &str, expect: f64| {
            assert_eq!(kernels(&format!("{at}{body}")), expect, "{body}");
        };
        check("%y = matmul %at, %b\noutput %y", 1.0);
        check(
            "%y = matmul %at, %b\n%z = matmul %at, %b\n%s = add %y, %z\noutput %s",
            3.0,
        );
        // Read by an elementwise op too, or an output itself: it runs.
        check("%y = matmul %at, %b\n%e = exp %at\noutput %y, %e", 3.0);
        check("%y = matmul %at, %b\noutput %y, %at", 2.0);
    }

    #[test]
    fn other_permutations_feeding_a_matmul_run() {
        let body = "%ap = permute %a {perm = [1, 0, 2]}\n%bp = permute %b {perm = [1, 0, 2]}\n%at = permute %ap {perm = [0, 2, 1]}\n%y = matmul %at, %bp\noutput %y";
        // `%at` folds; the axis-0/1 swaps do not.
        assert_eq!(kernels(body), 3.0);
    }
}
