//! The example models type-check, lower, dump (the text round-trips through the IR
//! parser) and run forward in the interpreter with the expected losses at init.

mod common;

use common::{load_example, run, scalar};
use smelt_compiler::ir::{text, verify};

fn check_dump_round_trips(name: &str) -> smelt_compiler::ir::Graph {
    let model = load_example(name);
    verify(&model.graph).unwrap_or_else(|e| panic!("{name}: {e}"));
    let printed = text::print(&model.graph);
    let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{name}: {e:?}\n{printed}"));
    assert_eq!(parsed.graph, model.graph, "{name} does not round-trip");
    model.graph
}

#[test]
fn mlp_loss_at_init_is_near_ln_10() {
    let graph = check_dump_round_trips("mlp.smelt");
    let out = run(&graph, 2, |_| 10);
    let loss = scalar(&out["loss"]);
    assert!((loss - 10f64.ln()).abs() < 0.1, "loss {loss}");
    assert_eq!(out["logits"].shape, vec![2, 10]);
}

#[test]
fn gpt_matches_w2_and_its_loss_at_init_is_near_ln_512() {
    let graph = check_dump_round_trips("gpt.smelt");
    let params: Vec<_> = graph.params().map(|p| graph.value(p)).collect();
    // 5 top-level parameters and 12 per layer, named like the W2 data (`lL_X` -> `layers.L.X`).
    assert_eq!(params.len(), 5 + 2 * 12);
    let wqkv = graph.find("layers.1.wqkv").expect("fused qkv weight");
    assert_eq!(graph.ty(wqkv).to_string(), "f32[256, 768]");
    assert!(graph.find("layers.0.bqkv").is_some());
    let out = run(&graph, 1, |_| 512);
    let loss = scalar(&out["loss"]);
    assert!((loss - 512f64.ln()).abs() < 0.1, "loss {loss}");
}

#[test]
fn moe_routes_each_token_to_two_experts_with_normalised_gates() {
    let graph = check_dump_round_trips("moe.smelt");
    assert!(graph.find("experts.7.w2").is_some() && graph.find("shared.w1").is_some());
    let out = run(&graph, 4, |_| 0);
    let gates = out["gates"].to_f64_vec();
    assert_eq!(out["gates"].shape, vec![4, 8]);
    for row in gates.chunks(8) {
        assert_eq!(row.iter().filter(|g| **g != 0.0).count(), 2, "{row:?}");
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    assert!(scalar(&out["loss"]).is_finite());
    assert_eq!(out["y"].shape, vec![4, 256]);
}

#[test]
fn llama_loss_at_init_is_near_ln_vocab() {
    let graph = check_dump_round_trips("llama.smelt");
    assert!(graph.find("layers.1.attn.wk").is_some());
    let out = run(&graph, 4, |_| 256);
    let loss = scalar(&out["loss"]);
    assert!((loss - 256f64.ln()).abs() < 0.1, "loss {loss}");
}
