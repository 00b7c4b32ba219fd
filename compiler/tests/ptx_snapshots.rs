//! Snapshots of the PTX of small kernels, one per kernel family: a diff shows exactly
//! what a change to lowering or printing does to the generated code. (That the PTX
//! assembles, and computes what the interpreter does, is tested with ptxas and the
//! kernel-IR evaluator in runtime/tests/gpu_kernels.rs.)

use smelt_compiler::gpu::target::Arch;
use smelt_compiler::gpu::{ptx, GpuProgram};
use smelt_compiler::ir::text;

/// The PTX module of a graph given as the body of a `.sir` graph.
fn module(body: &str) -> String {
    module_for(body, Arch::Sm90a)
}

/// The same, with kernels limited to `arch`.
fn module_for(body: &str, arch: Arch) -> String {
    let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
        .unwrap()
        .graph;
    let schedule = smelt_compiler::gpu::schedule(&g);
    let program = GpuProgram::for_arch(&schedule, &Default::default(), arch).unwrap();
    ptx::module(&program.kernels())
}

#[test]
fn fused_elementwise_with_vector_access() {
    insta::assert_snapshot!(module(
        "input %x: f32[2, 8]\ninput %b: f32[8]\n%bb: f32[2, 8] = broadcast %b {dims = [1]}\n%y = add %x, %bb\n%z = exp %y\noutput %z"
    ));
}

#[test]
fn warp_row_reduction() {
    insta::assert_snapshot!(module(
        "input %x: f32[4, 100]\n%y: f32[4] = reduce_max %x {axes = [1]}\noutput %y"
    ));
}

#[test]
fn tensor_core_matmul() {
    insta::assert_snapshot!(module_for(
        "input %a: bf16[16, 16]\ninput %b: bf16[16, 8]\n%y = matmul %a, %b\noutput %y",
        Arch::Sm90
    ));
}

/// The sm_90a path: TMA into shared memory through mbarriers, then wgmma.
#[test]
fn wgmma_matmul() {
    insta::assert_snapshot!(module(
        "input %a: bf16[16, 16]\ninput %b: bf16[16, 8]\n%y = matmul %a, %b\noutput %y"
    ));
}

#[test]
fn gather() {
    insta::assert_snapshot!(module(
        "input %t: f32[10, 4]\ninput %i: i64[3]\n%y = gather %t, %i {axis = 0}\noutput %y"
    ));
}

#[test]
fn fused_causal_attention() {
    insta::assert_snapshot!(module(
        "input %q: f32[1, 8, 8]\ninput %k: f32[1, 8, 8]\ninput %v: f32[1, 8, 8]\n%y = attention %q, %k, %v {causal = true, scale = 0.35}\noutput %y"
    ));
}

#[test]
fn fused_causal_attention_grad_k() {
    insta::assert_snapshot!(module(
        "input %q: f32[1, 8, 8]\ninput %k: f32[1, 8, 8]\ninput %v: f32[1, 8, 8]\ninput %dy: f32[1, 8, 8]\ninput %lse: f32[1, 8]\ninput %delta: f32[1, 8]\n%y = attention_grad_k %q, %k, %v, %dy, %lse, %delta {causal = true, scale = 0.35}\noutput %y"
    ));
}

#[test]
fn fused_layer_norm_row() {
    insta::assert_snapshot!(module(
        "input %x: f32[4, 64]\ninput %g: f32[64]\ninput %b: f32[64]\n%y = layer_norm %x, %g, %b {eps = 1e-5}\noutput %y"
    ));
}
