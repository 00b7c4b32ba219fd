//! The optimiser measurably lowers the estimated cost of the full-size GPT training
//! step (AdamW, decomposed, as `smelt dump-ir examples/gpt.smelt --train --stage
//! optimized` prints it) under the CPU cost model.

use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
use smelt_compiler::passes::decompose;
use std::path::Path;

#[test]
fn gpt_training_step_gets_cheaper() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gpt.smelt");
    let model = smelt_frontend::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let step = training_step(&model.graph, &Optimizer::adamw()).unwrap();
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
