//! Timing of the CPU row kernels (`cpu/rows.rs`) against the decomposition they
//! replace (fused pointwise kernels around library reductions), op by op. Ignored by
//! default; run in release, on a quiet machine:
//! `cargo test --release -p smelt-runtime --test row_speed -- --ignored --nocapture`.

mod common;

use smelt_compiler::ir::text;
use smelt_compiler::passes::decompose;
use smelt_compiler::schedule::schedule_graph;
use smelt_runtime::cpu::CpuProgram;
use std::time::{Duration, Instant};

/// The fastest of `n` runs.
fn fastest(
    p: &CpuProgram,
    feeds: &std::collections::HashMap<String, smelt_runtime::Tensor>,
    n: usize,
) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            p.run(feeds).unwrap();
            t.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
#[ignore]
fn row_kernels_against_their_decomposition() {
    let (rows, len) = (4096, 512);
    let t = format!("f32[{rows}, {len}]");
    let decl = format!(
        "input %x: {t}\ninput %dy: {t}\ninput %g: f32[{len}]\ninput %b: f32[{len}]\ninput %t: i32[{rows}]\ninput %d: f32[]\n"
    );
    for op in [
        "softmax %x {axis = 1}",
        "log_softmax %x {axis = 1}",
        "layer_norm %x, %g, %b {eps = 1e-5}",
        "rms_norm %x, %g {eps = 1e-6}",
        "cross_entropy %x, %t",
        "softmax_grad %x, %dy {axis = 1}",
        "log_softmax_grad %x, %dy {axis = 1}",
        "layer_norm_grad %x, %g, %dy {eps = 1e-5}",
        "rms_norm_grad %x, %g, %dy {eps = 1e-6}",
        "cross_entropy_grad %x, %t, %d",
    ] {
        let g = text::parse(&format!("graph @t {{\n{decl}%y = {op}\noutput %y\n}}\n"))
            .unwrap()
            .graph;
        let feeds = common::random_feeds(&g, 1, 1, len as i64);
        let row = CpuProgram::compile(&g).unwrap();
        let decomposed = CpuProgram::from_schedule(schedule_graph(&decompose(&g)), true).unwrap();
        // Alternate, so that neither gets the allocator's or the caches' first turn.
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        for _ in 0..10 {
            b = b.min(fastest(&decomposed, &feeds, 2));
            a = a.min(fastest(&row, &feeds, 2));
        }
        println!(
            "{:<20} row kernel {:>7.2} ms   decomposition {:>7.2} ms   ({:.1}x)",
            op.split(' ').next().unwrap(),
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
