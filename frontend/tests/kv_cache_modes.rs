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
            "block_table i32[B, pages]",
            "cache.0.k f32[blocks, 2, 16, 32]",
            "cache.0.v f32[blocks, 2, 16, 32]",
            "cache.1.k f32[blocks, 2, 16, 32]",
            "cache.1.v f32[blocks, 2, 16, 32]",
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

/// The prefill and decode modes in the reference interpreter, on the small Llama with
/// random weights: a decode step after a prefill gives the logits of the whole
/// sequence run at once, and two sequences of different lengths decoded in one batch
/// (in one paged cache, `past_len` per row) give each one's own logits.
#[test]
fn decode_steps_match_whole_sequences_and_ragged_batches() {
    use smelt_compiler::ir::DType;
    use smelt_runtime::{interp, params, Precision, Tensor};
    let (prefill, decode, infer) = (
        lowered(Mode::Prefill),
        lowered(Mode::Decode),
        lowered(Mode::Infer),
    );
    let weights = params::init_params(&infer, 7);
    let run = |g: &smelt_compiler::ir::Graph, extra: Vec<(String, Tensor)>| {
        let mut feeds = weights.clone();
        feeds.extend(extra);
        let out = interp::run(g, &feeds, Precision::F64).unwrap();
        g.outputs
            .iter()
            .map(|&o| g.value(o).name.clone())
            .zip(out)
            .collect::<HashMap<_, _>>()
    };
    let tokens = |rows: &[&[i64]]| {
        let t = rows[0].len();
        Tensor::from_i64(DType::I32, vec![rows.len(), t], rows.concat())
    };
    // Sequence a spans two cache blocks.
    let a: &[i64] = &[5, 17, 200, 3, 99].repeat(4);
    let b: &[i64] = &[42, 8, 130];
    let (next_a, next_b) = (61, 7);
    let cache_a = run(&prefill, vec![("tokens".into(), tokens(&[a]))]);
    let cache_b = run(&prefill, vec![("tokens".into(), tokens(&[b]))]);
    let step = |rows: &[i64], lens: &[i64], caches: &[&HashMap<String, Tensor>]| {
        let mut extra = vec![
            (
                "tokens".to_string(),
                Tensor::from_i64(DType::I32, vec![rows.len(), 1], rows.to_vec()),
            ),
            (
                "past_len".to_string(),
                Tensor::from_i64(DType::I32, vec![lens.len()], lens.to_vec()),
            ),
        ];
        // The paged cache: sequence `i` holds blocks in order after those of the ones
        // before it, its table row lists them, padded with block 0; positions past a
        // sequence's length hold 1e3 (masked out).
        const BLOCK: usize = 16;
        let blocks: Vec<usize> = lens.iter().map(|&l| (l as usize).div_ceil(BLOCK)).collect();
        let pages = *blocks.iter().max().unwrap();
        let mut table = Vec::new();
        let mut first = 0;
        for &b in &blocks {
            table.extend((0..pages).map(|p| if p < b { (first + p) as i64 } else { 0 }));
            first += b;
        }
        extra.push((
            "block_table".to_string(),
            Tensor::from_i64(DType::I32, vec![lens.len(), pages], table),
        ));
        for n in 0..2 {
            for part in ["k", "v"] {
                let mut values = Vec::new();
                for (cache, &b) in caches.iter().zip(&blocks) {
                    let t = &cache[&format!("present.{n}.{part}")];
                    let len = t.shape[2];
                    for block in 0..b {
                        for h in 0..2 {
                            for i in 0..BLOCK {
                                let p = block * BLOCK + i;
                                for d in 0..32 {
                                    values.push(if p < len {
                                        t.floats()[(h * len + p) * 32 + d]
                                    } else {
                                        1e3
                                    });
                                }
                            }
                        }
                    }
                }
                let shape = vec![first, 2, BLOCK, 32];
                extra.push((
                    format!("cache.{n}.{part}"),
                    Tensor::from_f64(DType::F32, shape, values),
                ));
            }
        }
        run(&decode, extra)["logits"].floats().to_vec()
    };
    let alone_a = step(&[next_a], &[20], &[&cache_a]);
    let alone_b = step(&[next_b], &[3], &[&cache_b]);
    let whole = run(
        &infer,
        vec![("tokens".into(), tokens(&[&[a, &[next_a]].concat()]))],
    );
    let last = &whole["logits"].floats()[20 * 256..];
    // The interpreter runs in f64, but the cache passes through f32 tensors between
    // the runs (the whole-sequence run keeps its keys in f64): 1e-6 covers that.
    let close = |x: &[f64], y: &[f64]| {
        x.iter()
            .zip(y)
            .all(|(p, q)| (p - q).abs() <= 1e-6 * (1.0 + q.abs()))
    };
    assert!(
        close(&alone_a, last),
        "a decode step gives the whole sequence's last logits"
    );
    let batched = step(&[next_a, next_b], &[20, 3], &[&cache_a, &cache_b]);
    assert!(close(&batched[..256], &alone_a) && close(&batched[256..], &alone_b));
}

/// The last-token modes pick each row's last new token before the head, so the head's
/// product reads one row per sequence, and their logits equal the every-position
/// modes' logits at those tokens (a padded batch of two prompts, in the interpreter).
#[test]
fn last_token_modes_give_each_rows_last_logits_from_one_head_row() {
    use smelt_compiler::ir::{DType, Def, Op};
    use smelt_runtime::{interp, params, Precision, Tensor};
    for mode in [Mode::PrefillLast, Mode::DecodeLast] {
        let g = lowered(mode);
        let logits = g.outputs[0];
        assert_eq!(
            format!("{} {}", g.value(logits).name, g.ty(logits)),
            "logits f32[B, 1, 256]"
        );
        assert_eq!(g.ty(g.find("last_token").unwrap()).to_string(), "i32[B]");
        let head = g.find("head").unwrap();
        let head_rows: Vec<String> = g
            .values
            .iter()
            .filter_map(|v| match &v.def {
                Def::Node {
                    op: Op::MatMul,
                    operands,
                } if operands[1] == head => Some(g.ty(operands[0]).to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(head_rows, ["f32[B, 128]"], "{mode:?}");
    }
    let (every, last) = (lowered(Mode::Prefill), lowered(Mode::PrefillLast));
    let weights = params::init_params(&lowered(Mode::Infer), 11);
    // Row 1 is 3 tokens long, padded to 5 with its last token.
    let tokens = Tensor::from_i64(
        DType::I32,
        vec![2, 5],
        vec![5, 17, 200, 3, 99, 42, 8, 130, 130, 130],
    );
    let run = |g: &smelt_compiler::ir::Graph, extra: Vec<(String, Tensor)>| {
        let mut feeds = weights.clone();
        feeds.insert("tokens".into(), tokens.clone());
        feeds.extend(extra);
        interp::run(g, &feeds, Precision::F64).unwrap()[0]
            .floats()
            .to_vec()
    };
    let all = run(&every, vec![]);
    let picked = run(
        &last,
        vec![(
            "last_token".into(),
            Tensor::from_i64(DType::I32, vec![2], vec![4, 2]),
        )],
    );
    for (row, at) in [(0, 4), (1, 2)] {
        let want = &all[(row * 5 + at) * 256..][..256];
        let got = &picked[row * 256..][..256];
        assert!(
            want.iter()
                .zip(got)
                .all(|(w, g)| (w - g).abs() <= 1e-12 * (1.0 + w.abs())),
            "row {row}"
        );
    }
}
