//! Recognising composite ops (`relu`, `sigmoid`, `silu`, `gelu`, `softmax`,
//! `log_softmax`, `layer_norm`, `rms_norm`, `cross_entropy`) in decomposed graphs, so
//! that later stages can run them as one fused kernel. The gradient composites
//! (`softmax_grad`, ...) are not searched for: autodiff emits them directly, and only
//! graphs decomposed on purpose would need them found again.
//!
//! The patterns are not written by hand: for a class of type `T`, each candidate
//! composite is decomposed (by [`Composite::decompose`], the definition of its
//! meaning) on operands of the matching types, and that template is matched against
//! the e-graph with its operands as pattern variables. Node keys include attributes,
//! constants and declared types, so a match is exactly the definition.
//!
//! Most candidates' operand types follow from the result type. `cross_entropy` gives a
//! scalar, so its logits type is read off the e-graph instead: the class of the
//! `reduce_sum` under the `reduce_mean` under the final `neg` (the shape of its
//! decomposition); the labels are integers of the logits' shape without the class axis.
//! `attention` likewise: its operand types, its scale (a splat constant) and whether it
//! is causal are read off the product of probabilities and values at its root.
//!
//! Invariant: bit-for-bit equal, since a composite means its decomposition (the
//! interpreter runs exactly that).

use super::super::lang::OpKey;
use super::super::{TensorAnalysis, TensorGraph, TensorNode};
use super::{class_rule, constant, nodes_where, ty, Build, TensorClass};
use crate::ir::ops::{BinaryOp, Composite, ReduceOp, UnaryOp};
use crate::ir::{Builder, DType, Def, Graph, Op, Shape, TensorType, ValueId};
use egg::{Id, Rewrite, Symbol};
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// A composite's decomposition on typed placeholder operands.
struct Template {
    composite: Composite,
    graph: Graph,
    root: ValueId,
    /// The composite node's key (with the operand placeholders as its children).
    key: OpKey,
    /// Key of each value of `graph` that is a node (None for the placeholders).
    keys: Vec<Option<OpKey>>,
}

/// The composites (with operand types) that a class of type `t` might be an application
/// of, whatever the e-graph holds: the elementwise ones, and those over the last axis.
fn candidates_by_type(t: &TensorType) -> [Vec<(Composite, Vec<TensorType>)>; 2] {
    if !t.dtype.is_float() || t.rank() == 0 {
        return [vec![], vec![]];
    }
    let elementwise = vec![
        (Composite::Relu, vec![t.clone()]),
        (Composite::Sigmoid, vec![t.clone()]),
        (Composite::Silu, vec![t.clone()]),
        (Composite::Gelu { tanh: false }, vec![t.clone()]),
        (Composite::Gelu { tanh: true }, vec![t.clone()]),
    ];
    let mut last_axis = Vec::new();
    if let Some(last) = t.dims().last() {
        let axis = t.rank() - 1;
        last_axis.push((Composite::Softmax { axis }, vec![t.clone()]));
        last_axis.push((Composite::LogSoftmax { axis }, vec![t.clone()]));
        let vector = TensorType::new(t.dtype, Shape(vec![last.clone()]));
        for eps in [1e-5, 1e-6] {
            last_axis.push((
                Composite::LayerNorm { eps },
                vec![t.clone(), vector.clone(), vector.clone()],
            ));
            last_axis.push((Composite::RmsNorm { eps }, vec![t.clone(), vector.clone()]));
        }
    }
    [elementwise, last_axis]
}

/// The composites whose operand types (and attributes) are read off the e-graph below
/// class `class`: `attention` and `cross_entropy`.
fn candidates_by_structure(eg: &TensorGraph, class: Id) -> Vec<(Composite, Vec<TensorType>)> {
    let t = ty(eg, class);
    if !t.dtype.is_float() {
        vec![]
    } else if t.rank() == 0 {
        cross_entropy_candidates(eg, class)
    } else if t.rank() >= 2 {
        attention_candidates(eg, class)
    } else {
        vec![]
    }
}

/// The class reached from `class` through a node whose op satisfies `pick` (first child).
fn below(eg: &TensorGraph, class: Id, pick: impl Fn(&Op) -> bool) -> Vec<Id> {
    nodes_where(eg, class, pick)
        .map(|n| n.children[0])
        .collect()
}

/// `cross_entropy` candidates for a scalar class: `neg(reduce_mean(reduce_sum(s)))`
/// gives the logits type as the type of `s`; labels may be either integer type.
fn cross_entropy_candidates(eg: &TensorGraph, class: Id) -> Vec<(Composite, Vec<TensorType>)> {
    let reduce = |op: ReduceOp| move |o: &Op| matches!(o, Op::Reduce { op: r, .. } if *r == op);
    let mut out = Vec::new();
    for mean in below(eg, class, |o| *o == Op::Unary(UnaryOp::Neg)) {
        for sum in below(eg, mean, reduce(ReduceOp::Mean)) {
            for picked in below(eg, sum, reduce(ReduceOp::Sum)) {
                let logits = ty(eg, picked).clone();
                let Some((_, rows)) = logits.dims().split_last() else {
                    continue;
                };
                for label in [DType::I32, DType::I64] {
                    let labels = TensorType::new(label, Shape(rows.to_vec()));
                    let c = (Composite::CrossEntropy, vec![logits.clone(), labels]);
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
    }
    out
}

/// The first child of each node of `class` with op `op`, and the node's other children.
fn operands_of(eg: &TensorGraph, class: Id, op: Op) -> Vec<&[Id]> {
    nodes_where(eg, class, move |o| *o == op)
        .map(|n| n.children.as_slice())
        .collect()
}

/// `attention` candidates: the class is `matmul(softmax(scores), v)` where `scores` is
/// `matmul(q, transpose(k)) * scale`, possibly masked by a `select` (causal).
fn attention_candidates(eg: &TensorGraph, class: Id) -> Vec<(Composite, Vec<TensorType>)> {
    let mut out = Vec::new();
    for pv in operands_of(eg, class, Op::MatMul) {
        // softmax(s) = e / broadcast(sum(e)), e = exp(s - broadcast(max(s))).
        let divs = operands_of(eg, pv[0], Op::Binary(BinaryOp::Div));
        let exps = divs
            .iter()
            .flat_map(|d| below(eg, d[0], |o| *o == Op::Unary(UnaryOp::Exp)));
        let subs = exps.flat_map(|e| operands_of(eg, e, Op::Binary(BinaryOp::Sub)));
        for scores in subs.map(|s| s[0]).collect::<Vec<_>>() {
            let masked = operands_of(eg, scores, Op::Select);
            let scaled = masked.iter().map(|m| (true, m[1])).chain([(false, scores)]);
            for (causal, scaled) in scaled.collect::<Vec<_>>() {
                for qk in operands_of(eg, scaled, Op::Binary(BinaryOp::Mul)) {
                    let Some(scale) = constant(eg, qk[1]) else {
                        continue;
                    };
                    for q_kt in operands_of(eg, qk[0], Op::MatMul) {
                        for k in below(eg, q_kt[1], |o| matches!(o, Op::Permute { .. })) {
                            let types = vec![
                                ty(eg, q_kt[0]).clone(),
                                ty(eg, k).clone(),
                                ty(eg, pv[1]).clone(),
                            ];
                            let c = (Composite::Attention { causal, scale }, types);
                            if !out.contains(&c) {
                                out.push(c);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn template(composite: Composite, operands: &[TensorType]) -> Option<Template> {
    let mut b = Builder::new("template");
    let ids: Vec<ValueId> = operands
        .iter()
        .enumerate()
        .map(|(i, t)| b.input(&format!("x{i}"), t.clone()))
        .collect::<Result<_, _>>()
        .ok()?;
    let types: Vec<&TensorType> = operands.iter().collect();
    Op::Composite(composite.clone()).infer(&types, None).ok()?;
    let root = composite.decompose(&mut b, &ids);
    let graph = b.finish();
    let keys = graph
        .values
        .iter()
        .map(|v| match &v.def {
            Def::Node { op, .. } => Some(OpKey::op(op.clone(), Some(v.ty.clone()))),
            _ => None,
        })
        .collect();
    Some(Template {
        key: OpKey::op(Op::Composite(composite.clone()), None),
        composite,
        graph,
        root,
        keys,
    })
}

/// Matches template value `v` against class `class`, extending `binds` (operand
/// placeholder index → class). Backtracks over the class's nodes.
fn matches(
    eg: &TensorGraph,
    t: &Template,
    v: ValueId,
    class: Id,
    binds: &mut Vec<Option<Id>>,
) -> bool {
    let class = eg.find(class);
    let value = t.graph.value(v);
    match &value.def {
        Def::Node { operands, .. } => {
            let Some(key) = &t.keys[v.index()] else {
                return false;
            };
            for n in &eg[class].nodes {
                if n.key != *key || n.children.len() != operands.len() {
                    continue;
                }
                let saved = binds.clone();
                if operands
                    .iter()
                    .zip(&n.children)
                    .all(|(&o, &c)| matches(eg, t, o, c, binds))
                {
                    return true;
                }
                *binds = saved;
            }
            false
        }
        _ => {
            let slot = v.index();
            if &eg[class].data.ty != t.graph.ty(v) {
                return false;
            }
            match binds[slot] {
                Some(bound) => eg.find(bound) == class,
                None => {
                    binds[slot] = Some(class);
                    true
                }
            }
        }
    }
}

/// The templates built so far. Deep models repeat a few types in every layer, so a
/// class's templates are found with one lookup of its type instead of being listed and
/// looked up one by one for every class in every iteration (most of the recogniser's
/// time, before).
#[derive(Default)]
struct Templates {
    /// By result type: the elementwise templates, then those over the last axis.
    by_type: Mutex<FxHashMap<TensorType, TypeTemplates>>,
    /// By composite (its debug form) and operand types, for the structural candidates.
    by_operands: Mutex<FxHashMap<(String, Vec<TensorType>), StructuralTemplate>>,
}

/// The templates of one result type.
struct ForType {
    /// The elementwise templates.
    elementwise: Vec<Arc<Template>>,
    /// The templates over the last axis.
    last_axis: Vec<Arc<Template>>,
    /// The root key of each of them: a class with none of these keys among its nodes
    /// matches none of them, which rules out nearly every class at once.
    roots: Vec<Symbol>,
}

type TypeTemplates = Arc<ForType>;

/// A structural candidate's template (`None`: its operand types do not type-check).
type StructuralTemplate = Option<Arc<Template>>;

impl Templates {
    fn for_type(&self, t: &TensorType) -> TypeTemplates {
        let mut map = self.by_type.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(t) {
            return found.clone();
        }
        let [elementwise, last_axis] = candidates_by_type(t).map(|list| {
            list.into_iter()
                .filter_map(|(c, operands)| template(c, &operands).map(Arc::new))
                .collect::<Vec<_>>()
        });
        let mut roots: Vec<Symbol> = elementwise
            .iter()
            .chain(&last_axis)
            .filter_map(|tmpl| tmpl.keys[tmpl.root.index()].as_ref())
            .map(OpKey::text)
            .collect();
        roots.sort();
        roots.dedup();
        let found = Arc::new(ForType {
            elementwise,
            last_axis,
            roots,
        });
        map.insert(t.clone(), found.clone());
        found
    }

    fn for_operands(
        &self,
        composite: Composite,
        operands: Vec<TensorType>,
    ) -> Option<Arc<Template>> {
        let key = (format!("{composite:?}"), operands.clone());
        let mut map = self.by_operands.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| template(composite, &operands).map(Arc::new))
            .clone()
    }
}

/// The composite node equal to class `class` by template `tmpl`, if it matches and the
/// class has no such node yet.
fn recognise_one(eg: &TensorGraph, class: &TensorClass, tmpl: &Template) -> Option<Build> {
    let root_key = tmpl.keys[tmpl.root.index()].as_ref();
    let nodes = &class.nodes;
    if nodes.iter().any(|n| n.key == tmpl.key) || !nodes.iter().any(|n| Some(&n.key) == root_key) {
        return None;
    }
    let n_operands = tmpl.graph.inputs().count();
    let mut binds = vec![None; tmpl.graph.values.len()];
    if !matches(eg, tmpl, tmpl.root, class.id, &mut binds) {
        return None;
    }
    let children = (0..n_operands)
        .map(|i| binds[i].map(Build::Class))
        .collect::<Option<Vec<Build>>>()?;
    Some(Build::op(Op::Composite(tmpl.composite.clone()), children))
}

fn recognise(eg: &TensorGraph, class: &TensorClass, templates: &Templates) -> Vec<(Id, Build)> {
    // Cheap filter: every template's root is an op node with a declared-type key.
    if class.nodes.iter().all(|n| n.op().is_none()) {
        return vec![];
    }
    let for_type = templates.for_type(&class.data.ty);
    let by_type: [&[Arc<Template>]; 2] = if class
        .nodes
        .iter()
        .any(|n| for_type.roots.contains(&n.key.text()))
    {
        [&for_type.elementwise, &for_type.last_axis]
    } else {
        [&[], &[]]
    };
    let [elementwise, last_axis] = by_type;
    let structural: Vec<Arc<Template>> = candidates_by_structure(eg, class.id)
        .into_iter()
        .filter_map(|(c, operands)| templates.for_operands(c, operands))
        .collect();
    // In the order the candidates were always tried (attention between the two).
    elementwise
        .iter()
        .chain(&structural)
        .chain(last_axis)
        .filter_map(|tmpl| recognise_one(eg, class, tmpl))
        .map(|build| (class.id, build))
        .collect()
}

/// The rules.
pub fn rules() -> Vec<Rewrite<TensorNode, TensorAnalysis>> {
    let templates = Arc::new(Templates::default());
    vec![class_rule("composite/recognise", move |eg, class| {
        recognise(eg, class, &templates)
    })]
}
