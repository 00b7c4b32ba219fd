//! Pictures end to end: DOT that parses back with one statement per node and edge, SVG
//! that is well-formed XML with one node element per value, focus views, Chrome traces
//! from `train --profile`, and training curves from a real `train --log`.

mod common;

use common::{expect_user_error, smelt, texts, write_f32_npy, write_i32_npy, Rng};
use std::path::Path;

fn ok(args: &[&str]) -> String {
    let out = smelt(args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "smelt {args:?} failed:\n{stderr}");
    stdout
}

/// Values in the text dump of `args` (every line defining a value).
fn value_count(args: &[&str]) -> usize {
    ok(args)
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with('%')
                || l.starts_with("input ")
                || l.starts_with("param ")
                || l.starts_with("state ")
        })
        .count()
}

fn svg_nodes(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("g")
                && n.attribute("class")
                    .is_some_and(|c| c.split(' ').next() == Some("node"))
        })
        .map(|n| n.attribute("data-name").unwrap_or_default().to_string())
        .collect()
}

#[test]
fn mlp_dot_is_stable_and_parses_back() {
    let dot = ok(&["dump-ir", "examples/mlp.sir", "--format", "dot"]);
    insta::assert_snapshot!("mlp_sir_dot", dot);
    let mut parser = layout::gv::DotParser::new(&dot);
    let graph = parser
        .process()
        .unwrap_or_else(|e| panic!("the DOT does not parse: {e}"));
    let mut builder = layout::gv::GraphBuilder::new();
    builder.visit_graph(&graph);
    let drawn = builder.get();
    assert_eq!(drawn.num_nodes(), 20, "one node per value of mlp.sir");
    let statements = |arrow: bool| {
        dot.lines()
            .filter(|l| l.trim_start().starts_with('v') && l.contains(" -> ") == arrow)
            .count()
    };
    assert_eq!(statements(false), 20);
    // Every operand edge of mlp.sir once (no value uses the same operand twice).
    assert_eq!(statements(true), 19);
}

#[test]
fn svg_is_xml_with_one_node_element_per_value() {
    let svg = ok(&["dump-ir", "examples/mlp.sir", "--format", "svg"]);
    let nodes = svg_nodes(&svg);
    assert_eq!(nodes.len(), value_count(&["dump-ir", "examples/mlp.sir"]));
    assert!(nodes.contains(&"logits".to_string()));
    assert_eq!(svg.matches(r#"class="edge""#).count(), 19);
}

#[test]
fn gpt_training_step_renders_whole_and_focused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpt.svg");
    let grad = [
        "dump-ir",
        "examples/gpt.smelt",
        "--train",
        "--stage",
        "grad",
    ];
    let started = std::time::Instant::now();
    ok(&[
        &grad[..],
        &["--format", "svg", "-o", path.to_str().unwrap()],
    ]
    .concat());
    let seconds = started.elapsed().as_secs_f64();
    assert!(seconds < 20.0, "rendering took {seconds:.1}s");
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_eq!(svg_nodes(&svg).len(), value_count(&grad));

    let focused = ok(&[
        &grad[..],
        &["--format", "svg", "--focus", "%layers.0.q", "--depth", "1"],
    ]
    .concat());
    let mut nodes = svg_nodes(&focused);
    nodes.sort();
    // q, what it is made from, and its users in the forward and backward passes.
    assert!(nodes.contains(&"layers.0.q".to_string()), "{nodes:?}");
    assert!(nodes.contains(&"12".to_string()), "{nodes:?}");
    assert!(nodes.len() < 10, "{nodes:?}");

    let err = expect_user_error(&smelt(
        &[&grad[..], &["--format", "dot", "--focus", "layers.0.Q"]].concat(),
    ));
    assert!(
        err.contains("has no value named %layers.0.Q (did you mean %layers.0.q?)"),
        "{err}"
    );
    let err = expect_user_error(&smelt(&["dump-ir", "examples/mlp.sir", "--focus", "x"]));
    assert!(
        err.contains("use it with --format dot or --format svg"),
        "{err}"
    );
}

/// `rows` samples of a 10-class task for `examples/mlp.smelt`, as `x.npy` and `labels.npy`.
fn tiny_task(dir: &Path, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(7);
    let x: Vec<f32> = (0..rows * 784).map(|_| rng.normal() as f32).collect();
    let labels: Vec<i32> = (0..rows).map(|r| (r % 10) as i32).collect();
    write_f32_npy(&dir.join("x.npy"), &[rows as u64, 784], &x);
    write_i32_npy(&dir.join("labels.npy"), &[rows as u64], &labels);
}

#[test]
fn training_writes_a_profile_trace_and_its_log_plots() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    tiny_task(&data, 32);
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    for (log, lr) in [("a.jsonl", "1e-3"), ("b.jsonl", "3e-3")] {
        ok(&[
            "train",
            "examples/mlp.smelt",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "3",
            "--batch",
            "8",
            "--lr",
            lr,
            "--schedule",
            "cosine",
            "--log",
            &path(log),
            "--profile",
            &path("profile.json"),
        ]);
    }

    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("profile.json")).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let complete: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for e in events {
        assert!(
            e["pid"].is_u64() && e["tid"].is_u64() && e["name"].is_string(),
            "{e}"
        );
    }
    for e in &complete {
        assert!(e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0);
        assert_eq!(e["cat"], "compute");
    }
    let steps: Vec<&&serde_json::Value> = complete
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 3);
    assert!(steps[0]["args"]["loss"].is_f64());
    // Each step holds its batch, run and apply phases.
    for name in ["batch", "run", "apply"] {
        assert_eq!(complete.iter().filter(|e| e["name"] == name).count(), 3);
    }
    let step_end = steps[0]["ts"].as_f64().unwrap() + steps[0]["dur"].as_f64().unwrap();
    let run = complete.iter().find(|e| e["name"] == "run").unwrap();
    assert!(run["ts"].as_f64().unwrap() >= steps[0]["ts"].as_f64().unwrap());
    assert!(run["ts"].as_f64().unwrap() + run["dur"].as_f64().unwrap() <= step_end + 1.0);
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["args"]["name"] == "cpu"));

    ok(&[
        "plot",
        &path("a.jsonl"),
        &path("b.jsonl"),
        "-o",
        &path("loss.svg"),
    ]);
    let svg = std::fs::read_to_string(path("loss.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in ["a.jsonl", "b.jsonl", "training loss", "learning rate"] {
        assert!(texts.contains(&label), "{label} in {texts:?}");
    }
    assert!(
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count()
            >= 4
    );

    std::fs::write(path("bad.jsonl"), "{\"step\":1,\"loss\":2}\nnot json\n").unwrap();
    let err = expect_user_error(&smelt(&["plot", &path("bad.jsonl")]));
    assert!(err.contains("bad.jsonl:2: not JSON"), "{err}");
}
