//! Benchmark workloads W1 (`examples/mlp.smelt`, SGD) and W2 (`examples/gpt.smelt`,
//! AdamW) are the peers' workloads: on the peers' fixed data and initial parameters
//! (../shared/peers/README.md), the training step that `smelt train` compiles (e-graph
//! optimiser, autodiff, CPU backend) reproduces the float64 reference loss before the
//! first step and the peers' loss after it. Skipped, with a message, where the peers'
//! data is not set up.

mod common;

use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::optimize::Options;
use smelt_runtime::compiled::{Compiled, Purpose};
use smelt_runtime::cpu::Resident;
use smelt_runtime::{io, params, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Runs two training steps of `model` from the peers' `files` (data name → smelt name)
/// and returns the losses before and after the first update.
fn two_losses(
    model: &str,
    optimizer: Optimizer,
    data: &Path,
    files: &[(String, String)],
    lr: f64,
) -> (f64, f64) {
    let forward = common::load_example(model, &[]);
    let compiled = Compiled::compile(
        &forward,
        Purpose::Train(optimizer),
        Some(&Options::default()),
    )
    .unwrap();
    let program = &compiled.program;
    let g = &program.schedule().graph;
    let mut held: HashMap<String, Tensor> = params::init_params(g, 0);
    let mut inputs = HashMap::from([
        (
            "lr".to_string(),
            Tensor::from_f64(smelt_compiler::ir::DType::F32, vec![], vec![lr]),
        ),
        (
            "step".to_string(),
            Tensor::from_f64(smelt_compiler::ir::DType::F32, vec![], vec![1.0]),
        ),
    ]);
    for (file, name) in files {
        let t = io::read_npy(&data.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let id = g
            .find(name)
            .unwrap_or_else(|| panic!("{model} has no %{name}"));
        if g.inputs().any(|i| i == id) {
            inputs.insert(name.clone(), t);
        } else {
            held.insert(name.clone(), t);
        }
    }
    let mut resident = Resident::new(program, &held).unwrap();
    let mut losses = Vec::new();
    for step in 1..=2 {
        inputs.insert(
            "step".into(),
            Tensor::from_f64(
                smelt_compiler::ir::DType::F32,
                vec![],
                vec![f64::from(step)],
            ),
        );
        let (outputs, updates) = program.run_resident(&inputs, &resident).unwrap();
        let loss_at = forward
            .outputs
            .iter()
            .position(|&o| forward.value(o).name == "loss")
            .unwrap();
        losses.push(outputs[loss_at].to_f64_vec()[0]);
        resident.apply(updates);
    }
    (losses[0], losses[1])
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn w1_matches_the_peers() {
    let Some(data) = common::peers_data() else {
        return;
    };
    let files = common::peer_files("mlp");
    let (loss0, loss1) = two_losses("examples/mlp.smelt", Optimizer::sgd(), &data, &files, 0.01);
    eprintln!("W1: loss {loss0} before the first step, {loss1} after it");
    // The float64 NumPy reference, and the step-1 loss every peer prints (7 digits).
    assert!(relative(loss0, 2.3054452451402163) < 1e-6, "loss0 {loss0}");
    assert!(relative(loss1, 2.301222) < 1e-6, "loss1 {loss1}");
}

#[test]
fn w2_matches_the_peers() {
    let Some(data) = common::peers_data() else {
        return;
    };
    let files = common::peer_files("gpt");
    let (loss0, loss1) = two_losses(
        "examples/gpt.smelt",
        Optimizer::adamw(),
        &data,
        &files,
        1e-3,
    );
    eprintln!("W2: loss {loss0} before the first step, {loss1} after it");
    assert!(relative(loss0, 6.288908249628811) < 1e-6, "loss0 {loss0}");
    // The peers' step-1 losses span 5.78177–5.78178.
    assert!(relative(loss1, 5.781775) < 2e-6, "loss1 {loss1}");
}
