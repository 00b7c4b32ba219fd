//! Timing of the CPU grouped products (`cpu/routing.rs`) at the shapes of benchmark W4
//! (2048 routed rows, 8 experts, 256 ↔ 512), each op alone. Ignored by default; run in
//! release, on a quiet machine:
//! `cargo test --release -p smelt-runtime --test routing_speed -- --ignored --nocapture`.

mod common;

use smelt_compiler::ir::{text, DType};
use smelt_runtime::cpu::{CpuProgram, Resident};
use smelt_runtime::{params, Tensor};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ROWS: usize = 2048;
const EXPERTS: usize = 8;

/// Two distinct experts per token, token-major, as top-2 routing of a near-uniform gate
/// gives.
fn top2_groups(seed: u64) -> Tensor {
    let mut rng = common::Rng(seed);
    let mut ids = Vec::with_capacity(ROWS);
    while ids.len() < ROWS {
        let a = rng.uniform(0.0, EXPERTS as f64) as i64;
        let b = rng.uniform(0.0, EXPERTS as f64) as i64;
        if a != b {
            ids.extend([a, b]);
        }
    }
    Tensor::from_i64(DType::I64, vec![ROWS], ids)
}

#[test]
#[ignore]
fn grouped_products_at_w4_shapes() {
    let e = EXPERTS;
    for (name, decl, op, flop) in [
        (
            "grouped_matmul 256->512",
            format!("param %x: f32[{ROWS}, 256] = uniform(-1, 1)\n  param %w: f32[{e}, 256, 512] = uniform(-1, 1)"),
            "grouped_matmul %x, %w, %g",
            ROWS * 256 * 512,
        ),
        (
            "grouped_matmul 512->256",
            format!("param %x: f32[{ROWS}, 512] = uniform(-1, 1)\n  param %w: f32[{e}, 512, 256] = uniform(-1, 1)"),
            "grouped_matmul %x, %w, %g",
            ROWS * 256 * 512,
        ),
        (
            "grouped_matmul wᵀ 256->512",
            format!("param %x: f32[{ROWS}, 256] = uniform(-1, 1)\n  param %v: f32[{e}, 512, 256] = uniform(-1, 1)\n  %w = permute %v {{perm = [0, 2, 1]}}"),
            "grouped_matmul %x, %w, %g",
            ROWS * 256 * 512,
        ),
        (
            "weight_grad 256x512",
            format!("param %x: f32[{ROWS}, 256] = uniform(-1, 1)\n  param %d: f32[{ROWS}, 512] = uniform(-1, 1)"),
            "grouped_matmul_weight_grad %x, %d, %g {groups = 8}",
            ROWS * 256 * 512,
        ),
        (
            "weight_grad 512x256",
            format!("param %x: f32[{ROWS}, 512] = uniform(-1, 1)\n  param %d: f32[{ROWS}, 256] = uniform(-1, 1)"),
            "grouped_matmul_weight_grad %x, %d, %g {groups = 8}",
            ROWS * 256 * 512,
        ),
    ] {
        // A sum as the output, so that converting the result to f64 does not count.
        let src = format!(
            "graph @t {{\n  input %g: i64[{ROWS}]\n  {decl}\n  %y = {op}\n  %s: f32[] = reduce_sum %y {{axes = [0, 1, 2]}}\n  output %s\n}}\n"
        );
        let src = if op.starts_with("grouped_matmul %") {
            src.replace("axes = [0, 1, 2]", "axes = [0, 1]")
        } else {
            src
        };
        let g = text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}")).graph;
        let p = CpuProgram::compile(&g).unwrap();
        let resident = Resident::new(&p, &params::init_params(&g, 1)).unwrap();
        let feeds = HashMap::from([("g".to_string(), top2_groups(7))]);
        let best = (0..40)
            .map(|_| {
                let t = Instant::now();
                p.run_resident(&feeds, &resident).unwrap();
                t.elapsed()
            })
            .min()
            .unwrap_or(Duration::MAX);
        let ms = best.as_secs_f64() * 1e3;
        println!(
            "{name:<28} {ms:>7.2} ms  {:>6.1} GFLOP/s",
            2.0 * flop as f64 / best.as_secs_f64() / 1e9
        );
    }
}
