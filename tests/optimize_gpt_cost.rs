//! The optimiser measurably lowers the estimated cost of the full-size GPT training
//! step (AdamW, decomposed, as `smelt dump-ir examples/gpt.smelt --train --stage
//! optimized` prints it) under the CPU cost model, and recognises the composites of the
//! decomposed GPT forward graph, the loss's `cross_entropy` and the attention included.

use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::ir::{Def, Graph, Op};
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
use smelt_compiler::passes::decompose;
use std::path::Path;

fn gpt() -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gpt.smelt");
    smelt_frontend::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

/// The composite op names of `g`, sorted, with repeats.
fn composites(g: &Graph) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = g
        .values
        .iter()
        .filter_map(|v| match &v.def {
            Def::Node {
                op: op @ Op::Composite(_),
                ..
            } => Some(op.name()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

#[test]
fn gpt_forward_composites_are_recognised() {
    let forward = gpt();
    let g = decompose(&forward);
    assert!(composites(&g).is_empty());
    let (opt, report) = optimize(&g, &RooflineTarget::cpu(), &Options::default()).unwrap();
    // The language writes the loss as `cross_entropy` and every layer norm and GELU as
    // composites. Attention is spelled out (a causal mask, then `softmax`), and the
    // scores are divided by sqrt(64) = 8, which is exactly a multiplication by 0.125: the
    // whole of it is recognised as `attention`.
    let mut expect: Vec<&str> = composites(&forward)
        .into_iter()
        .map(|c| if c == "softmax" { "attention" } else { c })
        .collect();
    expect.sort();
    assert_eq!(composites(&opt), expect, "{report}");
    assert!(expect.contains(&"cross_entropy") && expect.contains(&"attention"));
}

#[test]
fn gpt_training_step_gets_cheaper() {
    let step = training_step(&gpt(), &Optimizer::adamw()).unwrap();
    let g = decompose(&step);
    let (_, report) = optimize(&g, &RooflineTarget::cpu(), &Options::default()).unwrap();
    eprintln!("{report}");
    assert!(
        report.after.seconds < 0.95 * report.before.seconds,
        "estimated time: {} -> {}",
        report.before,
        report.after
    );
    assert!(report.after.work.bytes < report.before.work.bytes);
    assert!(report.after.ops < report.before.ops);
}
