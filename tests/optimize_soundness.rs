//! Soundness of the e-graph optimiser and of the compilation pipeline: every example
//! model, forward graph and AdamW training step, decomposed or not, computes the same
//! outputs and updates before and after optimisation in the reference interpreter (f64
//! precision) on random, non-zero inputs and parameters; so does the pipeline's
//! training step (optimised forward, autodiff, optimised again) against the training
//! step of the model as written, and the CPU backend running the pipeline's graph.
//!
//! Tolerance in the interpreter: `|a - b| <= 1e-9 * (1 + |a|)`. Layout, merge and
//! composite rules are exact; matrix-product re-association and factoring change the
//! summation order, and constant folding uses Rust's `f64` math where the runtime may
//! use `libm`, which moves results by a few ulps of `f64`, far below this bound. The
//! CPU backend computes in `f32`: `|cpu - interp| <= 1e-4 * max(1, max |interp|)` per
//! output and update, as in `runtime/tests/cpu_vs_interp.rs`.

mod common;

use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::ir::Graph;
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
use smelt_compiler::passes::decompose;
use smelt_compiler::pipeline::{prepare, Goal};
use smelt_compiler::schedule::{schedule, MemoryPlan};
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::interp::{execute, Precision};
use smelt_runtime::{params, rng, Tensor};
use std::collections::HashMap;

const TOLERANCE: f64 = 1e-9;

use common::load_example as load;

/// Parameters and state moved away from their (often all-zero or all-one) initial
/// values, and random inputs: floats in [-1, 1] (never all zero), ints in [0, int_max).
fn feeds(g: &Graph, batch: usize, int_max: i64) -> HashMap<String, Tensor> {
    let mut f: HashMap<String, Tensor> = params::init_params(g, 5)
        .into_iter()
        .map(|(n, t)| {
            let seed = rng::seed_for(3, &n);
            let v = t
                .to_f64_vec()
                .iter()
                .enumerate()
                .map(|(i, x)| x.abs() + 0.5 * rng::uniform01(seed, i as u64) + 0.01)
                .collect();
            (n, Tensor::from_f64(t.dtype, t.shape.clone(), v))
        })
        .collect();
    for id in g.inputs() {
        let v = g.value(id);
        let t = if v.name == "step" {
            // The optimiser's step counter starts at 1 (bias correction divides by
            // 1 - beta^step).
            Tensor::from_f64(v.ty.dtype, vec![], vec![3.0])
        } else {
            common::random_input(g, id, batch, int_max)
        };
        f.insert(v.name.clone(), t);
    }
    f
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape, b.shape, "{what}: shapes differ");
    let (xs, ys) = (a.to_f64_vec(), b.to_f64_vec());
    for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
        let ok =
            x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= TOLERANCE * (1.0 + x.abs());
        assert!(ok, "{what}[{i}]: {x} before, {y} after optimisation");
    }
}

fn check_graph(label: &str, g: &Graph, batch: usize, int_max: i64) {
    let (opt, report) = optimize(g, &RooflineTarget::cpu(), &Options::default())
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        report.after.seconds <= report.before.seconds,
        "{label}: cost went up"
    );
    check_same(label, g, &opt, batch, int_max);
}

/// `after` computes what `before` computes, in the interpreter.
fn check_same(label: &str, before: &Graph, after: &Graph, batch: usize, int_max: i64) {
    let f = feeds(before, batch, int_max);
    let before = execute(before, &f, Precision::F64).unwrap_or_else(|e| panic!("{label}: {e}"));
    let after = execute(after, &f, Precision::F64).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(before.outputs.len(), after.outputs.len());
    for (i, (a, b)) in before.outputs.iter().zip(&after.outputs).enumerate() {
        assert_close(&format!("{label}: output {i}"), a, b);
    }
    assert_eq!(before.updates.len(), after.updates.len());
    for ((na, a), (nb, b)) in before.updates.iter().zip(&after.updates) {
        assert_eq!(na, nb, "{label}: update order");
        assert_close(&format!("{label}: update of {na}"), a, b);
    }
}

/// The pipeline's training step against the model's as written: in the interpreter, and
/// on the CPU backend (which runs the pipeline's graph).
fn check_pipeline(path: &str, forward: &Graph, step: &Graph, batch: usize, int_max: i64) {
    let goal = Goal::Train(Optimizer::adamw());
    let prepared = prepare(
        forward,
        &goal,
        &RooflineTarget::cpu(),
        Some(&Options::default()),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"))
    .graph;
    check_same(&format!("{path} pipeline"), step, &prepared, batch, int_max);
    let f = feeds(step, batch, int_max);
    let want = execute(step, &f, Precision::F32).unwrap();
    let got = CpuProgram::compile(&prepared).unwrap().run(&f).unwrap();
    common::assert_runs_close(&format!("{path} pipeline on the cpu"), &got, &want, 1e-4);
}

/// Forward and training step, each as written and decomposed, and the pipeline.
fn check_model(path: &str, sets: &[(&str, &str)], batch: usize, int_max: i64) {
    let forward = load(path, sets);
    let step = training_step(&forward, &Optimizer::adamw()).expect("training step");
    check_pipeline(path, &forward, &step, batch, int_max);
    for (kind, g) in [("forward", forward), ("training step", step)] {
        check_graph(&format!("{path} {kind}"), &g, batch, int_max);
        check_graph(
            &format!("{path} {kind}, decomposed"),
            &decompose(&g),
            batch,
            int_max,
        );
    }
}

#[test]
fn mlp_smelt() {
    check_model("examples/mlp.smelt", &[], 2, 10);
}

#[test]
fn mlp_sir() {
    check_model("examples/mlp.sir", &[], 2, 10);
}

#[test]
fn gpt() {
    let sets = [
        ("d_model", "16"),
        ("heads", "2"),
        ("head_dim", "8"),
        ("d_mlp", "32"),
        ("layers", "2"),
        ("vocab", "32"),
    ];
    check_model("examples/gpt.smelt", &sets, 1, 32);
}

#[test]
fn moe() {
    check_model("examples/moe.smelt", &common::SMALL_MOE, 6, 1);
}

#[test]
fn llama() {
    check_model("examples/llama.smelt", &common::SMALL_LLAMA, 2, 32);
}

/// The optimised GPT training step needs no more memory than the step as written: the
/// optimiser emits values in autodiff's order, so each weight gradient is computed soon
/// after its activations, which then die (emitting update by update kept every
/// activation alive to the end: 55.5 MiB of slots instead of 44.5 at B = 8).
#[test]
fn the_optimised_gpt_step_plans_no_more_memory_than_the_step_as_written() {
    let forward = load("examples/gpt.smelt", &[]);
    let goal = Goal::Train(Optimizer::adamw());
    let peak = |options: Option<&Options>| {
        let g = prepare(&forward, &goal, &RooflineTarget::cpu(), options)
            .unwrap()
            .graph;
        let mut bindings = smelt_compiler::ir::Bindings::new();
        bindings.insert("B".to_string(), 8);
        MemoryPlan::new(&schedule(&g), &bindings).live_peak_bytes()
    };
    let (optimised, as_written) = (peak(Some(&Options::default())), peak(None));
    assert!(
        optimised <= as_written,
        "live peak {optimised} B optimised, {as_written} B as written"
    );
}

/// A graph too big for one e-graph is optimised in windows; the repeated layers' windows
/// reuse one optimisation. A small GPT training step (24 layers) cut into windows of 1024
/// ops: the windowed result computes what the step as written computes and costs
/// exactly what one e-graph over the whole step gives; reuse produces the very graph
/// that optimising every window on its own does; the interface and output names stay.
#[test]
fn windowed_optimisation_matches_one_egraph_and_reuse_is_exact() {
    let sets = [
        ("d_model", "16"),
        ("heads", "2"),
        ("head_dim", "8"),
        ("d_mlp", "32"),
        ("vocab", "32"),
        ("layers", "24"),
    ];
    let forward = load("examples/gpt.smelt", &sets);
    let step = decompose(&training_step(&forward, &Optimizer::adamw()).unwrap());
    let cpu = RooflineTarget::cpu();
    let with = |window: usize, reuse_windows: bool| {
        let options = Options {
            window,
            reuse_windows,
            ..Options::default()
        };
        optimize(&step, &cpu, &options).unwrap()
    };
    let (_, whole_report) = with(0, true);
    let (windowed, report) = with(1024, true);
    let (separately, separate_report) = with(1024, false);
    assert_eq!(whole_report.windows, 1);
    assert!(
        report.windows >= 5 && report.windows_reused >= 2,
        "{report}"
    );
    assert_eq!(separate_report.windows_reused, 0);
    assert_eq!(
        smelt_compiler::ir::text::print(&windowed),
        smelt_compiler::ir::text::print(&separately)
    );
    // Equal but for the order the estimate's terms are summed in. (The programs may
    // differ in ties: which operand of a product is transposed, a free reshape.)
    let (a, b) = (report.after.seconds, whole_report.after.seconds);
    assert!(
        (a - b).abs() <= 1e-12 * b,
        "{a} windowed, {b} whole:\n{report}"
    );
    assert_eq!(report.after.work.bytes, whole_report.after.work.bytes);
    let interface = |g: &Graph| -> Vec<String> {
        g.values
            .iter()
            .filter(|v| !matches!(v.def, smelt_compiler::ir::Def::Node { .. }))
            .chain(g.outputs.iter().map(|&o| g.value(o)))
            .map(|v| format!("{} {}", v.name, v.ty))
            .collect()
    };
    assert_eq!(interface(&windowed), interface(&step));
    check_same("gpt step, windowed", &step, &windowed, 1, 32);
}
