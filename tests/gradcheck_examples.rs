//! Gradient checks of every example model: autodiff against central finite differences
//! in f64 (relative error < 1e-6) on random inputs, at small sizes (`--set`) so that the
//! many forward evaluations stay fast. A few coordinates of every parameter are checked.

mod common;

use smelt_compiler::autodiff::find_loss;
use smelt_compiler::ir::Graph;
use smelt_runtime::gradcheck::{check_gradients, exact_f32};
use smelt_runtime::{params, rng, Tensor};
use std::collections::HashMap;

use common::load_example as load;

/// Parameters from their initialisers (made exact for f64 perturbation), plus random
/// inputs: floats in [-1, 1], integers in [0, int_max).
fn feeds(g: &Graph, batch: usize, int_max: i64) -> HashMap<String, Tensor> {
    let mut f: HashMap<String, Tensor> = params::init_params(g, 5)
        .into_iter()
        .map(|(n, t)| {
            // Perturb away from all-zero biases and all-one gains: the check must see
            // a generic point, not a symmetric one.
            let v = t
                .to_f64_vec()
                .iter()
                .enumerate()
                .map(|(i, x)| x + 0.5 * (rng::uniform01(9, i as u64) - 0.5))
                .collect();
            (n, exact_f32(&t.shape, v))
        })
        .collect();
    for id in g.inputs() {
        f.insert(
            g.value(id).name.clone(),
            common::random_input(g, id, batch, int_max),
        );
    }
    f
}

fn check(g: &Graph, batch: usize, int_max: i64, coords: usize) {
    let f = feeds(g, batch, int_max);
    let names: Vec<String> = g.params().map(|id| g.value(id).name.clone()).collect();
    let wrt: Vec<&str> = names.iter().map(String::as_str).collect();
    let loss = find_loss(g).unwrap();
    check_gradients(g, loss, &f, &wrt, Some(coords), 1e-5, 1e-6)
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
}

#[test]
fn mlp() {
    check(&load("examples/mlp.smelt", &[]), 2, 10, 3);
}

#[test]
fn gpt() {
    check(&load("examples/gpt.smelt", &common::SMALL_GPT), 1, 32, 2);
}

#[test]
fn moe() {
    check(&load("examples/moe.smelt", &common::SMALL_MOE), 6, 1, 3);
}

#[test]
fn llama() {
    check(
        &load("examples/llama.smelt", &common::SMALL_LLAMA),
        2,
        32,
        2,
    );
}
