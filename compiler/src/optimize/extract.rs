//! DAG-aware extraction: picks one node per e-class so that the program reachable from
//! the roots is cheap when every shared subterm is computed once.
//!
//! egg's `Extractor` minimises *tree* cost, which charges a subterm again at every use,
//! so it may avoid reusing a value that has to be computed anyway. This extractor:
//!
//! 1. computes tree costs bottom-up (a fixpoint). Every op node costs strictly more
//!    than nothing, so following the best node of each class always reaches cheaper
//!    classes, and the initial selection has no cycle;
//! 2. improves the selection greedily with shared-node accounting: a class may switch to
//!    a node whose operands are already computed by the selected program (they cost
//!    nothing more), when the switch lowers the DAG cost and creates no cycle (the new
//!    operands must not depend on the class under the current selection).
//!
//! A class whose chosen node every chosen reader folds into its own read
//! ([`CostModel::folds_into`], a transpose feeding matrix products) costs nothing: it
//! never runs as a kernel. Roots are always materialised.

use super::analysis::TensorGraph;
use super::cost::CostModel;
use super::lang::TensorNode;
use crate::ir::TensorType;
use egg::{Id, Language};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The smallest cost of an op node, so that no op is free (free ops could form cycles
/// that tree costs cannot tell apart).
const MIN_OP_SECONDS: f64 = 1e-9;

/// The chosen node of every class that the extracted program uses.
#[derive(Debug)]
pub struct Extraction {
    /// Class (canonical id) → chosen node (children canonical).
    pub choice: HashMap<Id, TensorNode>,
    /// Estimated seconds of the extracted program, shared subterms counted once.
    pub dag_seconds: f64,
}

struct Table<'m> {
    /// Per class: its nodes (canonical children) and their own costs. Ordered, so that
    /// ties are broken the same way on every run (dumps must be reproducible).
    nodes: BTreeMap<Id, Vec<(TensorNode, f64)>>,
    model: &'m dyn CostModel,
}

impl<'m> Table<'m> {
    fn new(egraph: &TensorGraph, model: &'m dyn CostModel) -> Table<'m> {
        let mut nodes = BTreeMap::new();
        for class in egraph.classes() {
            let ty = &class.data.ty;
            let list = class
                .nodes
                .iter()
                .map(|n| {
                    let n = n.clone().map_children(|c| egraph.find(c));
                    let cost = match n.op() {
                        None => 0.0,
                        Some(op) => {
                            let tys: Vec<&TensorType> =
                                n.children.iter().map(|&c| &egraph[c].data.ty).collect();
                            model.seconds(&model.work(op, &tys, ty)).max(MIN_OP_SECONDS)
                        }
                    };
                    (n, cost)
                })
                .collect();
            nodes.insert(class.id, list);
        }
        Table { nodes, model }
    }

    /// Whether `reader` folds `node` (a child's chosen node) into its read.
    fn folds(&self, node: &TensorNode, reader: &TensorNode) -> bool {
        match (node.op(), reader.op()) {
            (Some(p), Some(c)) => self.model.folds_into(p, c),
            _ => false,
        }
    }

    /// Best tree cost and node index of every class that has a finite cost.
    fn tree_costs(&self) -> HashMap<Id, (f64, usize)> {
        let mut best: HashMap<Id, (f64, usize)> = HashMap::new();
        loop {
            let mut changed = false;
            for (&id, list) in &self.nodes {
                for (i, (n, own)) in list.iter().enumerate() {
                    let mut total = *own;
                    let mut ok = true;
                    for c in &n.children {
                        match best.get(c) {
                            Some((cc, _)) => total += cc,
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok && best.get(&id).is_none_or(|(b, _)| total < *b) {
                        best.insert(id, (total, i));
                        changed = true;
                    }
                }
            }
            if !changed {
                return best;
            }
        }
    }

    fn node(&self, id: Id, i: usize) -> &(TensorNode, f64) {
        &self.nodes[&id][i]
    }

    /// The classes reachable from `roots` under `sel`, and their summed own costs
    /// (classes folded into all their readers count nothing).
    fn reachable(&self, roots: &[Id], sel: &HashMap<Id, usize>) -> (HashSet<Id>, f64) {
        let mut seen = HashSet::new();
        let mut materialised: HashSet<Id> = roots.iter().copied().collect();
        let mut stack: Vec<Id> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let (n, _) = self.node(id, sel[&id]);
            for &c in &n.children {
                if !self.folds(&self.node(c, sel[&c]).0, n) {
                    materialised.insert(c);
                }
                stack.push(c);
            }
        }
        let cost = seen
            .iter()
            .filter(|id| materialised.contains(id))
            .map(|id| self.node(*id, sel[id]).1)
            .sum();
        (seen, cost)
    }

    /// The tree cost of class `c` as an operand of `reader`: without the best node's
    /// own cost when `reader` folds it into its read.
    fn operand_cost(&self, best: &HashMap<Id, (f64, usize)>, c: Id, reader: &TensorNode) -> f64 {
        let (tree, i) = best[&c];
        let (node, own) = self.node(c, i);
        if self.folds(node, reader) {
            tree - own
        } else {
            tree
        }
    }

    /// Whether `target` is reachable from `from` under `sel`.
    fn reaches(&self, from: &[Id], target: Id, sel: &HashMap<Id, usize>) -> bool {
        let mut seen = HashSet::new();
        let mut stack = from.to_vec();
        while let Some(id) = stack.pop() {
            if id == target {
                return true;
            }
            if seen.insert(id) {
                stack.extend(self.node(id, sel[&id]).0.children.iter().copied());
            }
        }
        false
    }
}

/// Tree-cost extraction (each use pays for its whole subterm), as egg's `Extractor`
/// does; kept for comparison and as the starting point of [`extract`].
pub fn extract_tree(egraph: &TensorGraph, roots: &[Id], model: &dyn CostModel) -> Extraction {
    let table = Table::new(egraph, model);
    let sel: HashMap<Id, usize> = table
        .tree_costs()
        .into_iter()
        .map(|(id, (_, i))| (id, i))
        .collect();
    finish(&table, roots, &sel)
}

fn finish(table: &Table, roots: &[Id], sel: &HashMap<Id, usize>) -> Extraction {
    let (used, dag_seconds) = table.reachable(roots, sel);
    let choice = used
        .into_iter()
        .map(|id| (id, table.node(id, sel[&id]).0.clone()))
        .collect();
    Extraction {
        choice,
        dag_seconds,
    }
}

/// Extracts the program computing `roots` (canonical ids) with the lowest DAG cost the
/// greedy search finds. Every root must have a finite cost (true of any class built
/// from a graph).
pub fn extract(egraph: &TensorGraph, roots: &[Id], model: &dyn CostModel) -> Extraction {
    let table = Table::new(egraph, model);
    let best = table.tree_costs();
    let mut sel: HashMap<Id, usize> = best.iter().map(|(&id, &(_, i))| (id, i)).collect();
    let (mut used, mut current) = table.reachable(roots, &sel);
    for _round in 0..4 {
        let mut improved = false;
        let mut order: Vec<Id> = used.iter().copied().collect();
        order.sort();
        for id in order {
            if !used.contains(&id) {
                continue;
            }
            let chosen = sel[&id];
            // What switching away could save at most: this node and its operands'
            // subterms (if nothing else used them).
            let (now, own_now) = table.node(id, chosen);
            let could_free: f64 = own_now
                + now
                    .children
                    .iter()
                    .map(|c| best.get(c).map_or(0.0, |b| b.0))
                    .sum::<f64>();
            for (i, (n, own)) in table.nodes[&id].iter().enumerate() {
                if i == chosen || !n.children.iter().all(|c| best.contains_key(c)) {
                    continue;
                }
                // Operands already computed cost nothing more; others their tree cost.
                let mut distinct: Vec<Id> = n.children.clone();
                distinct.sort();
                distinct.dedup();
                let marginal: f64 = own
                    + distinct
                        .iter()
                        .filter(|c| !used.contains(c))
                        .map(|&c| table.operand_cost(&best, c, n))
                        .sum::<f64>();
                if marginal >= could_free || table.reaches(&n.children, id, &sel) {
                    continue;
                }
                sel.insert(id, i);
                let (now_used, cost) = table.reachable(roots, &sel);
                if cost < current - 1e-15 {
                    current = cost;
                    used = now_used;
                    improved = true;
                    break;
                }
                sel.insert(id, chosen);
            }
        }
        if !improved {
            break;
        }
    }
    finish(&table, roots, &sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::{BinaryOp, UnaryOp};
    use crate::ir::{DType, Op};
    use crate::optimize::cost::RooflineTarget;
    use crate::optimize::lang::OpKey;

    fn node(eg: &mut TensorGraph, op: Op, children: Vec<Id>) -> Id {
        eg.add(TensorNode::new(OpKey::op(op, None), children))
    }

    /// `m = x @ w` is an output anyway. Another output may be `exp(m)` or a chain of
    /// two adds on `x`: alone, the adds are cheaper than exp plus the product (tree
    /// cost), but with `m` already computed, `exp(m)` costs only the exp (DAG cost).
    #[test]
    fn dag_cost_reuses_what_tree_cost_pays_twice() {
        let ty = TensorType::fixed(DType::F32, &[64, 64]);
        let mut eg = TensorGraph::default();
        let x = eg.add(TensorNode::new(OpKey::leaf("x", ty.clone()), vec![]));
        let w = eg.add(TensorNode::new(OpKey::leaf("w", ty.clone()), vec![]));
        let m = node(&mut eg, Op::MatMul, vec![x, w]);
        let e = node(&mut eg, Op::Unary(UnaryOp::Exp), vec![m]);
        let xx = node(&mut eg, Op::Binary(BinaryOp::Add), vec![x, x]);
        let adds = node(&mut eg, Op::Binary(BinaryOp::Add), vec![xx, x]);
        // Pretend they are equal: extraction only sees costs.
        eg.union(e, adds);
        eg.rebuild();
        let roots = [eg.find(m), eg.find(e)];
        let model = RooflineTarget::cpu();
        let is_exp = |x: &Extraction| x.choice[&roots[1]].op() == Some(&Op::Unary(UnaryOp::Exp));
        let tree = extract_tree(&eg, &roots, &model);
        let dag = extract(&eg, &roots, &model);
        assert!(!is_exp(&tree), "tree cost picks the adds");
        assert!(is_exp(&dag), "DAG cost reuses the product");
        assert!(dag.dag_seconds < tree.dag_seconds);
    }
}
