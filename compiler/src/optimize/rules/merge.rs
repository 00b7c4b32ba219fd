//! Merging independent products that share an operand into one wider product, as
//! Tensat does: `x @ w1` and `x @ w2` become slices of `x @ concat(w1, w2)` (fewer,
//! larger kernels, for instance Q/K/V projections). The second product of a pair is
//! found among the readers of the first one's left operand: the equivalent egg
//! multi-pattern `?p = (matmul ?x ?w1), ?q = (matmul ?x ?w2)` scans every class for
//! `?q` once per match of `?p`, which is quadratic in the number of products (most of
//! the compile time of a deep model). The extractor keeps the merged form only where
//! the target's cost model says it pays (launch cost saved against the copy of the
//! weights).
//!
//! Invariant: bit-for-bit equal, since each output column is the same dot product.
//! Only operands that are graph leaves (parameters, inputs) are merged, so merges do
//! not cascade through previously merged products.

use super::super::lang::Kind;
use super::super::{TensorAnalysis, TensorGraph, TensorNode};
use super::{add_build, ty, union_same_type, Build};
use crate::ir::Op;
use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

fn var(name: &str) -> Var {
    name.parse()
        .unwrap_or_else(|e| panic!("internal: variable {name}: {e:?}"))
}

fn is_leaf(egraph: &TensorGraph, id: Id) -> bool {
    egraph[id]
        .nodes
        .iter()
        .any(|n| matches!(n.key.kind(), Kind::Leaf { .. }))
}

struct MergeSharedLeft;

impl Applier<TensorNode, TensorAnalysis> for MergeSharedLeft {
    fn apply_matches(
        &self,
        egraph: &mut TensorGraph,
        matches: &[SearchMatches<TensorNode>],
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for m in matches {
            for subst in &m.substs {
                changed.extend(merge_one(egraph, subst));
            }
        }
        changed
    }

    fn apply_one(
        &self,
        egraph: &mut TensorGraph,
        _eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<TensorNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        merge_one(egraph, subst)
    }
}

fn merge_one(egraph: &mut TensorGraph, subst: &Subst) -> Vec<Id> {
    let get = |v: &str| subst.get(var(v)).copied();
    let (Some(p), Some(q), Some(w1), Some(w2)) = (get("?p"), get("?q"), get("?w1"), get("?w2"))
    else {
        return vec![];
    };
    let (w1, w2) = (egraph.find(w1), egraph.find(w2));
    // Each unordered pair once, distinct operands only.
    if w1 >= w2 || !is_leaf(egraph, w1) || !is_leaf(egraph, w2) {
        return vec![];
    }
    let (t1, t2) = (ty(egraph, w1).clone(), ty(egraph, w2).clone());
    let r = t1.rank();
    if t2.rank() != r || t1.dims()[..r - 1] != t2.dims()[..r - 1] {
        return vec![];
    }
    let (Some(n1), Some(n2)) = (t1.dims()[r - 1].as_static(), t2.dims()[r - 1].as_static()) else {
        return vec![];
    };
    let Some(x) = get("?x") else { return vec![] };
    let wide = Build::op(
        Op::MatMul,
        vec![
            Build::Class(x),
            Build::op(
                Op::Concat { axis: r - 1 },
                vec![Build::Class(w1), Build::Class(w2)],
            ),
        ],
    );
    let Some(wide) = add_build(egraph, &wide) else {
        return vec![];
    };
    let slice = |start: u64, end: u64| {
        Build::op(
            Op::Slice {
                axis: r - 1,
                start,
                end,
                step: 1,
            },
            vec![Build::Class(wide)],
        )
    };
    let mut changed = Vec::new();
    for (target, part) in [(p, slice(0, n1)), (q, slice(n1, n1 + n2))] {
        if let Some(id) = add_build(egraph, &part) {
            if union_same_type(egraph, target, id) {
                changed.push(target);
            }
        }
    }
    changed
}

/// Finds pairs of products `?p = x @ w1`, `?q = x @ w2` with one left operand `x` and
/// distinct leaf right operands `w1 < w2` (each unordered pair once), from `?p`: the
/// other products are among the parents of `x`, so a search costs the number of `x`'s
/// readers, not the size of the e-graph.
struct ProductsSharingLeft;

/// The left and right operands (canonical) of each product node of `class` whose right
/// operand is a leaf.
fn leaf_products(egraph: &TensorGraph, class: Id) -> impl Iterator<Item = (Id, Id)> + '_ {
    egraph[class]
        .nodes
        .iter()
        .filter(|n| n.op() == Some(&Op::MatMul))
        .map(|n| (egraph.find(n.children[0]), egraph.find(n.children[1])))
        .filter(|&(_, w)| is_leaf(egraph, w))
}

impl Searcher<TensorNode, TensorAnalysis> for ProductsSharingLeft {
    fn search_eclass_with_limit(
        &self,
        egraph: &TensorGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, TensorNode>> {
        let p = egraph.find(eclass);
        let mut substs = Vec::new();
        for (x, w1) in leaf_products(egraph, p) {
            let mut readers: Vec<Id> = egraph[x].parents().map(|r| egraph.find(r)).collect();
            readers.sort();
            readers.dedup();
            for q in readers {
                for (x2, w2) in leaf_products(egraph, q) {
                    if x2 != x || w1 >= w2 {
                        continue;
                    }
                    if substs.len() == limit {
                        break;
                    }
                    let mut subst = Subst::with_capacity(5);
                    for (name, id) in [("?p", p), ("?x", x), ("?w1", w1), ("?q", q), ("?w2", w2)] {
                        subst.insert(var(name), id);
                    }
                    substs.push(subst);
                }
            }
        }
        (!substs.is_empty()).then_some(SearchMatches {
            eclass: p,
            substs,
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        ["?p", "?x", "?w1", "?q", "?w2"].map(var).to_vec()
    }
}

/// The rules.
pub fn rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    vec![Rewrite::new(
        "merge/matmuls-sharing-left-operand",
        ProductsSharingLeft,
        MergeSharedLeft,
    )
    .unwrap_or_else(|e| panic!("internal: merge rule: {e}"))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::text;
    use crate::optimize::convert;
    use egg::MultiPattern;

    /// The pairs, as (p, x, w1, q, w2), sorted.
    fn pairs(matches: Vec<SearchMatches<TensorNode>>) -> Vec<[Id; 5]> {
        let mut out: Vec<[Id; 5]> = matches
            .iter()
            .flat_map(|m| &m.substs)
            .map(|s| ["?p", "?x", "?w1", "?q", "?w2"].map(|v| s[var(v)]))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The readers search finds exactly the pairs the multi-pattern it replaces finds
    /// (restricted to what the applier merges: leaf operands, each pair once).
    #[test]
    fn readers_search_finds_the_multi_pattern_pairs() {
        let src = "graph @t {
input %x: f32[4, 8]
input %y: f32[4, 8]
param %w1: f32[8, 3] = zeros
param %w2: f32[8, 5] = zeros
param %w3: f32[8, 3] = zeros
%a = matmul %x, %w1
%b = matmul %x, %w2
%c = matmul %x, %w3
%d = matmul %y, %w1
%xt = permute %x {perm = [1, 0]}
%e = matmul %xt, %a
%f = exp %d
output %b, %c, %e, %f
}
";
        let g = text::parse(src).unwrap_or_else(|e| panic!("{e}")).graph;
        let mut eg = TensorGraph::default();
        convert::add_graph(&mut eg, &g);
        eg.rebuild();
        let pattern: MultiPattern<TensorNode> = "?p = (matmul ?x ?w1), ?q = (matmul ?x ?w2)"
            .parse()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let expected: Vec<[Id; 5]> = pairs(pattern.search(&eg))
            .into_iter()
            .filter(|[_, _, w1, _, w2]| w1 < w2 && is_leaf(&eg, *w1) && is_leaf(&eg, *w2))
            .collect();
        assert_eq!(expected.len(), 3, "x with w1, w2, w3: three pairs");
        assert_eq!(pairs(ProductsSharingLeft.search(&eg)), expected);
    }
}
