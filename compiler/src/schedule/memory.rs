//! Memory planning: every buffer a schedule writes gets an offset in one arena, by
//! liveness. A buffer lives from the step that writes it to the last step that reads it
//! (outputs and updates live to the end); buffers whose lifetimes do not overlap share
//! space (greedy first fit, largest first).

use super::Schedule;
use crate::ir::{Bindings, Def, Graph, ValueId};
use std::fmt::Write;

/// Where each intermediate buffer lives, and the arena's size.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// `(value, offset, bytes, first step, last step)` per buffer written by a step.
    pub buffers: Vec<(ValueId, u64, u64, usize, usize)>,
    /// Arena bytes (the peak of intermediate memory).
    pub arena_bytes: u64,
    /// Bytes of inputs, parameters and state (not in the arena).
    pub argument_bytes: u64,
    /// Sum of all buffer sizes, as if none were reused.
    pub unshared_bytes: u64,
}

fn bytes(g: &Graph, v: ValueId, b: &Bindings) -> u64 {
    let ty = g.ty(v);
    let elems: u64 = ty
        .dims()
        .iter()
        .map(|d| d.eval(b).unwrap_or_else(|_| fallback(d)))
        .product();
    elems * ty.dtype.size_bytes() as u64
}

/// A dimension with unbound symbols counts each symbol as 1.
fn fallback(d: &crate::ir::Dim) -> u64 {
    d.coeff()
}

impl MemoryPlan {
    /// Plans `s` with symbolic dimensions bound by `bindings`.
    pub fn new(s: &Schedule, bindings: &Bindings) -> MemoryPlan {
        let g = &s.graph;
        let n = s.steps.len();
        let mut last = vec![0usize; g.values.len()];
        for (i, step) in s.steps.iter().enumerate() {
            for r in step.reads(g) {
                last[r.index()] = last[r.index()].max(i);
            }
        }
        for &o in g.outputs.iter().chain(g.updates.iter().map(|(_, v)| v)) {
            last[o.index()] = n;
        }
        let mut items: Vec<(ValueId, u64, usize, usize)> = s
            .steps
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let v = st.output();
                (v, bytes(g, v, bindings), i, last[v.index()].max(i))
            })
            .collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let mut placed: Vec<(ValueId, u64, u64, usize, usize)> = Vec::new();
        for (v, size, start, end) in items {
            // First fit: the lowest offset clear of every overlapping live buffer.
            let mut conflicts: Vec<(u64, u64)> = placed
                .iter()
                .filter(|p| p.3 <= end && start <= p.4)
                .map(|p| (p.1, p.1 + p.2))
                .collect();
            conflicts.sort();
            let mut offset = 0;
            for (lo, hi) in conflicts {
                if offset + size <= lo {
                    break;
                }
                offset = offset.max(hi);
            }
            placed.push((v, offset, size, start, end));
        }
        placed.sort_by_key(|p| p.3);
        let arena_bytes = placed.iter().map(|p| p.1 + p.2).max().unwrap_or(0);
        let argument_bytes = g
            .ids()
            .filter(|&v| !matches!(g.value(v).def, Def::Node { .. }))
            .map(|v| bytes(g, v, bindings))
            .sum();
        let unshared_bytes = placed.iter().map(|p| p.2).sum();
        MemoryPlan {
            buffers: placed,
            arena_bytes,
            argument_bytes,
            unshared_bytes,
        }
    }

    /// The plan in text.
    pub fn to_text(&self, g: &Graph) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  # memory: arena {:.2} MiB for {} buffers ({:.2} MiB without reuse); inputs, params and state {:.2} MiB",
            mib(self.arena_bytes),
            self.buffers.len(),
            mib(self.unshared_bytes),
            mib(self.argument_bytes)
        );
        for (v, off, size, a, b) in &self.buffers {
            let _ = writeln!(
                s,
                "  buffer %{} @ {off} ({size} bytes) live steps {a}..{b}",
                g.value(*v).name
            );
        }
        s
    }
}
