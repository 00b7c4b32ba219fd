//! The language's prefill and decode modes: the interfaces a KV-cache decoder relies on.

use smelt_frontend::lang::{compile_for, Mode};
use std::collections::HashMap;

const LLAMA: &str = include_str!("../../examples/llama.smelt");

fn lowered(mode: Mode) -> smelt_compiler::ir::Graph {
    compile_for(LLAMA, "llama", &HashMap::new(), mode)
        .unwrap()
        .graph
}

#[test]
fn prefill_returns_logits_and_the_cache() {
    let g = lowered(Mode::Prefill);
    let outputs: Vec<String> = g
        .outputs
        .iter()
        .map(|&o| format!("{} {}", g.value(o).name, g.ty(o)))
        .collect();
    assert_eq!(
        outputs,
        [
            "logits f32[B, T, 256]",
            "present.0.k f32[B, 2, T, 32]",
            "present.0.v f32[B, 2, T, 32]",
            "present.1.k f32[B, 2, T, 32]",
            "present.1.v f32[B, 2, T, 32]"
        ]
    );
    let inputs: Vec<&str> = g.inputs().map(|i| g.value(i).name.as_str()).collect();
    assert_eq!(inputs, ["tokens"], "the labels go with the loss");
}

#[test]
fn decode_reads_the_cache_at_per_sequence_positions() {
    let g = lowered(Mode::Decode);
    let inputs: Vec<String> = g
        .inputs()
        .map(|i| format!("{} {}", g.value(i).name, g.ty(i)))
        .collect();
    assert_eq!(
        inputs,
        [
            "tokens i32[B, T]",
            "past_len i32[B]",
            "past.0.k f32[B, 2, past, 32]",
            "past.0.v f32[B, 2, past, 32]",
            "past.1.k f32[B, 2, past, 32]",
            "past.1.v f32[B, 2, past, 32]",
        ]
    );
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.value(o).name.as_str())
        .collect();
    assert_eq!(
        outputs,
        [
            "logits",
            "present.0.k",
            "present.0.v",
            "present.1.k",
            "present.1.v"
        ]
    );
}

#[test]
fn infer_drops_the_loss_and_its_labels() {
    let g = lowered(Mode::Infer);
    let outputs: Vec<&str> = g
        .outputs
        .iter()
        .map(|&o| g.value(o).name.as_str())
        .collect();
    assert_eq!(outputs, ["logits"]);
    assert!(g.find("targets").is_none());
    assert_eq!(lowered(Mode::Full).outputs.len(), 2, "loss and logits");
}

#[test]
fn a_cache_needs_causal_attention() {
    let src = LLAMA.replace("causal=true", "causal=false");
    let err = compile_for(&src, "llama", &HashMap::new(), Mode::Decode)
        .err()
        .unwrap();
    assert!(
        err.message.contains("needs causal attention"),
        "{}",
        err.message
    );
}
