//! Conversion between graphs and e-graphs.
//!
//! Into the e-graph: every value becomes a node (leaves keep their names in their key).
//! Back out: leaves are re-created in their original order, so the graph's interface
//! (inputs, parameters, state) is unchanged; then the extracted nodes in dependency
//! order. A class keeps the name of the first original value that landed in it, so
//! values that survive keep their names; new values get fresh numeric names. Outputs
//! and updates are re-attached to their classes.

use super::analysis::TensorGraph;
use super::extract::Extraction;
use super::lang::{Kind, OpKey, TensorNode};
use super::OptimizeError;
use crate::ir::{verify, Builder, Def, Graph, Op, ValueId};
use egg::Id;
use rustc_hash::{FxHashMap, FxHashSet};

/// Adds every value of `graph` to `egraph`; returns each value's class, by value index.
pub fn add_graph(egraph: &mut TensorGraph, graph: &Graph) -> Vec<Id> {
    let mut classes: Vec<Id> = Vec::with_capacity(graph.values.len());
    for v in &graph.values {
        let node = match &v.def {
            Def::Input | Def::Param(_) | Def::State(_) => {
                TensorNode::new(OpKey::leaf(&v.name, v.ty.clone()), vec![])
            }
            Def::Node { op, operands } => TensorNode::new(
                OpKey::op(op.clone(), Some(v.ty.clone())),
                operands.iter().map(|o| classes[o.index()]).collect(),
            ),
        };
        classes.push(egraph.add(node));
    }
    classes
}

/// The classes a graph's results live in: its outputs, then its update values.
pub fn roots(egraph: &TensorGraph, graph: &Graph, classes: &[Id]) -> Vec<Id> {
    graph
        .outputs
        .iter()
        .chain(graph.updates.iter().map(|(_, v)| v))
        .map(|v| egraph.find(classes[v.index()]))
        .collect()
}

/// Rebuilds a graph from `extraction`, keeping `original`'s interface and names.
pub(crate) fn to_graph(
    egraph: &TensorGraph,
    original: &Graph,
    classes: &[Id],
    extraction: &Extraction,
) -> Result<Graph, OptimizeError> {
    let mut b = Builder::new(&original.name);
    b.reserve_names(original.values.iter().map(|v| &v.name));
    let mut name_of: FxHashMap<Id, &str> = FxHashMap::default();
    // Outputs keep their names first: callers find results by name (`present.0.k`).
    for &o in &original.outputs {
        name_of
            .entry(egraph.find(classes[o.index()]))
            .or_insert(&original.value(o).name);
    }
    for (v, &c) in original.values.iter().zip(classes) {
        name_of.entry(egraph.find(c)).or_insert(&v.name);
    }
    let mut built: FxHashMap<Id, ValueId> = FxHashMap::default();
    let mut leaf_ids: FxHashMap<&str, ValueId> = FxHashMap::default();
    for v in &original.values {
        let id = match &v.def {
            Def::Input => b.input(&v.name, v.ty.clone())?,
            Def::Param(init) => b.param(&v.name, v.ty.clone(), init.clone())?,
            Def::State(init) => b.state(&v.name, v.ty.clone(), init.clone())?,
            Def::Node { .. } => continue,
        };
        leaf_ids.insert(&v.name, id);
    }
    let root_classes = |ids: &mut dyn Iterator<Item = ValueId>| -> Vec<Id> {
        ids.map(|v| egraph.find(classes[v.index()])).collect()
    };
    let outputs = root_classes(&mut original.outputs.iter().copied());
    let updates = root_classes(&mut original.updates.iter().map(|(_, v)| *v));
    // Values the input has come in the input's order (autodiff's order, which uses an
    // activation's gradient contributions soon after it is available, so it dies
    // early); a new value comes just before its first user. Emitting root by root
    // instead would leave every weight gradient to its update, at the very end,
    // keeping the activations it reads alive through the whole backward pass.
    let needed = reachable(extraction, outputs.iter().chain(&updates).copied())?;
    let in_input_order = original
        .values
        .iter()
        .zip(classes)
        .filter(|(v, _)| matches!(v.def, Def::Node { .. }))
        .map(|(_, &c)| egraph.find(c))
        .filter(|c| needed.contains(c));
    for class in in_input_order.chain(outputs.iter().chain(&updates).copied()) {
        emit(
            egraph, extraction, class, &name_of, &leaf_ids, &mut built, &mut b,
        )?;
    }
    for (&wanted, root) in original.outputs.iter().zip(outputs) {
        let mut id = built[&root];
        if b.is_output(id) {
            // Two outputs became one value; outputs must stay distinct, so copy it.
            let ty = b.ty(id).clone();
            id = b.node(None, Op::Reshape, &[id], Some(ty))?;
            b.rename(id, &original.value(wanted).name);
        }
        b.output(id)?;
    }
    for (&(target, _), root) in original.updates.iter().zip(updates) {
        let target = leaf_ids[original.value(target).name.as_str()];
        b.update(target, built[&root])?;
    }
    let graph = b.finish();
    verify(&graph)?;
    Ok(graph)
}

/// The classes the extracted program for `roots` uses.
fn reachable(
    extraction: &Extraction,
    roots: impl Iterator<Item = Id>,
) -> Result<FxHashSet<Id>, OptimizeError> {
    let mut seen = FxHashSet::default();
    let mut stack: Vec<Id> = roots.collect();
    while let Some(class) = stack.pop() {
        if seen.insert(class) {
            let node = extraction
                .choice
                .get(&class)
                .ok_or_else(|| OptimizeError::Lost(format!("class {class} was not extracted")))?;
            stack.extend(&node.children);
        }
    }
    Ok(seen)
}

/// Adds class `root` and everything it needs to `b` (iteratively: graphs are deep).
fn emit(
    egraph: &TensorGraph,
    extraction: &Extraction,
    root: Id,
    name_of: &FxHashMap<Id, &str>,
    leaf_ids: &FxHashMap<&str, ValueId>,
    built: &mut FxHashMap<Id, ValueId>,
    b: &mut Builder,
) -> Result<(), OptimizeError> {
    let mut stack: Vec<(Id, bool)> = vec![(root, false)];
    while let Some((class, children_done)) = stack.pop() {
        if built.contains_key(&class) {
            continue;
        }
        let node = extraction
            .choice
            .get(&class)
            .ok_or_else(|| OptimizeError::Lost(format!("class {class} was not extracted")))?;
        if !children_done {
            stack.push((class, true));
            for &c in node.children.iter().rev() {
                if !built.contains_key(&c) {
                    stack.push((c, false));
                }
            }
            continue;
        }
        let id = match node.key.kind() {
            Kind::Leaf { name, .. } => *leaf_ids
                .get(name.as_str())
                .ok_or_else(|| OptimizeError::Lost(format!("unknown leaf %{name}")))?,
            Kind::Op { op, .. } => {
                let operands: Vec<ValueId> = node.children.iter().map(|c| built[c]).collect();
                let ty = egraph[class].data.ty.clone();
                let name = name_of.get(&class).copied();
                b.node(name, op.clone(), &operands, Some(ty))?
            }
        };
        built.insert(class, id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::ir::text;
    use crate::optimize::{optimize, Options, RooflineTarget};

    /// An output that the optimiser merges into an earlier value (a reshape to the same
    /// shape) keeps its own name, and two outputs that become one value both do:
    /// callers find results by name (a decoder's `present.0.k`).
    #[test]
    fn outputs_keep_their_names_through_optimisation() {
        let src = "graph @t {
input %x: f32[4, 8]
%k = exp %x
%present: f32[4, 8] = reshape %k
%twin: f32[4, 8] = reshape %k
output %present, %twin, %k
}";
        let graph = text::parse(src).unwrap().graph;
        let (optimised, _) = optimize(&graph, &RooflineTarget::cpu(), &Options::default()).unwrap();
        let names: Vec<&str> = optimised
            .outputs
            .iter()
            .map(|&o| optimised.value(o).name.as_str())
            .collect();
        assert_eq!(names, ["present", "twin", "k"]);
    }
}
