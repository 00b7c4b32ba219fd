//! The drawable view of a graph: which values appear as nodes, what each node says, and
//! which operand edges connect them. Both the DOT writer and the SVG renderer draw a
//! [`View`], so the two pictures always show the same nodes and edges.

use smelt_compiler::ir::{text, Def, Graph, Op, ValueId};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// What kind of value a node is; each kind is drawn differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Fed by the caller on every run.
    Input,
    /// A trainable parameter.
    Param,
    /// Persistent, untrained state (optimiser moments).
    State,
    /// A primitive op.
    Primitive,
    /// A composite op (defined by its decomposition into primitives).
    Composite,
}

impl NodeKind {
    /// The word shown for the kind in legends and DOT comments.
    pub fn label(self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Param => "param",
            NodeKind::State => "state",
            NodeKind::Primitive => "primitive op",
            NodeKind::Composite => "composite op",
        }
    }
}

/// One node of the view: a value of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewNode {
    /// The value it shows.
    pub id: ValueId,
    /// The value's name, without `%`.
    pub name: String,
    /// How it is drawn.
    pub kind: NodeKind,
    /// The first line of the label: the op's name, or the kind for inputs, params and state.
    pub head: String,
    /// The value's type (`f32[B, 784]`).
    pub ty: String,
    /// True if the graph returns this value.
    pub is_output: bool,
    /// The parameter or state values this value becomes after a step (`update %w = %this`).
    pub updates: Vec<String>,
    /// The focused value of a [`Focus`] view.
    pub is_focus: bool,
    /// Operands and users that exist in the graph but are cut off by a [`Focus`].
    pub hidden_neighbours: usize,
    /// The value's full line in the text form (attributes shortened), for tooltips.
    pub detail: String,
}

/// A drawable graph: nodes in definition order (so every edge points forward) and the
/// operand edges between them.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// A title: the graph's name, and the focus when there is one.
    pub title: String,
    /// The nodes, in the graph's definition order.
    pub nodes: Vec<ViewNode>,
    /// `(operand, user)` pairs of indices into `nodes`, each pair once, sorted by user
    /// and then by the operand's position among the user's operands.
    pub edges: Vec<(usize, usize)>,
}

/// Draw only the neighbourhood of one value.
#[derive(Clone, Debug, PartialEq)]
pub struct Focus {
    /// The value's name (with or without a leading `%`).
    pub name: String,
    /// How many edges to follow up (towards operands) and down (towards users).
    pub depth: usize,
}

/// Why a view cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ViewError {
    /// The focus names no value of the graph.
    #[error("--focus: graph @{graph} has no value named %{name}{hint}")]
    UnknownValue {
        /// The graph's name.
        graph: String,
        /// The name asked for.
        name: String,
        /// ` (did you mean %x?)` when a similar name exists, or empty.
        hint: String,
    },
}

/// Longest attribute text kept in a tooltip: constants can hold whole tensors.
const MAX_DETAIL_CHARS: usize = 160;

impl View {
    /// The view of the whole graph.
    pub fn of(graph: &Graph) -> View {
        let all: BTreeSet<ValueId> = graph.ids().collect();
        View::build(graph, &all, None, graph.name.clone())
    }

    /// The view of `focus.name` and every value within `focus.depth` operand edges up
    /// or user edges down from it.
    pub fn focused(graph: &Graph, focus: &Focus) -> Result<View, ViewError> {
        let name = focus.name.strip_prefix('%').unwrap_or(&focus.name);
        let centre = graph.find(name).ok_or_else(|| ViewError::UnknownValue {
            graph: graph.name.clone(),
            name: name.to_string(),
            hint: similar_name(graph, name)
                .map(|n| format!(" (did you mean %{n}?)"))
                .unwrap_or_default(),
        })?;
        let users = users_of(graph);
        let mut kept = BTreeSet::from([centre]);
        // Walk up and down separately: the neighbourhood is ancestors and descendants
        // within the depth, not siblings reached through a shared operand.
        for upward in [true, false] {
            let mut queue = VecDeque::from([(centre, 0usize)]);
            let mut seen = BTreeSet::from([centre]);
            while let Some((id, dist)) = queue.pop_front() {
                if dist == focus.depth {
                    continue;
                }
                let next: Vec<ValueId> = if upward {
                    operands(graph, id).to_vec()
                } else {
                    users[id.index()].clone()
                };
                for n in next {
                    if seen.insert(n) {
                        kept.insert(n);
                        queue.push_back((n, dist + 1));
                    }
                }
            }
        }
        let title = format!(
            "{}: %{} within {} edge{}",
            graph.name,
            name,
            focus.depth,
            if focus.depth == 1 { "" } else { "s" }
        );
        Ok(View::build(graph, &kept, Some(centre), title))
    }

    fn build(
        graph: &Graph,
        kept: &BTreeSet<ValueId>,
        focus: Option<ValueId>,
        title: String,
    ) -> View {
        let index: HashMap<ValueId, usize> =
            kept.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let users = users_of(graph);
        let mut updates: HashMap<ValueId, Vec<String>> = HashMap::new();
        for &(target, value) in &graph.updates {
            updates
                .entry(value)
                .or_default()
                .push(graph.value(target).name.clone());
        }
        let mut edges = Vec::new();
        let nodes = kept
            .iter()
            .map(|&id| {
                let value = graph.value(id);
                let (kind, head) = match &value.def {
                    Def::Input => (NodeKind::Input, "input".to_string()),
                    Def::Param(_) => (NodeKind::Param, "param".to_string()),
                    Def::State(_) => (NodeKind::State, "state".to_string()),
                    Def::Node { op, .. } => {
                        let kind = if matches!(op, Op::Composite(_)) {
                            NodeKind::Composite
                        } else {
                            NodeKind::Primitive
                        };
                        (kind, op.name().to_string())
                    }
                };
                let mut seen_operands = BTreeSet::new();
                for &operand in operands(graph, id) {
                    if let Some(&from) = index.get(&operand) {
                        if seen_operands.insert(operand) {
                            edges.push((from, index[&id]));
                        }
                    }
                }
                let neighbours: BTreeSet<ValueId> = operands(graph, id)
                    .iter()
                    .chain(&users[id.index()])
                    .copied()
                    .collect();
                ViewNode {
                    id,
                    name: value.name.clone(),
                    kind,
                    head,
                    ty: value.ty.to_string(),
                    is_output: graph.outputs.contains(&id),
                    updates: updates.remove(&id).unwrap_or_default(),
                    is_focus: focus == Some(id),
                    hidden_neighbours: neighbours.iter().filter(|n| !kept.contains(n)).count(),
                    detail: detail_line(graph, id),
                }
            })
            .collect();
        View {
            title,
            nodes,
            edges,
        }
    }
}

fn operands(graph: &Graph, id: ValueId) -> &[ValueId] {
    match &graph.value(id).def {
        Def::Node { operands, .. } => operands,
        _ => &[],
    }
}

/// For each value, the values that use it, in definition order and each once.
fn users_of(graph: &Graph) -> Vec<Vec<ValueId>> {
    let mut users = vec![Vec::new(); graph.values.len()];
    for id in graph.ids() {
        for &operand in operands(graph, id) {
            let list: &mut Vec<ValueId> = &mut users[operand.index()];
            if list.last() != Some(&id) {
                list.push(id);
            }
        }
    }
    users
}

/// The value's line of the text form, without its indentation and with long
/// attributes cut short.
fn detail_line(graph: &Graph, id: ValueId) -> String {
    let value = graph.value(id);
    let line = match &value.def {
        Def::Input => format!("input %{}: {}", value.name, value.ty),
        Def::Param(init) => format!(
            "param %{}: {} = {}",
            value.name,
            value.ty,
            text::print_init(init)
        ),
        Def::State(init) => format!(
            "state %{}: {} = {}",
            value.name,
            value.ty,
            text::print_init(init)
        ),
        Def::Node { op, operands } => {
            let names: Vec<String> = operands
                .iter()
                .map(|&o| format!("%{}", graph.value(o).name))
                .collect();
            let attrs: Vec<String> = op
                .attrs()
                .iter()
                .map(|(k, a)| format!("{k} = {a}"))
                .collect();
            let mut line = format!("%{}: {} = {}", value.name, value.ty, op.name());
            if !names.is_empty() {
                line.push(' ');
                line.push_str(&names.join(", "));
            }
            if !attrs.is_empty() {
                line.push_str(&format!(" {{{}}}", attrs.join(", ")));
            }
            line
        }
    };
    if line.chars().count() > MAX_DETAIL_CHARS {
        let cut: String = line.chars().take(MAX_DETAIL_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// A value name that differs from `name` only in case, or that contains it, to suggest.
fn similar_name<'g>(graph: &'g Graph, name: &str) -> Option<&'g str> {
    let lower = name.to_ascii_lowercase();
    let names = || graph.values.iter().map(|v| v.name.as_str());
    names()
        .find(|n| n.to_ascii_lowercase() == lower)
        .or_else(|| names().find(|n| !lower.is_empty() && n.to_ascii_lowercase().contains(&lower)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_compiler::ir::text::parse;

    fn chain() -> Graph {
        parse(
            "graph @g {\n  input %x: f32[4]\n  param %w: f32[4] = zeros\n  %a = add %x, %w\n  %b = mul %a, %a\n  %c = relu %b\n  %d = exp %c\n  output %d\n}\n",
        )
        .unwrap()
        .graph
    }

    #[test]
    fn whole_view_has_every_value_and_each_operand_edge_once() {
        let view = View::of(&chain());
        assert_eq!(view.nodes.len(), 6);
        // `mul %a, %a` draws one edge.
        assert_eq!(view.edges, vec![(0, 2), (1, 2), (2, 3), (3, 4), (4, 5)]);
        assert_eq!(view.nodes[4].kind, NodeKind::Composite);
        assert_eq!(view.nodes[3].kind, NodeKind::Primitive);
        assert!(view.nodes[5].is_output);
    }

    #[test]
    fn focus_keeps_the_neighbourhood_and_counts_what_it_cuts() {
        let g = chain();
        let focus = Focus {
            name: "%b".into(),
            depth: 1,
        };
        let view = View::focused(&g, &focus).unwrap();
        let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(view.nodes[0].hidden_neighbours, 2, "x and w are cut off");
        assert_eq!(view.nodes[2].hidden_neighbours, 1, "d is cut off");
        assert!(view.nodes[1].is_focus);
        let err = View::focused(
            &g,
            &Focus {
                name: "B".into(),
                depth: 1,
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--focus: graph @g has no value named %B (did you mean %b?)"
        );
    }
}
