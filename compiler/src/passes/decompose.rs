//! Expands every composite op into the primitives that define it.
//!
//! Backends that have no fused kernel for a composite run its decomposition; since the
//! interpreter defines composites by the same decomposition, the result computes exactly
//! what the original graph means. Non-composite values keep their names, and the last
//! value of each expansion takes the composite's name, so dumps stay readable.

use crate::ir::{verify, Builder, Def, Graph, Op, ValueId};

/// `graph` with every composite op replaced by its decomposition.
pub fn decompose(graph: &Graph) -> Graph {
    decompose_except(graph, &|_, _| false)
}

/// `graph` with every composite replaced by its decomposition, except those for which
/// `keep(composite, operand types)` holds: a backend with a fused kernel for them.
pub fn decompose_except(
    graph: &Graph,
    keep: &dyn Fn(&crate::ir::ops::Composite, &[&crate::ir::TensorType]) -> bool,
) -> Graph {
    let mut b = Builder::new(&graph.name);
    b.reserve_names(graph.values.iter().map(|v| &v.name));
    let mut map: Vec<ValueId> = Vec::with_capacity(graph.values.len());
    let valid = "names of a verified graph are unique and valid";
    for v in &graph.values {
        let id = match &v.def {
            Def::Input => b.input(&v.name, v.ty.clone()).expect(valid),
            Def::Param(init) => b.param(&v.name, v.ty.clone(), init.clone()).expect(valid),
            Def::State(init) => b.state(&v.name, v.ty.clone(), init.clone()).expect(valid),
            Def::Node { op, operands } => {
                let operands: Vec<ValueId> = operands.iter().map(|o| map[o.index()]).collect();
                let types: Vec<&crate::ir::TensorType> =
                    operands.iter().map(|&o| b.ty(o)).collect();
                let kept = matches!(op, Op::Composite(c) if keep(c, &types));
                match op {
                    Op::Composite(c) if !kept => {
                        let y = c.decompose(&mut b, &operands);
                        b.rename(y, &v.name);
                        y
                    }
                    _ => b
                        .node(Some(&v.name), op.clone(), &operands, Some(v.ty.clone()))
                        .unwrap_or_else(|e| panic!("internal: re-adding %{} failed: {e}", v.name)),
                }
            }
        };
        map.push(id);
    }
    for &o in &graph.outputs {
        b.output(map[o.index()]).expect("outputs stay distinct");
    }
    for &(t, v) in &graph.updates {
        b.update(map[t.index()], map[v.index()])
            .expect("updates stay valid");
    }
    let out = b.finish();
    debug_assert!(verify(&out).is_ok());
    out
}
