//! Rewrite rules, grouped by topic; each file states the invariant its rules keep.
//!
//! Most rules are *class rules*: a function that looks at one e-class and returns
//! expressions equal to it (or to a class next to it). One function serves both as the
//! searcher (does anything apply here?) and the applier (build and union), so a rule's
//! condition and its result are written once, next to each other, in plain Rust. Rules
//! that need several independent nodes at once use egg multi-patterns (see [`merge`]).
//!
//! No rule states bare commutativity or associativity of `add`/`mul`: such rules grow
//! the e-graph without bound. Rules are directed, and the runner's `BackoffScheduler`
//! bans rules that match too often.

pub mod algebra;
pub mod composite;
pub mod layout;
pub mod matmul;
pub mod merge;

use super::analysis::{node_type, Facts, TensorGraph};
use super::lang::{OpKey, TensorNode};
use super::TensorAnalysis;
use crate::ir::{Op, TensorType};
use egg::{Applier, EClass, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use std::sync::Arc;

/// An expression to add to the e-graph: an existing class, or an op over expressions.
#[derive(Clone, Debug)]
pub enum Build {
    /// An existing e-class.
    Class(Id),
    /// A new node.
    Node(OpKey, Vec<Build>),
}

impl Build {
    /// `op` (whose type is derived) over `children`.
    pub fn op(op: Op, children: Vec<Build>) -> Build {
        Build::Node(OpKey::op(op, None), children)
    }

    /// `op` with declared result type `ty` over `children`.
    pub fn typed(op: Op, ty: TensorType, children: Vec<Build>) -> Build {
        Build::Node(OpKey::op(op, Some(ty)), children)
    }

    /// A splat constant.
    pub fn splat(value: f64, ty: TensorType) -> Build {
        Build::Node(OpKey::splat(value, ty), vec![])
    }
}

/// Adds `build` to `egraph`; `None` if some node would be ill-typed (then nothing of
/// the ill-typed node or above it is added).
pub fn add_build(egraph: &mut TensorGraph, build: &Build) -> Option<Id> {
    match build {
        Build::Class(id) => Some(egraph.find(*id)),
        Build::Node(key, children) => {
            let ids = children
                .iter()
                .map(|c| add_build(egraph, c))
                .collect::<Option<Vec<Id>>>()?;
            let node = TensorNode::new(key.clone(), ids);
            node_type(egraph, &node).ok()?;
            Some(egraph.add(node))
        }
    }
}

/// Unions `a` and `b` if they have one type (a rule that claims otherwise is wrong, and
/// is ignored rather than trusted); returns whether the e-graph changed.
pub fn union_same_type(egraph: &mut TensorGraph, a: Id, b: Id) -> bool {
    egraph[a].data.ty == egraph[b].data.ty && egraph.union(a, b)
}

/// A rule's search-and-build function: for class `id`, pairs `(class, expression)`
/// whose members are equal.
pub type Finder = Arc<dyn Fn(&TensorGraph, &TensorClass) -> Vec<(Id, Build)> + Send + Sync>;

/// An e-class of the tensor e-graph.
pub type TensorClass = EClass<TensorNode, Facts>;

/// A rule's finder, and the ops one of whose nodes every class it matches holds (`None`:
/// any class may match).
struct ClassRule(Finder, Option<&'static [&'static str]>);

impl ClassRule {
    fn search_class(
        &self,
        egraph: &TensorGraph,
        class: &TensorClass,
        limit: usize,
    ) -> Option<SearchMatches<'static, TensorNode>> {
        if limit == 0 || (self.0)(egraph, class).is_empty() {
            return None;
        }
        Some(SearchMatches {
            eclass: class.id,
            substs: vec![Subst::default()],
            ast: None,
        })
    }
}

impl Searcher<TensorNode, TensorAnalysis> for ClassRule {
    fn search_eclass_with_limit(
        &self,
        egraph: &TensorGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, TensorNode>> {
        self.search_class(egraph, &egraph[eclass], limit)
    }

    // A rule about one op visits the classes holding that op (the analysis indexes
    // them); others walk every class in storage order and hand each to the finder as
    // is (egg's default looks every class up by id again, a cache miss per class per
    // rule, a large share of search time in deep models).
    fn search_with_limit(
        &self,
        egraph: &TensorGraph,
        mut limit: usize,
    ) -> Vec<SearchMatches<'_, TensorNode>> {
        let mut found = Vec::new();
        let mut visit = |class: &TensorClass| {
            if limit > 0 {
                if let Some(m) = self.search_class(egraph, class, limit) {
                    limit -= 1;
                    found.push(m);
                }
            }
        };
        match self.1 {
            Some(ops) => TensorAnalysis::classes_with(egraph, ops)
                .into_iter()
                .for_each(|id| visit(&egraph[id])),
            None => egraph.classes().for_each(visit),
        }
        found
    }

    fn vars(&self) -> Vec<Var> {
        vec![]
    }
}

impl Applier<TensorNode, TensorAnalysis> for ClassRule {
    fn apply_one(
        &self,
        egraph: &mut TensorGraph,
        eclass: Id,
        _subst: &Subst,
        _searcher_ast: Option<&PatternAst<TensorNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let found = (self.0)(egraph, &egraph[eclass]);
        let mut changed = Vec::new();
        for (target, build) in found {
            if let Some(id) = add_build(egraph, &build) {
                if union_same_type(egraph, target, id) {
                    changed.push(target);
                }
            }
        }
        changed
    }
}

/// A rule named `name` from a finder.
pub fn class_rule(
    name: &str,
    find: impl Fn(&TensorGraph, &TensorClass) -> Vec<(Id, Build)> + Send + Sync + 'static,
) -> Rewrite<TensorNode, TensorAnalysis> {
    rule(name, None, Arc::new(find))
}

fn rule(
    name: &str,
    ops: Option<&'static [&'static str]>,
    finder: Finder,
) -> Rewrite<TensorNode, TensorAnalysis> {
    Rewrite::new(name, ClassRule(finder.clone(), ops), ClassRule(finder, ops))
        .unwrap_or_else(|e| panic!("internal: rule {name}: {e}"))
}

/// A class rule that looks at each node of the class in turn: `find(egraph, node)`
/// gives expressions equal to the class. It matches only at nodes whose op is one of
/// `ops` (by [`Op::name`]), so only classes holding such a node are searched.
pub fn node_rule(
    name: &str,
    ops: &'static [&'static str],
    find: impl Fn(&TensorGraph, &TensorNode) -> Option<Build> + Send + Sync + 'static,
) -> Rewrite<TensorNode, TensorAnalysis> {
    let finder: Finder = Arc::new(move |egraph: &TensorGraph, class: &TensorClass| {
        // `find` checks each node's op itself; `ops` only narrows the classes searched.
        class
            .nodes
            .iter()
            .filter_map(|n| find(egraph, n))
            .map(|b| (class.id, b))
            .collect()
    });
    rule(name, Some(ops), finder)
}

/// The type of class `id`.
pub fn ty(egraph: &TensorGraph, id: Id) -> &TensorType {
    &egraph[id].data.ty
}

/// The splat value of class `id`, if known.
pub fn constant(egraph: &TensorGraph, id: Id) -> Option<f64> {
    egraph[id].data.constant
}

/// The nodes of class `id` whose op satisfies `pick`.
pub fn nodes_where<'a>(
    egraph: &'a TensorGraph,
    id: Id,
    pick: impl Fn(&Op) -> bool + 'a,
) -> impl Iterator<Item = &'a TensorNode> + 'a {
    egraph[id]
        .nodes
        .iter()
        .filter(move |n| n.op().is_some_and(&pick))
}

/// Every rule, by topic. `assume_finite` adds the rules that hold only for finite
/// values (`x - x = 0`, `x * 0 = 0`).
pub fn all_rules(assume_finite: bool) -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    let mut rules = algebra::rules();
    if assume_finite {
        rules.extend(algebra::finite_rules());
    }
    rules.extend(layout::rules());
    rules.extend(matmul::rules());
    rules.extend(merge::rules());
    rules.extend(composite::rules());
    rules
}
