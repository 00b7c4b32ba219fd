//! Graphviz DOT text of a [`View`]: `dot -Tsvg` (or any DOT viewer) draws it with the
//! same shapes and colours as [`crate::svg`].

use crate::view::{NodeKind, View, ViewNode};
use std::fmt::Write;

/// Fill colours shared with the SVG renderer, so both pictures read the same way.
pub(crate) fn fill_colour(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Input => "#c8e6c9",
        NodeKind::Param => "#ffe0b2",
        NodeKind::State => "#e1d5f0",
        NodeKind::Primitive => "#e3f2fd",
        NodeKind::Composite => "#b3d4fc",
    }
}

/// The DOT text of `view`: one node statement per view node (named `v0`, `v1`, … in
/// order) and one edge statement per operand edge; parameter updates are dashed edges
/// that do not constrain the layout.
pub fn to_dot(view: &View) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_dot(view, &mut out);
    out
}

fn write_dot(view: &View, out: &mut String) -> std::fmt::Result {
    writeln!(out, "digraph \"{}\" {{", escape(&view.title))?;
    writeln!(out, "  rankdir=TB;")?;
    writeln!(out, "  label=\"{}\";", escape(&view.title))?;
    writeln!(out, "  labelloc=t;")?;
    writeln!(
        out,
        "  node [fontname=\"monospace\", fontsize=10, style=filled];"
    )?;
    writeln!(out, "  edge [color=\"#607d8b\", arrowsize=0.6];")?;
    for (i, node) in view.nodes.iter().enumerate() {
        writeln!(out, "  v{i} [{}];", node_attrs(node))?;
    }
    for &(from, to) in &view.edges {
        writeln!(out, "  v{from} -> v{to};")?;
    }
    for (i, node) in view.nodes.iter().enumerate() {
        for target in &node.updates {
            if let Some(t) = view.nodes.iter().position(|n| &n.name == target) {
                writeln!(
                    out,
                    "  v{i} -> v{t} [style=dashed, color=\"#8e24aa\", constraint=false, label=\"update\"];"
                )?;
            }
        }
    }
    writeln!(out, "}}")
}

fn node_attrs(node: &ViewNode) -> String {
    let (shape, style) = match node.kind {
        NodeKind::Input => ("ellipse", "filled"),
        NodeKind::Param => ("box", "filled"),
        NodeKind::State => ("box", "filled,dashed"),
        NodeKind::Primitive => ("box", "rounded,filled"),
        NodeKind::Composite => ("box", "rounded,filled,bold"),
    };
    let mut attrs = vec![
        format!("label=\"{}\"", escape(&label_lines(node).join("\n"))),
        format!("shape={shape}"),
        format!("style=\"{style}\""),
        format!("fillcolor=\"{}\"", fill_colour(node.kind)),
        format!("tooltip=\"{}\"", escape(&node.detail)),
    ];
    if node.kind == NodeKind::Composite {
        attrs.push("peripheries=2".into());
    }
    if node.is_output {
        attrs.push("penwidth=3".into());
    }
    if node.is_focus {
        attrs.push("color=\"#d32f2f\"".into());
        attrs.push("penwidth=3".into());
    }
    attrs.join(", ")
}

/// The lines of a node's label, shared with the SVG renderer: the op (or kind), the
/// value's name, its type, and notes about outputs, updates and hidden neighbours.
pub(crate) fn label_lines(node: &ViewNode) -> Vec<String> {
    let mut lines = vec![
        node.head.clone(),
        format!("%{}", node.name),
        node.ty.clone(),
    ];
    if node.is_output {
        lines.push("→ output".into());
    }
    for target in &node.updates {
        lines.push(format!("→ updates %{target}"));
    }
    if node.hidden_neighbours > 0 {
        lines.push(format!("(+{} not shown)", node.hidden_neighbours));
    }
    lines
}

/// Escapes a DOT double-quoted string: quotes and backslashes, and newlines as `\n`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
