//! The CPU backend runs from its memory plan: kernels that overwrite a dead operand in
//! place agree with the interpreter (tolerance as in `cpu_vs_interp.rs`:
//! |cpu − interp| ≤ 1e-4 · max(1, max|interp|)), reused buffers carry nothing from one
//! run into the next (bitwise), and a second run allocates no step buffers.

mod common;

use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::ir::{text, Bindings, DType, Graph};
use smelt_runtime::cpu::{AllocStats, CpuProgram, Resident};
use smelt_runtime::{interp, Precision, Tensor};
use std::collections::HashMap;

fn graph(body: &str) -> Graph {
    let src = format!("graph @t {{\n{body}\n}}\n");
    text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph
}

/// Steps of `p` (for `bind` as every symbol) that write in place.
fn in_place_steps(p: &CpuProgram, g: &Graph, bind: u64) -> usize {
    let bindings: Bindings = g
        .values
        .iter()
        .flat_map(|v| v.ty.dims().iter().flat_map(|d| d.syms().to_vec()))
        .map(|s| (s, bind))
        .collect();
    let plan = p.memory_plan(&bindings);
    plan.steps.iter().filter(|m| m.in_place.is_some()).count()
}

/// In-place graphs on the native code and the kernel-IR evaluator against the
/// interpreter, twice in a row on different inputs (the second run reuses buffers).
fn check_in_place(body: &str, bind: usize) {
    let g = graph(body);
    for jit in [true, false] {
        let p = CpuProgram::compile_options(&g, true, jit).unwrap();
        assert!(
            in_place_steps(&p, &g, bind as u64) > 0,
            "no in-place step:\n{}",
            p.schedule().to_text(&Bindings::new())
        );
        for seed in [3, 4] {
            let feeds = common::random_feeds(&g, seed, bind, 4);
            let want = interp::execute(&g, &feeds, Precision::F32).unwrap();
            let got = p.run(&feeds).unwrap();
            for (k, (c, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
                let what = format!("output {k} (jit: {jit}, seed {seed}) of\n{body}");
                common::assert_close(&what, c, w, 1e-4);
            }
        }
    }
}

#[test]
fn in_place_kernels_match_the_interpreter() {
    // Rows of 7: four-wide vector code and a scalar tail over the same buffer.
    check_in_place(
        "input %x: f32[B, 7]
input %w: f32[7, 7]
%a = matmul %x, %w
%b = tanh %a
%e = exp %b
%c = mul %e, %b
%y = reduce_sum %c {axes = [1]}
output %y",
        5,
    );
    // A broadcast operand next to the overwritten one, and a long row (parallel tasks).
    check_in_place(
        "input %x: f32[B, 1030]
input %w: f32[1030, 1030]
input %v: f32[1030]
%a = matmul %x, %w
%vb: f32[B, 1030] = broadcast %v {dims = [1]}
%s = sub %a, %vb
%t = mul %s, %s
%y = reduce_max %t {axes = [1]}
output %y",
        70,
    );
    // An additive epilogue written over its dead addend, then the product on top.
    check_in_place(
        "input %x: f32[B, 6]
input %w: f32[6, 6]
%a = matmul %x, %w
%b = sin %a
%p = matmul %b, %w
%c = add %p, %a
%y = reduce_sum %c {axes = [0, 1]}
output %y",
        3,
    );
    // Overwriting a buffer through a view of it (a reshape).
    check_in_place(
        "input %x: f32[B, 6]
input %w: f32[6, 6]
%a = matmul %x, %w
%r: f32[B, 2, 3] = reshape %a
%b = exp %r
%c = mul %b, %b
%y = reduce_sum %c {axes = [1, 2]}
output %y",
        3,
    );
    // Integers in place.
    check_in_place(
        "input %i: i64[B, 5]
input %j: i64[5, 5]
%a = matmul %i, %j
%b = mul %a, %a
%c = neg %b
%y = reduce_max %c {axes = [1]}
output %y",
        4,
    );
}

fn mlp_step_feeds(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let mut feeds = common::random_feeds(g, seed, 6, 10);
    feeds.insert(
        "lr".into(),
        Tensor::from_f64(DType::F32, vec![], vec![1e-3]),
    );
    feeds.insert(
        "step".into(),
        Tensor::from_f64(DType::F32, vec![], vec![2.0]),
    );
    feeds
}

#[test]
fn reused_buffers_carry_nothing_between_runs() {
    let g = common::example("examples/mlp.sir");
    let step = training_step(&g, &Optimizer::adamw()).unwrap();
    let (mut a, b) = (mlp_step_feeds(&step, 1), mlp_step_feeds(&step, 2));
    // NaN everywhere first: a kernel reading a stale element would show it.
    let x = &a["x"];
    let nan = Tensor::from_f64(
        x.dtype,
        x.shape.clone(),
        vec![f64::NAN; x.shape.iter().product()],
    );
    a.insert("x".into(), nan);
    let reused = CpuProgram::compile(&step).unwrap();
    assert!(reused.run(&a).unwrap().outputs[0].to_f64_vec()[0].is_nan());
    let again = reused.run(&b).unwrap();
    let fresh = CpuProgram::compile(&step).unwrap().run(&b).unwrap();
    assert_eq!(again.outputs, fresh.outputs);
    assert_eq!(again.updates, fresh.updates);
}

#[test]
fn a_second_run_allocates_no_step_buffers() {
    let g = common::example("examples/mlp.sir");
    let step = training_step(&g, &Optimizer::adamw()).unwrap();
    let feeds = mlp_step_feeds(&step, 5);
    let p = CpuProgram::compile(&step).unwrap();
    p.run(&feeds).unwrap();
    let first = p.last_alloc();
    assert!(
        first.temporary_bytes > 0 && first.escaping_bytes > 0,
        "{first:?}"
    );
    // Host-side runs: outputs and updates convert to tensors and leave their buffers.
    p.run(&feeds).unwrap();
    assert_eq!(p.last_alloc(), AllocStats::default());

    // A training loop: the updates live on in the resident state, and the buffers
    // they replace hold the next step's updates.
    let (held, inputs): (HashMap<_, _>, HashMap<_, _>) =
        feeds.into_iter().partition(|(name, _)| {
            step.find(name)
                .is_some_and(|id| !step.inputs().any(|i| i == id))
        });
    let p = CpuProgram::compile(&step).unwrap();
    let mut resident = Resident::new(&p, &held).unwrap();
    let mut allocated = Vec::new();
    for _ in 0..3 {
        let (_, updates) = p.run_resident(&inputs, &resident).unwrap();
        resident.apply(updates);
        allocated.push(p.last_alloc());
    }
    assert!(allocated[0].escaping_bytes > 0, "{allocated:?}");
    assert_eq!(allocated[1..], [AllocStats::default(); 2], "{allocated:?}");
}

#[test]
fn resident_steps_with_recycled_updates_match_host_steps() {
    // Three AdamW steps through the resident loop (updates written into the buffers of
    // the state two steps back) against three host-side runs.
    let g = common::example("examples/mlp.sir");
    let step = training_step(&g, &Optimizer::adamw()).unwrap();
    let feeds = mlp_step_feeds(&step, 9);
    let (held, inputs): (HashMap<_, _>, HashMap<_, _>) =
        feeds.clone().into_iter().partition(|(name, _)| {
            step.find(name)
                .is_some_and(|id| !step.inputs().any(|i| i == id))
        });
    let p = CpuProgram::compile(&step).unwrap();
    let mut resident = Resident::new(&p, &held).unwrap();
    let mut host = feeds;
    for _ in 0..3 {
        let (_, updates) = p.run_resident(&inputs, &resident).unwrap();
        resident.apply(updates);
        let run = p.run(&host).unwrap();
        host.extend(run.updates);
    }
    for (name, t) in resident.to_tensors() {
        assert_eq!(t, host[&name], "%{name}");
    }
}
