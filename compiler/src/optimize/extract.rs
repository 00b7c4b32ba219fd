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
//! Both steps stay close to linear in the size of the e-graph, which matters for deep
//! models: the selected program is kept with use counts ([`Program`]), so trying a
//! switch costs the part of the program it changes rather than a walk of the whole
//! program, and the cycle check only searches classes above the switching one in a
//! topological order of the selection ([`Program::creates_cycle`]).
//!
//! A class whose chosen node every chosen reader folds into its own read
//! ([`CostModel::folds_into`], a transpose feeding matrix products) costs nothing: it
//! never runs as a kernel. Roots are always materialised.

use super::analysis::TensorGraph;
use super::cost::CostModel;
use super::lang::TensorNode;
use crate::ir::TensorType;
use egg::{Id, Language};
use rustc_hash::{FxHashMap, FxHashSet};

/// The smallest cost of an op node, so that no op is free (free ops could form cycles
/// that tree costs cannot tell apart).
const MIN_OP_SECONDS: f64 = 1e-9;

/// The chosen node of every class that the extracted program uses.
#[derive(Debug)]
pub struct Extraction {
    /// Class (canonical id) → chosen node (children canonical).
    pub choice: FxHashMap<Id, TensorNode>,
    /// Estimated seconds of the extracted program, shared subterms counted once.
    pub dag_seconds: f64,
}

/// Marks a class without a chosen node in [`Selection`].
const NONE: usize = usize::MAX;

/// The chosen node index of every class, by class id ([`NONE`]: no finite cost).
type Selection = Vec<usize>;

fn at(id: Id) -> usize {
    usize::from(id)
}

struct Table<'m> {
    /// Per class id: its nodes (canonical children) and their own costs; empty for ids
    /// that are not canonical.
    nodes: Vec<Vec<(TensorNode, f64)>>,
    /// The canonical classes in increasing id order, so that ties are broken the same
    /// way on every run (dumps must be reproducible).
    classes: Vec<Id>,
    /// Per class id: the classes with a node reading it (canonical, each once).
    readers: Vec<Vec<Id>>,
    model: &'m dyn CostModel,
}

impl<'m> Table<'m> {
    fn new(egraph: &TensorGraph, model: &'m dyn CostModel) -> Table<'m> {
        let size = egraph.classes().map(|c| at(c.id) + 1).max().unwrap_or(0);
        let mut nodes = vec![Vec::new(); size];
        let mut readers = vec![Vec::new(); size];
        let mut classes = Vec::with_capacity(egraph.number_of_classes());
        for class in egraph.classes() {
            let ty = &class.data.ty;
            nodes[at(class.id)] = class
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
            let mut read_by: Vec<Id> = class.parents().map(|p| egraph.find(p)).collect();
            read_by.sort();
            read_by.dedup();
            readers[at(class.id)] = read_by;
            classes.push(class.id);
        }
        classes.sort();
        Table {
            nodes,
            classes,
            readers,
            model,
        }
    }

    /// Whether `reader` folds `node` (a child's chosen node) into its read.
    fn folds(&self, node: &TensorNode, reader: &TensorNode) -> bool {
        match (node.op(), reader.op()) {
            (Some(p), Some(c)) => self.model.folds_into(p, c),
            _ => false,
        }
    }

    /// Best tree cost and node index of every class (by id) that has a finite cost.
    fn tree_costs(&self) -> Vec<Option<(f64, usize)>> {
        let mut best: Vec<Option<(f64, usize)>> = vec![None; self.nodes.len()];
        loop {
            let mut changed = false;
            for &id in &self.classes {
                for (i, (n, own)) in self.nodes[at(id)].iter().enumerate() {
                    let mut total = *own;
                    let mut ok = true;
                    for c in &n.children {
                        match best[at(*c)] {
                            Some((cc, _)) => total += cc,
                            None => {
                                ok = false;
                                break;
                            }
                        }
                    }
                    if ok && best[at(id)].is_none_or(|(b, _)| total < b) {
                        best[at(id)] = Some((total, i));
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
        &self.nodes[at(id)][i]
    }

    /// The classes reachable from `roots` under `sel`, and their summed own costs
    /// (classes folded into all their readers count nothing).
    fn reachable(&self, roots: &[Id], sel: &Selection) -> (Vec<Id>, f64) {
        let mut seen = vec![false; self.nodes.len()];
        let mut materialised = vec![false; self.nodes.len()];
        for &r in roots {
            materialised[at(r)] = true;
        }
        let mut order = Vec::new();
        let mut stack: Vec<Id> = roots.to_vec();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[at(id)], true) {
                continue;
            }
            order.push(id);
            let (n, _) = self.node(id, sel[at(id)]);
            for &c in &n.children {
                if !self.folds(&self.node(c, sel[at(c)]).0, n) {
                    materialised[at(c)] = true;
                }
                stack.push(c);
            }
        }
        let cost = order
            .iter()
            .filter(|id| materialised[at(**id)])
            .map(|&id| self.node(id, sel[at(id)]).1)
            .sum();
        (order, cost)
    }

    /// The tree cost of class `c` as an operand of `reader`: without the best node's
    /// own cost when `reader` folds it into its read.
    fn operand_cost(&self, best: &[Option<(f64, usize)>], c: Id, reader: &TensorNode) -> f64 {
        let Some((tree, i)) = best[at(c)] else {
            return f64::INFINITY;
        };
        let (node, own) = self.node(c, i);
        if self.folds(node, reader) {
            tree - own
        } else {
            tree
        }
    }
}

/// Tree-cost extraction (each use pays for its whole subterm), as egg's `Extractor`
/// does; kept for comparison and as the starting point of [`extract`].
pub fn extract_tree(egraph: &TensorGraph, roots: &[Id], model: &dyn CostModel) -> Extraction {
    let table = Table::new(egraph, model);
    let sel = tree_selection(&table.tree_costs());
    finish(&table, roots, &sel)
}

fn tree_selection(best: &[Option<(f64, usize)>]) -> Selection {
    best.iter().map(|b| b.map_or(NONE, |(_, i)| i)).collect()
}

fn finish(table: &Table, roots: &[Id], sel: &Selection) -> Extraction {
    let (used, dag_seconds) = table.reachable(roots, sel);
    let choice = used
        .into_iter()
        .map(|id| (id, table.node(id, sel[at(id)]).0.clone()))
        .collect();
    Extraction {
        choice,
        dag_seconds,
    }
}

/// Seconds as an exact integer count of attoseconds, so that the program's cost is the
/// same whatever order switches are tried and undone in (float sums would drift).
fn attoseconds(seconds: f64) -> i128 {
    (seconds * 1e18).round() as i128
}

/// The program a selection computes from the roots, with use counts kept up to date as
/// classes switch nodes.
struct Program<'t, 'm> {
    table: &'t Table<'m>,
    sel: Selection,
    /// Per class: reads by the chosen nodes of used classes, plus one per root entry.
    /// A class is used (part of the program) when this is not zero.
    uses: Vec<usize>,
    /// The uses that need the class materialised: roots, and readers that do not fold
    /// its chosen node into their read.
    materialising: Vec<usize>,
    /// Summed own cost of the used, materialised classes.
    cost: i128,
    /// A topological order of the selection over every class with a chosen node:
    /// operands rank below their readers.
    rank: Vec<usize>,
}

impl<'t, 'm> Program<'t, 'm> {
    fn new(table: &'t Table<'m>, roots: &[Id], sel: Selection) -> Program<'t, 'm> {
        let size = table.nodes.len();
        let mut program = Program {
            table,
            sel,
            uses: vec![0; size],
            materialising: vec![0; size],
            cost: 0,
            rank: Vec::new(),
        };
        for &root in roots {
            program.change_uses(root, true, 1);
        }
        program.rank();
        program
    }

    /// Ranks every class with a chosen node (post-order of a depth-first walk).
    fn rank(&mut self) {
        let mut rank = vec![NONE; self.table.nodes.len()];
        let mut next = 0;
        for &start in &self.table.classes {
            if rank[at(start)] != NONE || self.sel[at(start)] == NONE {
                continue;
            }
            // (class, whether its operands are ranked already)
            let mut stack = vec![(start, false)];
            while let Some((id, operands_ranked)) = stack.pop() {
                if rank[at(id)] != NONE {
                    continue;
                }
                if operands_ranked {
                    rank[at(id)] = next;
                    next += 1;
                    continue;
                }
                stack.push((id, true));
                for &c in &self.chosen(id).0.children {
                    if rank[at(c)] == NONE {
                        stack.push((c, false));
                    }
                }
            }
        }
        self.rank = rank;
    }

    fn chosen(&self, id: Id) -> &'t (TensorNode, f64) {
        self.table.node(id, self.sel[at(id)])
    }

    fn is_used(&self, id: Id) -> bool {
        self.uses[at(id)] > 0
    }

    /// Whether some class of `operands` depends on `id` under the current selection.
    /// Only classes ranked above `id` can: ranks fall along every path.
    fn creates_cycle(&self, operands: &[Id], id: Id) -> bool {
        let floor = self.rank[at(id)];
        let mut seen = FxHashSet::default();
        let mut stack: Vec<Id> = operands
            .iter()
            .copied()
            .filter(|c| self.rank[at(*c)] >= floor)
            .collect();
        while let Some(c) = stack.pop() {
            if c == id {
                return true;
            }
            if !seen.insert(c) {
                continue;
            }
            let above = self.chosen(c).0.children.iter().copied();
            stack.extend(above.filter(|o| self.rank[at(*o)] >= floor));
        }
        false
    }

    /// What class `id` adds to the program's cost.
    fn contribution(&self, id: Id) -> i128 {
        if self.is_used(id) && self.materialising[at(id)] > 0 {
            attoseconds(self.chosen(id).1)
        } else {
            0
        }
    }

    /// Adds (`delta` 1) or removes (-1) one use of `id`, materialising it or not; a
    /// class that becomes used or unused adds or removes the uses of its operands.
    fn change_uses(&mut self, id: Id, materialise: bool, delta: isize) {
        let mut stack = vec![(id, materialise)];
        while let Some((id, materialise)) = stack.pop() {
            let before = self.contribution(id);
            let was_used = self.is_used(id);
            self.uses[at(id)] = self.uses[at(id)].wrapping_add_signed(delta);
            if materialise {
                let m = &mut self.materialising[at(id)];
                *m = m.wrapping_add_signed(delta);
            }
            self.cost += self.contribution(id) - before;
            if was_used != self.is_used(id) {
                let (reader, _) = self.chosen(id);
                for &c in &reader.children {
                    let folded = self.table.folds(&self.chosen(c).0, reader);
                    stack.push((c, !folded));
                }
            }
        }
    }

    /// Makes used class `id` compute node `i`. The node's operands must not depend on
    /// `id` under the current selection ([`Program::creates_cycle`]).
    fn switch(&mut self, id: Id, i: usize) {
        let (old, _) = self.chosen(id);
        for &c in &old.children {
            let folded = self.table.folds(&self.chosen(c).0, old);
            self.change_uses(c, !folded, -1);
        }
        // Readers that folded the old node may not fold the new one, and the other way
        // round.
        let (new, _) = self.table.node(id, i);
        let before = self.contribution(id);
        let mut materialising = self.materialising[at(id)];
        for &r in &self.table.readers[at(id)] {
            if !self.is_used(r) {
                continue;
            }
            let (reader, _) = self.chosen(r);
            let reads = reader.children.iter().filter(|&&c| c == id).count();
            if !self.table.folds(old, reader) {
                materialising -= reads;
            }
            if !self.table.folds(new, reader) {
                materialising += reads;
            }
        }
        self.materialising[at(id)] = materialising;
        self.sel[at(id)] = i;
        self.cost += self.contribution(id) - before;
        for &c in &new.children {
            let folded = self.table.folds(&self.chosen(c).0, new);
            self.change_uses(c, !folded, 1);
        }
    }
}

/// Extracts the program computing `roots` (canonical ids) with the lowest DAG cost the
/// greedy search finds. Every root must have a finite cost (true of any class built
/// from a graph).
pub fn extract(egraph: &TensorGraph, roots: &[Id], model: &dyn CostModel) -> Extraction {
    let table = Table::new(egraph, model);
    let best = table.tree_costs();
    let mut program = Program::new(&table, roots, tree_selection(&best));
    // A switch must save more than rounding could (one femtosecond).
    let tolerance = attoseconds(1e-15);
    for _round in 0..4 {
        let mut improved = false;
        let order: Vec<Id> = table
            .classes
            .iter()
            .copied()
            .filter(|&id| program.is_used(id))
            .collect();
        for id in order {
            if !program.is_used(id) {
                continue;
            }
            let chosen = program.sel[at(id)];
            // What switching away could save at most: this node and its operands'
            // subterms (if nothing else used them).
            let (now, own_now) = table.node(id, chosen);
            let could_free: f64 = own_now
                + now
                    .children
                    .iter()
                    .map(|c| best[at(*c)].map_or(0.0, |b| b.0))
                    .sum::<f64>();
            for (i, (n, own)) in table.nodes[at(id)].iter().enumerate() {
                if i == chosen || !n.children.iter().all(|c| best[at(*c)].is_some()) {
                    continue;
                }
                // Operands already computed cost nothing more; others their tree cost.
                let mut distinct: Vec<Id> = n.children.clone();
                distinct.sort();
                distinct.dedup();
                let marginal: f64 = own
                    + distinct
                        .iter()
                        .filter(|&&c| !program.is_used(c))
                        .map(|&c| table.operand_cost(&best, c, n))
                        .sum::<f64>();
                if marginal >= could_free || program.creates_cycle(&n.children, id) {
                    continue;
                }
                let current = program.cost;
                program.switch(id, i);
                if program.cost < current - tolerance {
                    improved = true;
                    // Operands ranked above `id` would break the order the cycle check
                    // relies on.
                    if n.children
                        .iter()
                        .any(|c| program.rank[at(*c)] > program.rank[at(id)])
                    {
                        program.rank();
                    }
                    break;
                }
                program.switch(id, chosen);
            }
        }
        if !improved {
            break;
        }
    }
    finish(&table, roots, &program.sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::{BinaryOp, UnaryOp};
    use crate::ir::text;
    use crate::ir::{DType, Op};
    use crate::optimize::cost::RooflineTarget;
    use crate::optimize::lang::OpKey;
    use crate::optimize::{convert, rules};
    use egg::Runner;

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

    /// The use counts and cost kept while switching agree with a walk of the whole
    /// program after every switch, kept or undone (folded transposes included).
    #[test]
    fn use_counts_agree_with_a_walk_of_the_program() {
        let src = "graph @t {
input %a: f32[8, 6]
input %b: f32[8, 6]
input %w: f32[6, 6]
%at = permute %a {perm = [1, 0]}
%p = matmul %at, %b
%q = matmul %a, %w
%r = matmul %b, %w
%s = add %q, %r
%e = exp %s
%bt = permute %b {perm = [1, 0]}
%u = matmul %bt, %a
%v = permute %u {perm = [1, 0]}
%o = add %p, %v
output %o, %e
}
";
        let g = text::parse(src).unwrap_or_else(|e| panic!("{e}")).graph;
        let mut eg = TensorGraph::default();
        let classes = convert::add_graph(&mut eg, &g);
        let eg = Runner::default()
            .with_egraph(eg)
            .with_iter_limit(4)
            .run(&rules::all_rules(false))
            .egraph;
        let roots = convert::roots(&eg, &g, &classes);
        let model = RooflineTarget::cpu();
        let table = Table::new(&eg, &model);
        let best = table.tree_costs();
        let mut program = Program::new(&table, &roots, tree_selection(&best));
        let agrees = |program: &Program| {
            let (mut walked, seconds) = table.reachable(&roots, &program.sel);
            walked.sort();
            let counted: Vec<Id> = (table.classes.iter().copied())
                .filter(|&c| program.is_used(c))
                .collect();
            assert_eq!(counted, walked);
            assert!((program.cost as f64 / 1e18 - seconds).abs() < 1e-15);
        };
        agrees(&program);
        let mut tried = 0;
        for &id in &table.classes {
            for i in 0..table.nodes[at(id)].len() {
                let chosen = program.sel[at(id)];
                let operands = &table.node(id, i).0.children;
                if !program.is_used(id)
                    || i == chosen
                    || operands.iter().any(|c| best[at(*c)].is_none())
                    || program.creates_cycle(operands, id)
                {
                    continue;
                }
                program.switch(id, i);
                agrees(&program);
                tried += 1;
                if tried % 2 == 0 {
                    program.switch(id, chosen);
                    agrees(&program);
                } else {
                    program.rank();
                }
            }
        }
        assert!(tried >= 4, "only {tried} switches to try");
    }
}
