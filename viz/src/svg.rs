//! An SVG drawing of a [`View`], laid out by [`crate::layout`]; it needs no system tool
//! and opens in any browser. Each node is one `<g class="node">` element with a
//! `<title>` (the value's line of the text form, shown on hover).

use crate::dot::{fill_colour, label_lines};
use crate::layout::{layered, Point, Size, Spacing};
use crate::view::{NodeKind, View, ViewNode};
use std::fmt::Write;

/// Font size of node labels, in pixels.
const FONT_SIZE: f64 = 11.0;
/// Advance of one character of the monospace font, as a fraction of the font size.
/// Monospace faces keep this close to 0.6, so box widths fit their labels.
const CHAR_WIDTH: f64 = 0.61 * FONT_SIZE;
/// Distance between label baselines.
const LINE_HEIGHT: f64 = 14.0;
/// Space between a box's border and its text.
const PAD_X: f64 = 9.0;
const PAD_Y: f64 = 6.0;
/// Height of the title and legend above the graph.
const HEADER_HEIGHT: f64 = 58.0;
const EDGE_COLOUR: &str = "#607d8b";

/// The SVG text of `view`.
pub fn to_svg(view: &View) -> String {
    let labels: Vec<Vec<String>> = view.nodes.iter().map(label_lines).collect();
    let sizes: Vec<Size> = labels.iter().map(|lines| box_size(lines)).collect();
    let layout = layered(&sizes, &view.edges, Spacing::default());
    let width = layout.width.max(legend_width() + 40.0);
    let height = layout.height + HEADER_HEIGHT;

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = (|| -> std::fmt::Result {
        writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="{FONT_SIZE}">"#,
            w = width,
            h = height
        )?;
        writeln!(
            out,
            r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{EDGE_COLOUR}"/></marker></defs>"#
        )?;
        writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#)?;
        writeln!(
            out,
            r#"<text class="title" x="20" y="22" font-size="15" font-weight="bold">{}</text>"#,
            xml(&view.title)
        )?;
        write_legend(&mut out)?;
        writeln!(out, r#"<g transform="translate(0 {HEADER_HEIGHT})">"#)?;
        writeln!(
            out,
            r#"<g class="edges" fill="none" stroke="{EDGE_COLOUR}" stroke-width="1.1">"#
        )?;
        for route in &layout.routes {
            if route.len() < 2 {
                continue;
            }
            writeln!(
                out,
                r#"<path class="edge" d="{}" marker-end="url(#arrow)"/>"#,
                curve(route)
            )?;
        }
        writeln!(out, "</g>")?;
        for (i, node) in view.nodes.iter().enumerate() {
            write_node(&mut out, i, node, &labels[i], layout.centres[i], sizes[i])?;
        }
        writeln!(out, "</g>")?;
        writeln!(out, "</svg>")
    })();
    out
}

fn box_size(lines: &[String]) -> Size {
    let chars = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    Size {
        width: (chars as f64 * CHAR_WIDTH + 2.0 * PAD_X).max(60.0),
        height: lines.len() as f64 * LINE_HEIGHT + 2.0 * PAD_Y,
    }
}

/// A smooth path through `points`: cubic pieces that leave and enter each point
/// vertically, as edges of a top-to-bottom drawing should.
fn curve(points: &[Point]) -> String {
    let mut d = format!("M{:.1},{:.1}", points[0].x, points[0].y);
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if (a.x - b.x).abs() < 0.05 {
            let _ = write!(d, " L{:.1},{:.1}", b.x, b.y);
        } else {
            let mid = (b.y - a.y) / 2.0;
            let _ = write!(
                d,
                " C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                a.x,
                a.y + mid,
                b.x,
                b.y - mid,
                b.x,
                b.y
            );
        }
    }
    d
}

/// The box outline of each kind: corner radius, dash pattern, border colour and width.
struct Outline {
    radius: f64,
    dashed: bool,
    stroke: &'static str,
    stroke_width: f64,
}

fn outline(node: &ViewNode, size: Size) -> Outline {
    let (radius, dashed) = match node.kind {
        NodeKind::Input => (size.height / 2.0, false),
        NodeKind::Param => (0.0, false),
        NodeKind::State => (0.0, true),
        NodeKind::Primitive | NodeKind::Composite => (7.0, false),
    };
    let (stroke, stroke_width) = if node.is_focus {
        ("#d32f2f", 3.0)
    } else if node.is_output {
        ("#263238", 2.6)
    } else {
        ("#78909c", 1.0)
    };
    Outline {
        radius: radius.min(size.height / 2.0),
        dashed,
        stroke,
        stroke_width,
    }
}

fn write_node(
    out: &mut String,
    index: usize,
    node: &ViewNode,
    lines: &[String],
    centre: Point,
    size: Size,
) -> std::fmt::Result {
    let (x, y) = (centre.x - size.width / 2.0, centre.y - size.height / 2.0);
    let o = outline(node, size);
    writeln!(
        out,
        r#"<g class="node {}" id="v{index}" data-name="{}">"#,
        kind_class(node.kind),
        xml(&node.name)
    )?;
    writeln!(out, "<title>{}</title>", xml(&node.detail))?;
    writeln!(
        out,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" rx="{:.1}" fill="{}" stroke="{}" stroke-width="{}"{}/>"#,
        size.width,
        size.height,
        o.radius,
        fill_colour(node.kind),
        o.stroke,
        o.stroke_width,
        if o.dashed {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        }
    )?;
    if node.kind == NodeKind::Composite {
        // A second, inner border marks composites (as `peripheries=2` does in DOT).
        writeln!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="{:.1}" fill="none" stroke="#5c6bc0" stroke-width="1"/>"##,
            x + 3.0,
            y + 3.0,
            size.width - 6.0,
            size.height - 6.0,
            (o.radius - 3.0).max(0.0)
        )?;
    }
    write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">"#,
        centre.x,
        y + PAD_Y + LINE_HEIGHT - 3.5
    )?;
    for (k, line) in lines.iter().enumerate() {
        let style = match k {
            0 => r#" font-weight="bold""#,
            1 | 2 => "",
            _ => r##" fill="#6a1b9a" font-style="italic""##,
        };
        write!(
            out,
            r#"<tspan x="{:.1}" dy="{}"{style}>{}</tspan>"#,
            centre.x,
            if k == 0 { 0.0 } else { LINE_HEIGHT },
            xml(line)
        )?;
    }
    writeln!(out, "</text>")?;
    writeln!(out, "</g>")
}

fn kind_class(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Input => "input",
        NodeKind::Param => "param",
        NodeKind::State => "state",
        NodeKind::Primitive => "primitive",
        NodeKind::Composite => "composite",
    }
}

const LEGEND: [NodeKind; 5] = [
    NodeKind::Input,
    NodeKind::Param,
    NodeKind::State,
    NodeKind::Primitive,
    NodeKind::Composite,
];
const LEGEND_ITEM_WIDTH: f64 = 130.0;

fn legend_width() -> f64 {
    (LEGEND.len() + 1) as f64 * LEGEND_ITEM_WIDTH
}

/// One swatch per node kind, and one for outputs, under the title.
fn write_legend(out: &mut String) -> std::fmt::Result {
    writeln!(out, r#"<g class="legend" font-size="11">"#)?;
    let y = 34.0;
    for (k, kind) in LEGEND.iter().enumerate() {
        let x = 20.0 + k as f64 * LEGEND_ITEM_WIDTH;
        let sample = ViewNode {
            id: smelt_compiler::ir::ValueId(0),
            name: String::new(),
            kind: *kind,
            head: String::new(),
            ty: String::new(),
            is_output: false,
            updates: Vec::new(),
            is_focus: false,
            hidden_neighbours: 0,
            detail: String::new(),
        };
        let size = Size {
            width: 26.0,
            height: 14.0,
        };
        let o = outline(&sample, size);
        writeln!(
            out,
            r#"<rect x="{x}" y="{y}" width="26" height="14" rx="{:.1}" fill="{}" stroke="{}"{}/>"#,
            o.radius.min(7.0),
            fill_colour(*kind),
            if *kind == NodeKind::Composite {
                "#3949ab"
            } else {
                o.stroke
            },
            if o.dashed {
                r#" stroke-dasharray="4 2""#
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 32.0,
            y + 11.0,
            kind.label()
        )?;
    }
    let x = 20.0 + LEGEND.len() as f64 * LEGEND_ITEM_WIDTH;
    writeln!(
        out,
        r##"<rect x="{x}" y="{y}" width="26" height="14" rx="4" fill="white" stroke="#263238" stroke-width="2.6"/><text x="{}" y="{}">output</text>"##,
        x + 32.0,
        y + 11.0
    )?;
    writeln!(out, "</g>")
}

/// Escapes text for XML content and attribute values.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
