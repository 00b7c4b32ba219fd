//! Benchmark workload W4 (`examples/bench/moe_w4.smelt`, sparse routing with
//! `grouped_matmul`) computes what its dense formulation (`moe_w4_dense.smelt`) computes,
//! and reproduces the peers' float64 reference on their fixed data when that data is
//! present (`$PEERS_HOME/data`, default `~/.cache/smelt-peers/data`; see
//! ../shared/peers/README.md). Both run forward and backward on the CPU backend.

mod common;

use smelt_compiler::autodiff::{differentiate, find_loss};
use smelt_compiler::ir::Graph;
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::{io, params, Tensor};
use std::collections::HashMap;

const EXPERTS: usize = 8;

/// The loss and the gradient of every parameter, by name, on the CPU backend.
fn loss_and_gradients(g: &Graph, feeds: &HashMap<String, Tensor>) -> (f64, Vec<(String, Tensor)>) {
    let loss = find_loss(g).unwrap();
    let params: Vec<_> = g.params().collect();
    let grad = differentiate(g, loss, &params).unwrap().graph;
    let out = CpuProgram::compile(&grad)
        .unwrap()
        .run(feeds)
        .unwrap()
        .outputs;
    let loss_at = g.outputs.iter().position(|&o| o == loss).unwrap();
    let grads = params
        .iter()
        .zip(&out[g.outputs.len()..])
        .map(|(&p, t)| (g.value(p).name.clone(), t.clone()))
        .collect();
    (out[loss_at].to_f64_vec()[0], grads)
}

/// Rows `e` of a `[E, ...]` tensor, as the dense model's per-expert parameter.
fn expert_slice(t: &Tensor, e: usize) -> Tensor {
    let inner: usize = t.shape[1..].iter().product();
    let values = t.to_f64_vec()[e * inner..(e + 1) * inner].to_vec();
    Tensor::from_f64(t.dtype, t.shape[1..].to_vec(), values)
}

/// The dense model's feeds from the sparse model's (`w1[e]` is `experts.e.w1`).
fn dense_feeds(sparse: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    let mut feeds = HashMap::new();
    for (name, t) in sparse {
        if ["w1", "b1", "w2", "b2"].contains(&name.as_str()) {
            for e in 0..EXPERTS {
                feeds.insert(format!("experts.{e}.{name}"), expert_slice(t, e));
            }
        } else {
            feeds.insert(name.clone(), t.clone());
        }
    }
    feeds
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

#[test]
fn sparse_and_dense_w4_agree() {
    let sparse = common::load_example("examples/bench/moe_w4.smelt", &[]);
    let dense = common::load_example("examples/bench/moe_w4_dense.smelt", &[]);
    let mut feeds = params::init_params(&sparse, 3);
    for id in sparse.inputs() {
        feeds.insert(
            sparse.value(id).name.clone(),
            common::random_input(&sparse, id, 96, 1),
        );
    }
    let (loss_s, grads_s) = loss_and_gradients(&sparse, &feeds);
    let (loss_d, grads_d) = loss_and_gradients(&dense, &dense_feeds(&feeds));
    assert!(relative(loss_s, loss_d) < 1e-5, "loss {loss_s} vs {loss_d}");
    let dense_grads: HashMap<String, Tensor> = grads_d.into_iter().collect();
    for (name, g) in &grads_s {
        let pieces: Vec<(String, Tensor)> = if name == "wg" {
            vec![(name.clone(), g.clone())]
        } else {
            (0..EXPERTS)
                .map(|e| (format!("experts.{e}.{name}"), expert_slice(g, e)))
                .collect()
        };
        for (dense_name, got) in pieces {
            let want = dense_grads[&dense_name].to_f64_vec();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
            let err = got
                .to_f64_vec()
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            // Relative to the gradient's own scale (the gradients are ~1e-3).
            assert!(
                err <= 1e-4 * scale,
                "gradient of {dense_name}: error {err}, scale {scale}"
            );
        }
    }
}

#[test]
fn w4_matches_the_peers_reference() {
    let Some(data) = common::peers_data() else {
        return;
    };
    let g = common::load_example("examples/bench/moe_w4.smelt", &[]);
    let feeds: HashMap<String, Tensor> = common::peer_files("moe")
        .into_iter()
        .map(|(file, name)| (name, io::read_npy(&data.join(file)).unwrap()))
        .collect();
    let (loss, grads) = loss_and_gradients(&g, &feeds);
    // The float64 NumPy reference; every f32 peer is within 6.4e-7 of it.
    assert!(relative(loss, 1.0190646949991204) < 1e-6, "loss {loss}");
    let norm = grads
        .iter()
        .flat_map(|(_, t)| t.to_f64_vec())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt();
    // The peers' global gradient norm, given to 6 digits.
    assert!(relative(norm, 0.0290665) < 2e-5, "gradient norm {norm}");
}
