//! GPU kernels, family by family, checked without a GPU: each graph is lowered to
//! kernels, run in the kernel-IR evaluator (grid, blocks, lockstep threads, shared
//! memory, barriers, race checks) with the SM plan's grids, and compared with the
//! reference interpreter on fresh random inputs; the PTX of every kernel is assembled
//! by `ptxas` for its module's architecture (`sm_90`, or `sm_90a` where a kernel uses
//! wgmma; required in CI; skipped with a printed reason elsewhere).
//!
//! `SMELT_GPU_TEST_DEVICE=cuda` runs the same graphs on a real GPU instead of the
//! evaluator (`scripts/gpu-check.sh` does; it needs a 132-SM Hopper GPU).
//!
//! Tolerance: |gpu − interp| ≤ tol · max(1, max|interp|), tol = 1e-4 for f32 (f32
//! accumulation order, fast `ex2`/`lg2`-based functions), 2e-2 for bf16 (8-bit
//! mantissas; the tensor-core path accumulates in f32 and rounds once).

mod common;

use smelt_compiler::gpu::target::Arch;
use smelt_compiler::gpu::{ptx, ptxas, GpuProgram, GpuTarget};
use smelt_compiler::ir::{text, Graph};
use smelt_runtime::cuda::CudaRunner;
use smelt_runtime::interp::Execution;
use smelt_runtime::{gpusim, interp, Precision, Tensor};
use std::collections::HashMap;

/// The program of `g` for `bindings`, with kernels limited to `arch`.
fn program(g: &Graph, bindings: &smelt_compiler::ir::Bindings, arch: Arch) -> GpuProgram {
    GpuProgram::for_arch(&smelt_compiler::gpu::schedule(g), bindings, arch).unwrap()
}

/// Assembles every kernel of `g` (symbols bound by `bindings`) with ptxas, if it is
/// available; returns ptxas's reports.
fn assemble(
    g: &Graph,
    bindings: &smelt_compiler::ir::Bindings,
    arch: Arch,
) -> Vec<ptxas::KernelReport> {
    let Some(ptxas) = ptxas::find_for_test(&g.name) else {
        return Vec::new();
    };
    let program = program(g, bindings, arch);
    let kernels = program.kernels();
    let module = ptx::module(&kernels);
    assert_eq!(ptx::arch(&kernels), program.arch.name());
    let reports = ptxas::assemble(&ptxas, &module, ptx::arch(&kernels))
        .unwrap_or_else(|e| panic!("ptxas rejected the module:\n{e}\n{module}"));
    assert_eq!(reports.len(), kernels.len(), "one report per kernel");
    reports
}

/// Runs on the GPU path: the evaluator, or a real GPU when asked for.
fn run_gpu(
    g: &Graph,
    feeds: &HashMap<String, Tensor>,
    comm_sms: u32,
    target: &GpuTarget,
) -> Execution {
    let got = match std::env::var("SMELT_GPU_TEST_DEVICE").as_deref() {
        // The test's own target, so the cases meant for `mma.sync` (an sm_90 target)
        // run it on the GPU too, not the wgmma kernel. Every target has 132 SMs.
        Ok("cuda") => CudaRunner::new(g, target.clone(), comm_sms)
            .unwrap_or_else(|e| panic!("SMELT_GPU_TEST_DEVICE=cuda: {e}"))
            .run(feeds),
        Ok(other) if other != "gpusim" => {
            panic!("SMELT_GPU_TEST_DEVICE={other}: use cuda or gpusim")
        }
        _ => gpusim::execute(g, feeds, target, comm_sms),
    };
    got.unwrap_or_else(|e| panic!("{e}\n{}", text::print(g)))
}

fn compare(g: &Graph, feeds: &HashMap<String, Tensor>, tol: f64) -> Vec<ptxas::KernelReport> {
    compare_on(&GpuTarget::h800(), g, feeds, tol)
}

fn compare_on(
    target: &GpuTarget,
    g: &Graph,
    feeds: &HashMap<String, Tensor>,
    tol: f64,
) -> Vec<ptxas::KernelReport> {
    let want = interp::execute(g, feeds, Precision::F32).unwrap();
    // The plan's grids (capped at the compute SMs), and a grid of 1 block, which makes
    // every grid-stride loop take many turns.
    for comm_sms in [20, 130] {
        let got = run_gpu(g, feeds, comm_sms, target);
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
    assemble(g, &interp::bind_shapes(g, feeds).unwrap(), target.arch)
}

fn parse(body: &str) -> Graph {
    let src = format!("graph @t {{\n{body}\n}}\n");
    text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph
}

/// Checks `body` on two random draws; returns ptxas's reports (empty without ptxas).
fn check_tol(body: &str, bind: usize, tol: f64) -> Vec<ptxas::KernelReport> {
    check_on(&GpuTarget::h800(), body, bind, tol)
}

fn check_on(target: &GpuTarget, body: &str, bind: usize, tol: f64) -> Vec<ptxas::KernelReport> {
    let g = parse(body);
    let mut reports = Vec::new();
    for seed in [1, 2] {
        reports = compare_on(target, &g, &common::random_feeds(&g, seed, bind, 4), tol);
    }
    reports
}

/// The PTX module of a graph body (no symbols) with kernels limited to `arch`.
fn module(body: &str, arch: Arch) -> String {
    ptx::module(&program(&parse(body), &Default::default(), arch).kernels())
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
fn convolutions_through_their_decomposition() {
    check("input %x: f32[B, 4, 6, 6]\ninput %w: f32[6, 2, 3, 3]\n%y = conv %x, %w {strides = [2, 1], pads = [1, 1, 0, 1], dilations = [1, 1], groups = 2}\noutput %y");
}

#[test]
fn fused_elementwise_kernels() {
    for op in common::unary_ops() {
        check(&format!("input %x: f32[B, 8]\n%y = {op} %x\noutput %y"));
    }
    for op in common::positive_unary_ops() {
        check(&format!(
            "input %x: f32[B, 5]\n%a = abs %x\n%y = {op} %a\noutput %y"
        ));
    }
    for op in common::binary_ops() {
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

/// The gradients of the row composites: one kernel each, on rows shorter than a warp,
/// of a warp, not a multiple of one, and long (many turns per lane), against the
/// interpreter; ptxas assembles them without spills (registers printed).
#[test]
fn row_gradient_kernels() {
    for len in [5, 32, 70, 1000] {
        let body = format!(
            "input %y: f32[B, {len}]\ninput %dy: f32[B, {len}]\ninput %g: f32[{len}]\n\
             %s = softmax_grad %y, %dy {{axis = 1}}\n%l = log_softmax_grad %y, %dy {{axis = 1}}\n\
             %n = layer_norm_grad %y, %g, %dy {{eps = 1e-5}}\n%r = rms_norm_grad %y, %g, %dy {{eps = 1e-6}}\n\
             output %s, %l, %n, %r"
        );
        assert_eq!(
            kernel_names(&body, 3).len(),
            4,
            "{:?}",
            kernel_names(&body, 3)
        );
        check(&body);
        // Labels up to len + 1: some rows pick no class.
        let ce = format!(
            "input %x: f32[B, 7, {len}]\ninput %t: i32[B, 7]\ninput %d: f32[]\n\
             %y = cross_entropy_grad %x, %t, %d\noutput %y"
        );
        assert_eq!(kernel_names(&ce, 3).len(), 1, "{:?}", kernel_names(&ce, 3));
        let g = text::parse(&format!("graph @t {{\n{ce}\n}}\n"))
            .unwrap()
            .graph;
        for seed in [5, 6] {
            compare(&g, &common::random_feeds(&g, seed, 3, len as i64 + 2), 1e-4);
        }
        if len == 70 {
            let src =
                format!("graph @t {{\n{body}\n%c = cross_entropy_grad %y, %t, %d\noutput %c\n}}\n")
                    .replace("input %g", "input %t: i32[B]\ninput %d: f32[]\ninput %g");
            let g = text::parse(&src)
                .unwrap_or_else(|e| panic!("{e}\n{src}"))
                .graph;
            let feeds = common::random_feeds(&g, 1, 3, 4);
            for r in assemble(&g, &interp::bind_shapes(&g, &feeds).unwrap(), Arch::Sm90a) {
                println!(
                    "{}: {} registers, {} bytes spilled",
                    r.name, r.registers, r.spill_bytes
                );
                assert_eq!(r.spill_bytes, 0, "{} spills", r.name);
            }
        }
    }
    check_tol("input %y: bf16[5, 40]\ninput %dy: bf16[5, 40]\ninput %g: bf16[40]\n%s = softmax_grad %y, %dy {axis = 1}\n%r = rms_norm_grad %y, %g, %dy {eps = 1e-6}\noutput %s, %r", 1, 2e-2);
    // Along another axis, the gradient is decomposed.
    check("input %y: f32[B, 6]\ninput %dy: f32[B, 6]\n%s = softmax_grad %y, %dy {axis = 0}\noutput %s");
}

#[test]
fn matmul_kernels() {
    check("input %a: f32[2, B, 7]\ninput %b: f32[2, 7, 5]\n%y = matmul %a, %b\noutput %y");
    check("input %a: f32[70, 33]\ninput %b: f32[33, 65]\n%y = matmul %a, %b\noutput %y");
    // Transposes folded into the operand loads.
    check("input %a: f32[9, B]\ninput %b: f32[5, 9]\n%at = permute %a {perm = [1, 0]}\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %at, %bt\noutput %y");
    check_tol("input %a: bf16[2, 40, 20]\ninput %b: bf16[2, 40, 24]\n%at = permute %a {perm = [0, 2, 1]}\n%y = matmul %at, %b\noutput %y", 1, 2e-2);
    // Tensor cores with `mma.sync` (a target without sm_90a): bf16 and f16 inputs, f32
    // accumulation; edges are zero-filled.
    let sm90 = GpuTarget {
        arch: Arch::Sm90,
        ..GpuTarget::h800()
    };
    let plain = "input %a: bf16[70, 40]\ninput %b: bf16[40, 72]\n%y = matmul %a, %b\noutput %y";
    let text = module(plain, Arch::Sm90);
    assert!(
        text.contains("mma.sync") && !text.contains("wgmma"),
        "{text}"
    );
    check_on(&sm90, plain, 1, 2e-2);
    check_on(
        &sm90,
        "input %a: f16[2, 16, 32]\ninput %b: f16[2, 32, 8]\n%y = matmul %a, %b\noutput %y",
        1,
        2e-2,
    );
}

/// The sm_90a path: TMA copies through mbarriers into shared memory, wgmma from there.
#[test]
fn wgmma_matmul_kernels() {
    for body in [
        // Edges in M and N; K = 40 is not a multiple of the 32 of a stage.
        "input %a: bf16[70, 40]\ninput %b: bf16[40, 72]\n%y = matmul %a, %b\noutput %y",
        // Batched; N = 200 is two N tiles (128 and 72), M = 130 three M tiles.
        "input %a: bf16[2, 130, 96]\ninput %b: bf16[2, 96, 200]\n%y = matmul %a, %b\noutput %y",
        // K = 200: seven k-steps refill the three stages, so phases wrap; f16.
        "input %a: f16[3, 24, 200]\ninput %b: f16[3, 200, 16]\n%y = matmul %a, %b\noutput %y",
        // Both operands transposed: A M-major, B K-major (as stored).
        "input %a: bf16[40, 72]\ninput %b: bf16[24, 40]\n%at = permute %a {perm = [1, 0]}\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %at, %bt\noutput %y",
        // K = 8: one box per operand row block, the rest of the stage zero-filled.
        "input %a: bf16[5, 8]\ninput %b: bf16[8, 16]\n%y = matmul %a, %b\noutput %y",
    ] {
        let text = module(body, Arch::Sm90a);
        assert!(
            text.contains(".target sm_90a")
                && text.contains("wgmma.mma_async")
                && text.contains("cp.async.bulk.tensor.3d"),
            "{body}: not on the wgmma path"
        );
        check_tol(body, 1, 2e-2);
    }
    // TMA needs 16-byte rows: K = 20 keeps mma.sync, and the module stays sm_90.
    let odd = "input %a: bf16[8, 20]\ninput %b: bf16[20, 8]\n%y = matmul %a, %b\noutput %y";
    let text = module(odd, Arch::Sm90a);
    assert!(
        text.contains(".target sm_90\n") && !text.contains("wgmma"),
        "{text}"
    );
}

/// Large wgmma products assemble for sm_90a without spills (ptxas's figures printed).
#[test]
fn wgmma_matmul_assembles_without_spills() {
    for (what, body) in [
        (
            "bf16 4x1024x1024x1024, B N-major",
            "input %a: bf16[4, 1024, 1024]\ninput %b: bf16[4, 1024, 1024]\n%y = matmul %a, %b\noutput %y",
        ),
        (
            "f16 1024x512x256, B K-major",
            "input %a: f16[1024, 512]\ninput %b: f16[256, 512]\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %a, %bt\noutput %y",
        ),
    ] {
        for r in assemble(&parse(body), &Default::default(), Arch::Sm90a) {
            eprintln!(
                "{what}: {} registers, {} B shared, {} B spilled",
                r.registers, r.shared_bytes, r.spill_bytes
            );
            assert_eq!(r.spill_bytes, 0, "{what}: {r:?}");
        }
    }
}

#[test]
fn fused_attention_backward_kernels() {
    let small = common::attention_backward("B, 5, 4", "B, 5, 4", "B, 5, 3", "f32", true, 0.5);
    // One kernel per composite, none of the decomposition's matmuls and softmax.
    let names = kernel_names(&small, 2);
    for part in ["lse", "dq", "dk", "dv"] {
        assert_eq!(
            names
                .iter()
                .filter(|n| n.ends_with(&format!("_{part}")))
                .count(),
            1,
            "{names:?}"
        );
    }
    check(&small);
    // Several tiles on both sides (S, T > 32), lengths that are not multiples of the
    // tile or of the block's 4 rows, more or fewer keys than queries (causal and not),
    // heads past 32 lanes, a second batch axis, and 16-bit inputs.
    let mut reports = Vec::new();
    for (q, k, v, causal, scale) in [
        ("2, 3, 37, 40", "2, 3, 70, 40", "2, 3, 70, 72", false, 0.15),
        ("B, 67, 16", "B, 67, 16", "B, 67, 16", true, 0.25),
        ("B, 45, 8", "B, 20, 8", "B, 20, 33", true, 0.3),
        ("B, 20, 8", "B, 45, 8", "B, 45, 5", true, 0.3),
    ] {
        reports.extend(check_tol(
            &common::attention_backward(q, k, v, "f32", causal, scale),
            3,
            1e-4,
        ));
    }
    check_tol(
        &common::attention_backward("2, 40, 32", "2, 40, 32", "2, 40, 32", "bf16", true, 0.18),
        1,
        2e-2,
    );
    // The largest head fits in registers and shared memory.
    reports.extend(assemble_only(&common::attention_backward(
        "1, 40, 128",
        "1, 40, 128",
        "1, 40, 128",
        "f32",
        true,
        0.09,
    )));
    for r in &reports {
        assert_eq!(r.spill_bytes, 0, "{r:?}");
        println!(
            "{}: {} registers, {} bytes of shared memory",
            r.name, r.registers, r.shared_bytes
        );
    }
}

/// ptxas's reports for the kernels of `body` (nothing is run).
fn assemble_only(body: &str) -> Vec<ptxas::KernelReport> {
    let g = parse(body);
    let feeds = common::random_feeds(&g, 1, 1, 4);
    assemble(&g, &interp::bind_shapes(&g, &feeds).unwrap(), Arch::Sm90a)
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
    // The transposed weights of the backward pass, read in place (the schedule folds
    // the permute into the product).
    check("input %x: f32[B, 5]\ninput %w: f32[6, 3, 5]\ninput %g: i64[B]\n%t = permute %w {perm = [0, 2, 1]}\n%y = grouped_matmul %x, %t, %g\noutput %y");
}

#[test]
fn communication_kernels() {
    check("input %x: f32[B, 8]\n%y = all_to_all %x {axis = 0}\n%z = exp %y\n%w = all_to_all %z {axis = 0}\noutput %w");
    check("input %x: bf16[3, 5]\n%y = all_to_all %x {axis = 1}\noutput %y");
    // One rank (the GPU runtime has no NCCL engine yet): the sum is a loopback copy.
    check("input %x: f32[B, 8]\n%y = all_reduce %x\n%z = exp %y\noutput %z");
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
