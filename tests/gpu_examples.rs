//! Every example model, forward and training step (as written, and through the pipeline
//! with the H800's cost model), on the GPU path without a GPU:
//! - the full-size programs' PTX assembles with `ptxas -arch=sm_90` and no kernel
//!   spills registers (ptxas is required in CI; elsewhere the check is skipped with a
//!   printed reason);
//! - small configurations run in the kernel-IR evaluator with the SM plan's grids and
//!   match the reference interpreter on random inputs and initial parameters
//!   (|gpu − interp| ≤ 1e-4 · max(1, max|interp|) per output and update).

mod common;

use common::load_example as load;
use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::gpu::{ptx, ptxas, GpuProgram, GpuTarget, SmPlan};
use smelt_compiler::ir::{Bindings, DType, Graph};
use smelt_compiler::optimize::Options;
use smelt_compiler::pipeline::{prepare, Goal};
use smelt_runtime::{gpusim, interp, params, Precision, Tensor};
use std::collections::HashMap;

/// The AdamW training steps of `g` a GPU runs: as written (`--no-optimize`), and
/// through the pipeline with the H800's cost model (the default).
fn train(g: &Graph) -> [Graph; 2] {
    let goal = Goal::Train(Optimizer::adamw());
    let roofline = GpuTarget::h800().roofline();
    let optimised = prepare(g, &goal, &roofline, Some(&Options::default()))
        .unwrap()
        .graph;
    [training_step(g, &Optimizer::adamw()).unwrap(), optimised]
}

fn bindings(pairs: &[(&str, u64)]) -> Bindings {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Assembles `g`'s kernels and checks that none spills.
fn assemble(g: &Graph, b: &Bindings) {
    let Some(ptxas) = ptxas::find_for_test(&g.name) else {
        return;
    };
    let program = GpuProgram::new(&smelt_compiler::gpu::schedule(g), b).unwrap();
    SmPlan::new(&program, &GpuTarget::h800(), 20).unwrap();
    let kernels = program.kernels();
    let module = ptx::module(&kernels);
    let reports = ptxas::assemble(&ptxas, &module, ptx::arch(&kernels))
        .unwrap_or_else(|e| panic!("ptxas rejected {}:\n{e}", g.name));
    assert_eq!(reports.len(), kernels.len());
    for r in &reports {
        assert_eq!(r.spill_bytes, 0, "{} spills: {r:?}", g.name);
    }
    let widest = reports.iter().max_by_key(|r| r.registers).unwrap();
    eprintln!(
        "{}: {} kernels assembled, most registers: {} ({}), most shared: {} B",
        g.name,
        reports.len(),
        widest.registers,
        widest.name,
        reports.iter().map(|r| r.shared_bytes).max().unwrap()
    );
}

fn feeds(g: &Graph, batch: usize, int_max: i64) -> HashMap<String, Tensor> {
    let mut f = params::init_params(g, 5);
    for id in g.inputs() {
        let name = g.value(id).name.clone();
        let t = match name.as_str() {
            "lr" => Tensor::from_f64(DType::F32, vec![], vec![1e-3]),
            "step" => Tensor::from_f64(DType::F32, vec![], vec![2.0]),
            _ => common::random_input(g, id, batch, int_max),
        };
        f.insert(name, t);
    }
    f
}

fn simulate(g: &Graph, batch: usize, int_max: i64) {
    let f = feeds(g, batch, int_max);
    let want = interp::execute(g, &f, Precision::F32).unwrap();
    let got = gpusim::execute(g, &f, &GpuTarget::h800(), 20).unwrap_or_else(|e| panic!("{e}"));
    common::assert_runs_close(&g.name, &got, &want, 1e-4);
}

#[test]
fn mlp() {
    let g = load("examples/mlp.smelt", &[]);
    let b = bindings(&[("B", 64)]);
    assemble(&g, &b);
    for step in train(&g) {
        assemble(&step, &b);
    }
    let small = load("examples/mlp.smelt", &[("hidden", "24")]);
    simulate(&small, 3, 10);
    for step in train(&small) {
        simulate(&step, 3, 10);
    }
}

#[test]
fn gpt() {
    let g = load("examples/gpt.smelt", &[]);
    let b = bindings(&[("B", 8)]);
    assemble(&g, &b);
    for step in train(&g) {
        assemble(&step, &b);
    }
    let small = load("examples/gpt.smelt", &common::SMALL_GPT);
    simulate(&small, 1, 32);
    for step in train(&small) {
        simulate(&step, 1, 32);
    }
}

#[test]
fn moe() {
    let g = load("examples/moe.smelt", &[]);
    let b = bindings(&[("N", 256)]);
    assemble(&g, &b);
    for step in train(&g) {
        assemble(&step, &b);
    }
    let small = load("examples/moe.smelt", &common::SMALL_MOE);
    simulate(&small, 6, 1);
    for step in train(&small) {
        simulate(&step, 6, 1);
    }
}

/// Benchmark W4, routed sparsely (`top_k`, `grouped_matmul`).
#[test]
fn moe_w4_sparse() {
    let g = load("examples/bench/moe_w4.smelt", &[]);
    let b = bindings(&[("N", 1024)]);
    assemble(&g, &b);
    for step in train(&g) {
        assemble(&step, &b);
    }
    let small = load("examples/bench/moe_w4.smelt", &common::SMALL_MOE);
    simulate(&small, 6, 1);
    for step in train(&small) {
        simulate(&step, 6, 1);
    }
}

#[test]
fn llama() {
    let g = load("examples/llama.smelt", &[]);
    let b = bindings(&[("B", 4), ("T", 64)]);
    assemble(&g, &b);
    for step in train(&g) {
        assemble(&step, &b);
    }
    let small = load("examples/llama.smelt", &common::SMALL_LLAMA);
    simulate(&small, 2, 32);
    for step in train(&small) {
        simulate(&step, 2, 32);
    }
}
