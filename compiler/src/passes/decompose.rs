//! Expands every composite op into the primitives that define it.
//!
//! Backends that have no fused kernel for a composite run its decomposition; since the
//! interpreter defines composites by the same decomposition, the result computes exactly
//! what the original graph means. Non-composite values keep their names, and the last
//! value of each expansion takes the composite's name, so dumps stay readable.

use crate::ir::{verify, Builder, Def, Graph, Op, ValueId};

/// `graph` with every composite op replaced by its decomposition.
pub fn decompose(graph: &Graph) -> Graph {
    let mut b = Builder::new(&graph.name);
    b.reserve_names(graph.values.iter().map(|v| &v.name));
    let mut map: Vec<ValueId> = Vec::with_capacity(graph.values.len());
    let keep = "names of a verified graph are unique and valid";
    for v in &graph.values {
        let id = match &v.def {
            Def::Input => b.input(&v.name, v.ty.clone()).expect(keep),
            Def::Param(init) => b.param(&v.name, v.ty.clone(), init.clone()).expect(keep),
            Def::State(init) => b.state(&v.name, v.ty.clone(), init.clone()).expect(keep),
            Def::Node { op, operands } => {
                let operands: Vec<ValueId> = operands.iter().map(|o| map[o.index()]).collect();
                match op {
                    Op::Composite(c) => {
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
