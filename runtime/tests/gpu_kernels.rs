//! GPU kernels, family by family, checked without a GPU: each graph is lowered to
//! kernels, run in the kernel-IR evaluator (grid, blocks, lockstep threads, shared
//! memory, barriers, race checks) with the SM plan's grids, and compared with the
//! reference interpreter on fresh random inputs; the PTX of every kernel is assembled
//! by `ptxas -arch=sm_90` (required in CI; skipped with a printed reason elsewhere).
//!
//! `SMELT_GPU_TEST_DEVICE=cuda` runs the same graphs on a real GPU instead of the
//! evaluator (`scripts/gpu-check.sh` does; it needs a 132-SM Hopper GPU).
//!
//! Tolerance: |gpu − interp| ≤ tol · max(1, max|interp|), tol = 1e-4 for f32 (f32
//! accumulation order, fast `ex2`/`lg2`-based functions), 2e-2 for bf16 (8-bit
//! mantissas; the tensor-core path accumulates in f32 and rounds once).

mod common;

use smelt_compiler::gpu::{ptx, ptxas, GpuProgram, GpuTarget};
use smelt_compiler::ir::{text, Graph};
use smelt_runtime::engine::{Device, Engine, GpuOptions};
use smelt_runtime::interp::Execution;
use smelt_runtime::{gpusim, interp, Precision, Tensor};
use std::collections::HashMap;

/// Assembles every kernel of `g` (bound by `feeds`) with ptxas, if it is available.
fn assemble(g: &Graph, feeds: &HashMap<String, Tensor>) {
    let Some(ptxas) = ptxas::find_for_test(&g.name) else {
        return;
    };
    let bindings = interp::bind_shapes(g, feeds).unwrap();
    let program = GpuProgram::new(&smelt_compiler::gpu::schedule(g), &bindings).unwrap();
    let kernels = program.kernels();
    let module = ptx::module(&kernels);
    let reports = ptxas::assemble(&ptxas, &module, ptx::arch(&kernels))
        .unwrap_or_else(|e| panic!("ptxas rejected the module:\n{e}\n{module}"));
    assert_eq!(reports.len(), kernels.len(), "one report per kernel");
}

/// Runs on the GPU path: the evaluator, or a real GPU when asked for.
fn run_gpu(g: &Graph, feeds: &HashMap<String, Tensor>, comm_sms: u32) -> Execution {
    let got = match std::env::var("SMELT_GPU_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            let options = GpuOptions {
                target: "h200",
                comm_sms,
            };
            Engine::new(g, Device::Cuda(options))
                .unwrap_or_else(|e| panic!("SMELT_GPU_TEST_DEVICE=cuda: {e}"))
                .run(feeds)
        }
        Ok(other) if other != "gpusim" => {
            panic!("SMELT_GPU_TEST_DEVICE={other}: use cuda or gpusim")
        }
        _ => gpusim::execute(g, feeds, &GpuTarget::h800(), comm_sms),
    };
    got.unwrap_or_else(|e| panic!("{e}\n{}", text::print(g)))
}

fn compare(g: &Graph, feeds: &HashMap<String, Tensor>, tol: f64) {
    let want = interp::execute(g, feeds, Precision::F32).unwrap();
    // The plan's grids (capped at the compute SMs), and a grid of 1 block, which makes
    // every grid-stride loop take many turns.
    for comm_sms in [20, 130] {
        let got = run_gpu(g, feeds, comm_sms);
        for (k, (c, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
            common::assert_close(
                &format!("output {k} (comm_sms {comm_sms}) of\n{}", text::print(g)),
                c,
                w,
                tol,
            );
        }
        for ((name, c), (_, w)) in got.updates.iter().zip(&want.updates) {
            common::assert_close(&format!("update of %{name}"), c, w, tol);
        }
    }
    assemble(g, feeds);
}

fn check_tol(body: &str, bind: usize, tol: f64) {
    let src = format!("graph @t {{\n{body}\n}}\n");
    let g = text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph;
    for seed in [1, 2] {
        compare(&g, &common::random_feeds(&g, seed, bind, 4), tol);
    }
}

/// The kernels the GPU path generates for a graph body, with `B` bound to `batch`.
fn kernel_names(body: &str, batch: u64) -> Vec<String> {
    let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
        .unwrap()
        .graph;
    let bindings = [("B".to_string(), batch)].into();
    let program = GpuProgram::new(&smelt_compiler::gpu::schedule(&g), &bindings).unwrap();
    program.kernels().into_iter().map(|k| k.name).collect()
}

fn check(body: &str) {
    check_tol(body, 3, 1e-4);
}

#[test]
fn fused_elementwise_kernels() {
    for op in common::UNARY_OPS {
        check(&format!("input %x: f32[B, 8]\n%y = {op} %x\noutput %y"));
    }
    for op in common::POSITIVE_UNARY_OPS {
        check(&format!(
            "input %x: f32[B, 5]\n%a = abs %x\n%y = {op} %a\noutput %y"
        ));
    }
    for op in common::BINARY_OPS {
        check(&format!(
            "input %a: f32[B, 5]\ninput %b: f32[B, 5]\n%y = {op} %a, %b\noutput %y"
        ));
    }
    check("input %a: i32[7]\ninput %b: i32[7]\n%c = add %a, %b\n%d = mul %c, %a\n%y = neg %d\noutput %y");
    check("input %a: i64[6]\ninput %b: i64[6]\n%c = max %a, %b\n%y = sub %c, %b\noutput %y");
    check("input %a: f32[6]\ninput %b: f32[6]\n%c = gt %a, %b\n%y = select %c, %a, %b\noutput %y");
    check("input %a: f32[6]\n%i: i32[6] = cast %a\n%y: f32[6] = cast %i\n%z: bool[6] = cast %a\noutput %y, %z");
    // Broadcasts and permutes inside one kernel; rows of 8 take the 16-byte path.
    check("input %x: f32[B, 8]\ninput %b: f32[8]\n%bb: f32[B, 8] = broadcast %b {dims = [1]}\n%y = add %x, %bb\n%t = permute %y {perm = [1, 0]}\noutput %t");
    check("%y: i32[3, 4] = iota {axis = 1}\n%z: f32[3, 4] = cast %y\noutput %z");
}

#[test]
fn fused_elementwise_uses_vector_access_when_rows_allow() {
    let g = text::parse("graph @t {\n input %x: f32[4, 8]\n %y = exp %x\n output %y\n}\n")
        .unwrap()
        .graph;
    let program = GpuProgram::new(&smelt_compiler::gpu::schedule(&g), &Default::default()).unwrap();
    let module = ptx::module(&program.kernels());
    assert!(module.contains("ld.global.v4.f32"), "{module}");
    assert!(module.contains("st.global.v4.f32"), "{module}");
    let g = text::parse("graph @t {\n input %x: f32[4, 7]\n %y = exp %x\n output %y\n}\n")
        .unwrap()
        .graph;
    let program = GpuProgram::new(&smelt_compiler::gpu::schedule(&g), &Default::default()).unwrap();
    let module = ptx::module(&program.kernels());
    assert!(
        !module.contains(".v4."),
        "rows of 7 cannot use 16-byte access:\n{module}"
    );
}

#[test]
fn row_reduction_kernels() {
    for (axes, ty) in [
        ("[1]", "f32[B, 4]"),
        ("[0]", "f32[5, 4]"),
        ("[0, 2]", "f32[5]"),
        ("[0, 1, 2]", "f32[]"),
    ] {
        for op in ["reduce_sum", "reduce_max", "reduce_mean"] {
            check(&format!(
                "input %x: f32[B, 5, 4]\n%y: {ty} = {op} %x {{axes = {axes}}}\noutput %y"
            ));
        }
    }
    // A few long rows: a block per row, warps meeting in shared memory.
    for op in ["reduce_sum", "reduce_max"] {
        check_tol(
            &format!("input %x: f32[2, 5000]\n%y: f32[2] = {op} %x {{axes = [1]}}\noutput %y"),
            1,
            1e-4,
        );
    }
    check("input %x: i64[B, 6]\n%y: i64[B] = reduce_sum %x {axes = [1]}\noutput %y");
    // The composites that normalise rows are one fused kernel each.
    let norms = "input %x: f32[B, 70]\ninput %g: f32[70]\ninput %b: f32[70]\n%y = layer_norm %x, %g, %b {eps = 1e-5}\n%z = rms_norm %x, %g {eps = 1e-6}\n%s = softmax %x {axis = 1}\n%l = log_softmax %x {axis = 1}\noutput %y, %z, %s, %l";
    assert_eq!(
        kernel_names(norms, 3).len(),
        4,
        "{:?}",
        kernel_names(norms, 3)
    );
    check(norms);
    check_tol("input %x: bf16[5, 40]\ninput %g: bf16[40]\n%z = rms_norm %x, %g {eps = 1e-6}\n%s = softmax %x {axis = 1}\noutput %z, %s", 1, 2e-2);
    // Cross-entropy: one kernel, rows summed atomically; labels 5 and 6 are outside
    // the 5 classes and pick nothing, as in the decomposition.
    let ce = "input %x: f32[B, 7, 5]\ninput %t: i32[B, 7]\n%l = cross_entropy %x, %t\noutput %l";
    assert_eq!(kernel_names(ce, 3).len(), 1, "{:?}", kernel_names(ce, 3));
    let src = format!("graph @t {{\n{ce}\n}}\n");
    let g = text::parse(&src).unwrap().graph;
    for seed in [3, 4] {
        compare(&g, &common::random_feeds(&g, seed, 3, 7), 1e-4);
    }
    // Along another axis, softmax is decomposed (reductions and pointwise kernels).
    check("input %x: f32[B, 6]\n%y = softmax %x {axis = 1}\n%z = log_softmax %x {axis = 0}\noutput %y, %z");
    check("input %x: f32[B, 6]\ninput %g: f32[6]\ninput %b: f32[6]\n%y = layer_norm %x, %g, %b {eps = 1e-5}\n%z = rms_norm %x, %g {eps = 1e-6}\noutput %y, %z");
}

#[test]
fn matmul_kernels() {
    check("input %a: f32[2, B, 7]\ninput %b: f32[2, 7, 5]\n%y = matmul %a, %b\noutput %y");
    check("input %a: f32[70, 33]\ninput %b: f32[33, 65]\n%y = matmul %a, %b\noutput %y");
    // Transposes folded into the operand loads.
    check("input %a: f32[9, B]\ninput %b: f32[5, 9]\n%at = permute %a {perm = [1, 0]}\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %at, %bt\noutput %y");
    check_tol("input %a: bf16[2, 40, 20]\ninput %b: bf16[2, 40, 24]\n%at = permute %a {perm = [0, 2, 1]}\n%y = matmul %at, %b\noutput %y", 1, 2e-2);
    // Tensor cores: bf16 and f16 inputs, f32 accumulation; edges are zero-filled.
    check_tol(
        "input %a: bf16[70, 40]\ninput %b: bf16[40, 72]\n%y = matmul %a, %b\noutput %y",
        1,
        2e-2,
    );
    check_tol(
        "input %a: f16[2, 16, 32]\ninput %b: f16[2, 32, 8]\n%y = matmul %a, %b\noutput %y",
        1,
        2e-2,
    );
}

#[test]
fn movement_and_indexing_kernels() {
    let x = "input %x: f32[B, 5, 4]\n";
    check(&format!("{x}%y: f32[B, 20] = reshape %x\noutput %y"));
    check(&format!(
        "{x}%y = slice %x {{axis = 1, start = 1, end = 5, step = 2}}\noutput %y"
    ));
    check(&format!("{x}%y = concat %x, %x {{axis = 2}}\noutput %y"));
    check(&format!(
        "{x}%y = pad %x {{axis = 1, low = 2, high = 1, value = -1.5}}\noutput %y"
    ));
    check("input %t: f32[4, 3]\ninput %i: i32[B, 2]\n%y = gather %t, %i {axis = 0}\noutput %y");
    check("input %t: f32[3, 4]\ninput %i: i64[5]\n%y = gather %t, %i {axis = 1}\noutput %y");
    check("input %t: f32[4, 3]\ninput %i: i32[B]\ninput %u: f32[B, 3]\n%y = scatter_add %t, %i, %u {axis = 0}\noutput %y");
}

#[test]
fn routing_kernels() {
    check("input %x: f32[B, 7]\n%y = top_k %x {k = 3}\noutput %y");
    // Ties go to the lower index.
    check("%x: f32[2, 4] = constant {value = [1.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]}\n%y = top_k %x {k = 4}\noutput %y");
    // Groups drawn from 0..4 of 6: groups 4 and 5 are always empty. B = 1 leaves a
    // row axis of size 1.
    let grouped = "input %x: f32[B, 5]\ninput %w: f32[6, 5, 3]\ninput %g: i32[B]\n%y = grouped_matmul %x, %w, %g\noutput %y";
    check(grouped);
    check_tol(grouped, 1, 1e-4);
    check("input %x: f32[B, 5]\ninput %d: f32[B, 3]\ninput %g: i64[B]\n%y = grouped_matmul_weight_grad %x, %d, %g {groups = 6}\noutput %y");
    // The transposed weights of the backward pass.
    check("input %x: f32[B, 5]\ninput %w: f32[6, 3, 5]\ninput %g: i64[B]\n%t = permute %w {perm = [0, 2, 1]}\n%y = grouped_matmul %x, %t, %g\noutput %y");
}

#[test]
fn communication_kernels() {
    check("input %x: f32[B, 8]\n%y = all_to_all %x {axis = 0}\n%z = exp %y\n%w = all_to_all %z {axis = 0}\noutput %w");
    check("input %x: bf16[3, 5]\n%y = all_to_all %x {axis = 1}\noutput %y");
}

#[test]
fn fused_attention_kernel() {
    let causal = "input %q: f32[B, 5, 4]\ninput %k: f32[B, 5, 4]\ninput %v: f32[B, 5, 3]\n%y = attention %q, %k, %v {causal = true, scale = 0.5}\noutput %y";
    // It is one kernel, not the decomposition's matmuls and softmax.
    assert_eq!(
        kernel_names(causal, 2).len(),
        1,
        "{:?}",
        kernel_names(causal, 2)
    );
    check(causal);
    // Several key tiles (S > 32), rows that do not fill the last block, heads past 32
    // lanes, non-causal, and 16-bit inputs.
    check("input %q: f32[2, 3, 37, 40]\ninput %k: f32[2, 3, 70, 40]\ninput %v: f32[2, 3, 70, 72]\n%y = attention %q, %k, %v {causal = false, scale = 0.15}\noutput %y");
    check("input %q: f32[B, 67, 16]\ninput %k: f32[B, 67, 16]\ninput %v: f32[B, 67, 16]\n%y = attention %q, %k, %v {causal = true, scale = 0.25}\noutput %y");
    check_tol("input %q: bf16[2, 40, 32]\ninput %k: bf16[2, 40, 32]\ninput %v: bf16[2, 40, 32]\n%y = attention %q, %k, %v {causal = true, scale = 0.18}\noutput %y", 1, 2e-2);
}
