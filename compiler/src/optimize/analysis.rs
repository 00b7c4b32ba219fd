//! The e-class analysis: every class knows its tensor type (shape and dtype), and, when
//! its value is one number repeated, that number (constant folding).
//!
//! Folding is done in `f64` and the folded constant keeps the `f64` result: the runtime
//! rounds a constant to its dtype under its own precision rule, so the reference
//! interpreter's high-precision mode sees the same numbers as before folding, and an
//! `f32` run differs by at most the rounding of intermediate steps. Folding is only
//! applied to `f32` classes (narrower floats round on every step, and integers have
//! their own wrapping rules). A folded class gets a `constant` node, which the extractor prefers
//! because it costs nothing to read.

use super::lang::{Kind, OpKey, TensorNode};
use crate::ir::{DType, Op, TensorType};
use egg::{Analysis, DidMerge, EGraph, Id};
use rustc_hash::FxHashMap;

/// The e-graph of a tensor program.
pub type TensorGraph = EGraph<TensorNode, TensorAnalysis>;

/// What every e-class knows about its value.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The type, which every node of the class shares.
    pub ty: TensorType,
    /// The number every element holds, when that is known at compile time.
    pub constant: Option<f64>,
}

/// The analysis of [`TensorGraph`]. Facts live in the classes; the analysis itself
/// keeps an index of the classes each op was first added to, so that a rule about one
/// op visits those classes instead of all of them ([`TensorAnalysis::classes_with`]).
#[derive(Default, Clone, Debug)]
pub struct TensorAnalysis {
    /// Op name (`None` for leaves) → the class each node with that op was created in.
    /// Classes merge later: readers canonicalise the ids.
    created_in: FxHashMap<&'static str, Vec<Id>>,
}

impl TensorAnalysis {
    /// The classes (canonical, sorted, each once) holding a node whose op is one of
    /// `ops` (by [`crate::ir::Op::name`]).
    pub fn classes_with(egraph: &TensorGraph, ops: &[&str]) -> Vec<Id> {
        let mut ids: Vec<Id> = ops
            .iter()
            .filter_map(|op| egraph.analysis.created_in.get(op))
            .flatten()
            .map(|&id| egraph.find(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The type of a node from its key and its children's types, or why it is ill-typed.
pub(crate) fn node_type(egraph: &TensorGraph, node: &TensorNode) -> Result<TensorType, String> {
    match node.key.kind() {
        Kind::Leaf { ty, .. } => Ok(ty.clone()),
        Kind::Op { op, declared } => {
            let types: Vec<&TensorType> =
                node.children.iter().map(|&c| &egraph[c].data.ty).collect();
            op.infer(&types, declared.as_ref())
        }
    }
}

/// The compile-time value of `node` if every element is one known number.
fn fold(egraph: &TensorGraph, node: &TensorNode, ty: &TensorType) -> Option<f64> {
    let op = node.op()?;
    let child = |i: usize| egraph[node.children[i]].data.constant;
    match op {
        Op::Constant { values } if values.len() == 1 && ty.dtype == DType::F32 => Some(values[0]),
        // Moving a splat around leaves it a splat of the same number.
        Op::Reshape | Op::Permute { .. } | Op::Broadcast { .. } | Op::Slice { .. } => child(0),
        _ if ty.dtype != DType::F32 => None,
        Op::Unary(u) => Some(u.eval(child(0)?)),
        Op::Binary(b) => Some(b.eval(child(0)?, child(1)?)),
        _ => None,
    }
}

fn same_number(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || a == b
}

impl Analysis<TensorNode> for TensorAnalysis {
    type Data = Facts;

    fn make(egraph: &mut TensorGraph, enode: &TensorNode) -> Facts {
        // Rules only add nodes that `node_type` accepts (see `rules::add_build`), and the
        // conversion from a verified graph adds well-typed nodes only.
        let ty = node_type(egraph, enode)
            .unwrap_or_else(|e| panic!("internal: ill-typed e-node {enode}: {e}"));
        let constant = fold(egraph, enode, &ty);
        Facts { ty, constant }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        debug_assert_eq!(a.ty, b.ty, "merged classes must have one type");
        match (a.constant, b.constant) {
            (None, Some(c)) => {
                a.constant = Some(c);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            (Some(x), Some(y)) => {
                debug_assert!(same_number(x, y), "merged constants differ: {x} vs {y}");
                DidMerge(false, false)
            }
            (None, None) => DidMerge(false, false),
        }
    }

    fn modify(egraph: &mut TensorGraph, id: Id) {
        // A class of one node is new (or a merge of equal nodes, indexed already).
        if let [node] = egraph[id].nodes.as_slice() {
            if let Some(op) = node.op() {
                let name = op.name();
                egraph.analysis.created_in.entry(name).or_default().push(id);
            }
        }
        let Some(value) = egraph[id].data.constant else {
            return;
        };
        let ty = egraph[id].data.ty.clone();
        let splat = TensorNode::new(OpKey::splat(value, ty), vec![]);
        let c = egraph.add(splat);
        egraph.union(id, c);
    }
}
