//! The CPU backend (fused kernels, and the op-by-op baseline) against the reference
//! interpreter, op by op and on whole training steps, on fresh random inputs. Tolerance: |cpu − interp| ≤ 1e-4 · max(1, max|interp|)
//! per output (f32 kernels differ from the f64-then-rounded oracle in summation order
//! and in transcendental functions' last bits).

mod common;

use smelt_compiler::autodiff::optimizer::{training_step, Optimizer};
use smelt_compiler::ir::{text, DType, Graph};
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::{interp, params, Precision, Tensor};
use std::collections::HashMap;

fn compare(g: &Graph, feeds: &HashMap<String, Tensor>) {
    let want = interp::execute(g, feeds, Precision::F32).unwrap();
    // Fused kernels (native code, and the kernel-IR evaluator) and the op-by-op baseline
    // must all agree with the oracle.
    for (fuse, jit) in [(true, true), (true, false), (false, true)] {
        let got = CpuProgram::compile_options(g, fuse, jit)
            .unwrap()
            .run(feeds)
            .unwrap();
        for (k, (c, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
            common::assert_close(
                &format!(
                    "output {k} (fuse: {fuse}, jit: {jit}) of\n{}",
                    text::print(g)
                ),
                c,
                w,
                1e-4,
            );
        }
        for ((name, c), (_, w)) in got.updates.iter().zip(&want.updates) {
            common::assert_close(
                &format!("update of %{name} (fuse: {fuse}, jit: {jit})"),
                c,
                w,
                1e-4,
            );
        }
    }
}

fn check(body: &str) {
    let src = format!("graph @t {{\n{body}\n}}\n");
    let g = text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph;
    for seed in [1, 2] {
        compare(&g, &common::random_feeds(&g, seed, 3, 4));
    }
}

#[test]
fn convolutions() {
    check("input %x: f32[B, 4, 6, 6]\ninput %w: f32[6, 2, 3, 3]\n%y = conv %x, %w {strides = [1, 1], pads = [1, 1, 1, 1], dilations = [1, 1], groups = 2}\noutput %y");
    check("input %x: f32[B, 3, 7, 5]\ninput %w: f32[2, 3, 2, 3]\n%y = conv %x, %w {strides = [2, 2], pads = [0, 1, 1, 0], dilations = [2, 1], groups = 1}\noutput %y");
}

#[test]
fn elementwise_ops() {
    for op in common::unary_ops() {
        check(&format!("input %x: f32[B, 5]\n%y = {op} %x\noutput %y"));
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
    check("input %a: f32[6]\ninput %b: f32[6]\n%c = gt %a, %b\n%y = select %c, %a, %b\noutput %y");
    check("input %a: f32[6]\n%i: i32[6] = cast %a\n%y: f32[6] = cast %i\noutput %y");
}

#[test]
fn reductions_and_matmul() {
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
    // Long rows (vector lanes and a tail), leading axes wider than a column block, both
    // large enough for the parallel paths.
    for (axes, ty) in [
        ("[2]", "f32[B, 37]"),
        ("[0, 1]", "f32[300]"),
        ("[1]", "f32[B, 300]"),
    ] {
        for op in ["reduce_sum", "reduce_max", "reduce_mean"] {
            check(&format!(
                "input %x: f32[B, 37, 300]\n%y: {ty} = {op} %x {{axes = {axes}}}\noutput %y"
            ));
        }
    }
    // Adjacent middle axes, reduced in place slab by slab (the parallel path too).
    for (x, axes, ty) in [
        ("f32[B, 3, 4, 5]", "[1, 2]", "f32[B, 5]"),
        ("f32[70, 2, 300]", "[1]", "f32[70, 300]"),
    ] {
        for op in ["reduce_sum", "reduce_max", "reduce_mean"] {
            check(&format!(
                "input %x: {x}\n%y: {ty} = {op} %x {{axes = {axes}}}\noutput %y"
            ));
        }
    }
    check("input %a: f32[2, B, 7]\ninput %b: f32[2, 7, 5]\n%y = matmul %a, %b\noutput %y");
    // Enough products of enough work for one product per task.
    check("input %a: f32[8, 64, 64]\ninput %b: f32[8, 64, 64]\n%y = matmul %a, %b\noutput %y");
    check("input %a: f32[64, 96]\ninput %b: f32[96, 80]\n%y = matmul %a, %b\noutput %y");
}

#[test]
fn movement_and_indexing_ops() {
    let x = "input %x: f32[B, 5, 4]\n";
    check(&format!("{x}%y: f32[B, 20] = reshape %x\noutput %y"));
    check(&format!(
        "{x}%y = permute %x {{perm = [2, 0, 1]}}\noutput %y"
    ));
    check(&format!(
        "{x}%y: f32[3, B, 5, 4] = broadcast %x {{dims = [1, 2, 3]}}\noutput %y"
    ));
    check("input %x: f32[5, 1]\n%y: f32[2, 5, 6] = broadcast %x {dims = [1, 2]}\noutput %y");
    check(&format!(
        "{x}%y = slice %x {{axis = 1, start = 1, end = 5, step = 2}}\noutput %y"
    ));
    check(&format!("{x}%y = concat %x, %x {{axis = 2}}\noutput %y"));
    check(&format!(
        "{x}%y = pad %x {{axis = 1, low = 2, high = 1, value = -1.5}}\noutput %y"
    ));
    check("input %t: f32[4, 3]\ninput %i: i32[B, 2]\n%y = gather %t, %i {axis = 0}\noutput %y");
    check("input %t: f32[3, 4]\ninput %i: i32[5]\n%y = gather %t, %i {axis = 1}\noutput %y");
    check("input %t: f32[4, 3]\ninput %i: i32[B]\ninput %u: f32[B, 3]\n%y = scatter_add %t, %i, %u {axis = 0}\noutput %y");
    check("%y: i32[3, 4] = iota {axis = 1}\n%z: f32[3, 4] = cast %y\n%r: f32[3, 4] = random_normal {mean = 0.0, std = 1.0, seed = 4}\n%o = add %z, %r\noutput %o");
}

#[test]
fn routing_ops() {
    check("input %x: f32[B, 7]\n%y = top_k %x {k = 3}\noutput %y");
    // Groups drawn from 0..4 of 6, so groups 4 and 5 are always empty.
    check("input %x: f32[B, 5]\ninput %w: f32[6, 5, 3]\ninput %g: i32[B]\n%y = grouped_matmul %x, %w, %g\noutput %y");
    check("input %x: f32[B, 5]\ninput %d: f32[B, 3]\ninput %g: i64[B]\n%y = grouped_matmul_weight_grad %x, %d, %g {groups = 6}\noutput %y");
}

/// Large enough that the groups' products share the cores (in chunks of rows that cut
/// through groups, and in slices of an odd K); groups 1 and 4 stay empty, and the
/// backward graph reads the weights transposed in place (no permute step).
#[test]
fn grouped_products_forward_and_backward() {
    let src = "graph @t {\n  input %x: f32[300, 65]\n  input %w: f32[6, 65, 48]\n  input %g: i64[300]\n  input %c: f32[300, 48]\n  %y = grouped_matmul %x, %w, %g\n  %p = mul %y, %c\n  %loss: f32[] = reduce_sum %p {axes = [0, 1]}\n  output %loss\n}\n";
    let g = text::parse(src).unwrap().graph;
    let loss = g.find("loss").unwrap();
    let wrt = [g.find("x").unwrap(), g.find("w").unwrap()];
    let grad = smelt_compiler::autodiff::differentiate(&g, loss, &wrt)
        .unwrap()
        .graph;
    let program = CpuProgram::compile(&grad).unwrap();
    let printed = program.schedule().to_text(&Default::default());
    assert!(printed.contains("%w^T"), "{printed}");
    assert!(!printed.contains("permute"), "{printed}");
    for seed in [3, 4] {
        let mut feeds = common::random_feeds(&grad, seed, 1, 1);
        let mut rng = common::Rng(seed);
        let used = [0, 2, 3, 5];
        let groups = (0..300)
            .map(|_| used[(rng.uniform(0.0, 4.0) as usize).min(3)])
            .collect();
        feeds.insert("g".into(), Tensor::from_i64(DType::I64, vec![300], groups));
        compare(&grad, &feeds);
    }
}

#[test]
fn composite_ops() {
    check("input %x: f32[B, 6]\n%y = softmax %x {axis = 1}\n%z = log_softmax %x {axis = 0}\noutput %y, %z");
    check("input %x: f32[B, 6]\ninput %g: f32[6]\ninput %b: f32[6]\n%y = layer_norm %x, %g, %b {eps = 1e-5}\n%z = rms_norm %x, %g {eps = 1e-6}\noutput %y, %z");
    check("input %x: f32[B, 6]\n%y = gelu %x {approximate = tanh}\n%z = gelu %x {approximate = none}\noutput %y, %z");
    check("input %q: f32[B, 5, 4]\ninput %k: f32[B, 5, 4]\ninput %v: f32[B, 5, 3]\n%y = attention %q, %k, %v {causal = true, scale = 0.5}\noutput %y");
}

/// Attention and its backward pieces run whole, as library steps, on shapes with
/// fewer or more keys than queries, causal and not.
#[test]
fn attention_library_steps() {
    for (q, k, v, causal) in [
        ("B, 5, 4", "B, 5, 4", "B, 5, 3", true),
        ("2, B, 7, 6", "2, B, 9, 6", "2, B, 9, 5", false),
        ("B, 9, 6", "B, 4, 6", "B, 4, 5", true),
        ("B, 4, 6", "B, 9, 6", "B, 9, 5", true),
        // Several causal blocks of 32, with more queries than keys and fewer.
        ("B, 70, 6", "B, 40, 6", "B, 40, 5", true),
        ("B, 40, 6", "B, 70, 6", "B, 70, 5", true),
    ] {
        let body = common::attention_backward(q, k, v, "f32", causal, 0.4);
        let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
            .unwrap()
            .graph;
        let steps = CpuProgram::compile(&g).unwrap().schedule().steps.len();
        // attention, attention_lse, dy·y with its row sum, and the three adjoints.
        assert_eq!(steps, 7, "{body}");
        check(&body);
    }
    // Long rows (the scores of 150 keys).
    check(&common::attention_backward(
        "2, 150, 16",
        "2, 150, 16",
        "2, 150, 16",
        "f32",
        true,
        0.25,
    ));
}

/// `paged_attention` runs whole, reading the cache blocks where they lie, against the
/// interpreter's decomposition (which gathers them): two query heads stacked per
/// key/value head, three new tokens, and rows whose cache is empty, ends inside a
/// block, and runs past the pages its table lists (by up to `i64::MAX`); tables share
/// and repeat blocks.
#[test]
fn paged_attention_reads_the_cache_in_place() {
    let body = "input %q: f32[B, 2, 6, 8]\ninput %k: f32[B, 2, 3, 8]\ninput %v: f32[B, 2, 3, 5]\ninput %ck: f32[7, 2, 4, 8]\ninput %cv: f32[7, 2, 4, 5]\ninput %table: i32[B, 3]\ninput %past: i64[B]\n%y = paged_attention %q, %k, %v, %ck, %cv, %table, %past {scale = 0.35}\noutput %y";
    let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
        .unwrap()
        .graph;
    assert_eq!(CpuProgram::compile(&g).unwrap().schedule().steps.len(), 1);
    for seed in [1, 2] {
        let mut feeds = common::random_feeds(&g, seed, 5, 4);
        let table = vec![0, 1, 2, 3, 3, 3, 6, 5, 4, 2, 0, 0, 1, 1, 4];
        feeds.insert(
            "table".into(),
            Tensor::from_i64(DType::I32, vec![5, 3], table),
        );
        // Lengths are the caller's: some past the table's 12 positions, two so far
        // that their sum would overflow if counted whole.
        let past = vec![0, 3, 14, i64::MAX, i64::MAX];
        feeds.insert("past".into(), Tensor::from_i64(DType::I64, vec![5], past));
        compare(&g, &feeds);
    }
}

/// The row composites and their gradients run as one library step each (along the last
/// axis), on rows shorter than a vector, odd, and long, and on enough rows to use both
/// cores; labels up to `len + 1` include some outside the classes.
#[test]
fn row_composites_and_gradients() {
    for (rows, len) in [("B", 5), ("B", 8), ("B, 7", 70), ("B", 1000), ("40", 1000)] {
        let t = format!("f32[{rows}, {len}]");
        let labels = format!("i32[{rows}]");
        let body = format!(
            "input %x: {t}\ninput %dy: {t}\ninput %g: f32[{len}]\ninput %b: f32[{len}]\n\
             input %t: {labels}\ninput %d: f32[]\n\
             %sm = softmax %x {{axis = {a}}}\n%ls = log_softmax %x {{axis = {a}}}\n\
             %ln = layer_norm %x, %g, %b {{eps = 1e-5}}\n%rn = rms_norm %x, %g {{eps = 1e-6}}\n\
             %ce = cross_entropy %x, %t\n\
             %sg = softmax_grad %sm, %dy {{axis = {a}}}\n%lg = log_softmax_grad %ls, %dy {{axis = {a}}}\n\
             %ng = layer_norm_grad %x, %g, %dy {{eps = 1e-5}}\n%rg = rms_norm_grad %x, %g, %dy {{eps = 1e-6}}\n\
             %cg = cross_entropy_grad %x, %t, %d\n\
             output %sm, %ls, %ln, %rn, %ce, %sg, %lg, %ng, %rg, %cg",
            a = rows.split(',').count()
        );
        let g = text::parse(&format!("graph @t {{\n{body}\n}}\n"))
            .unwrap_or_else(|e| panic!("{e}\n{body}"))
            .graph;
        let program = CpuProgram::compile(&g).unwrap();
        let whole = program
            .schedule()
            .steps
            .iter()
            .filter(|s| {
                let v = program.schedule().graph.value(s.output());
                matches!(
                    &v.def,
                    smelt_compiler::ir::Def::Node {
                        op: smelt_compiler::ir::Op::Composite(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            whole,
            10,
            "{}",
            program.schedule().to_text(&Default::default())
        );
        for seed in [1, 2] {
            compare(&g, &common::random_feeds(&g, seed, 3, len + 2));
        }
    }
}

#[test]
fn mlp_forward_and_training_steps() {
    let g = common::example("examples/mlp.sir");
    let forward_feeds = common::random_feeds(&g, 7, 3, 10);
    compare(&g, &forward_feeds);
    for opt in [
        Optimizer::adamw(),
        Optimizer::Sgd {
            momentum: 0.9,
            weight_decay: 1e-4,
        },
    ] {
        let step = training_step(&g, &opt).unwrap();
        let mut feeds = forward_feeds.clone();
        feeds.extend(params::init_params(&step, 7));
        feeds.insert(
            "lr".into(),
            Tensor::from_f64(DType::F32, vec![], vec![1e-3]),
        );
        feeds.insert(
            "step".into(),
            Tensor::from_f64(DType::F32, vec![], vec![3.0]),
        );
        compare(&step, &feeds);
    }
}

#[test]
fn unsupported_dtypes_are_reported() {
    for dtype in ["bf16", "f64"] {
        let source =
            format!("graph @t {{\n  input %x: {dtype}[2]\n  %y = exp %x\n  output %y\n}}\n");
        let g = text::parse(&source).unwrap().graph;
        let err = CpuProgram::compile(&g).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("{dtype} is not supported yet")),
            "{err}"
        );
    }
}

/// A transpose (last two axes swapped) feeding a `matmul` is read in place by the
/// product, with no step of its own; any other permutation is materialised. Each case:
/// the body, the number of steps, and how the schedule shows the product.
#[test]
fn matmul_reads_transposes_in_place() {
    let cases = [
        (
            "input %a: f32[7, 5]\ninput %b: f32[7, 3]\n%at = permute %a {perm = [1, 0]}\n%y = matmul %at, %b\noutput %y",
            1,
            "matmul (%a^T, %b)",
        ),
        (
            "input %a: f32[2, B, 4]\ninput %b: f32[2, 6, 4]\n%bt = permute %b {perm = [0, 2, 1]}\n%y = matmul %a, %bt\noutput %y",
            1,
            "matmul (%a, %b^T)",
        ),
        (
            "input %a: f32[3, 40, 64]\ninput %b: f32[3, 96, 40]\n%at = permute %a {perm = [0, 2, 1]}\n%bt = permute %b {perm = [0, 2, 1]}\n%y = matmul %at, %bt\noutput %y",
            1,
            "matmul (%a^T, %b^T)",
        ),
        (
            "input %a: i32[5, 4]\ninput %b: i32[3, 5]\n%at = permute %a {perm = [1, 0]}\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %at, %bt\noutput %y",
            1,
            "matmul (%a^T, %b^T)",
        ),
        // Read elsewhere too: the exp kernel reads it through its own strides.
        (
            "input %a: f32[7, 5]\ninput %b: f32[7, 3]\n%at = permute %a {perm = [1, 0]}\n%y = matmul %at, %b\n%z = exp %at\noutput %y, %z",
            2,
            "matmul (%a^T, %b)",
        ),
        // Not a swap of the last two axes: materialised, then multiplied.
        (
            "input %a: f32[5, 2, 5]\ninput %b: f32[5, 5, 3]\n%at = permute %a {perm = [2, 1, 0]}\n%y = matmul %at, %b\noutput %y",
            2,
            "matmul (%at, %b)",
        ),
    ];
    for (body, steps, shown) in cases {
        let src = format!("graph @t {{\n{body}\n}}\n");
        let g = text::parse(&src).unwrap().graph;
        let s = smelt_compiler::schedule::schedule(&g);
        let text = s.to_text(&Default::default());
        assert_eq!(s.steps.len(), steps, "{text}");
        assert!(text.contains(shown), "{text}");
        check(body);
    }
}

#[test]
fn fusion_inlines_elementwise_chains() {
    let src = "graph @t {\n  input %x: f32[B, 8]\n  input %b: f32[8]\n  %bb: f32[B, 8] = broadcast %b {dims = [1]}\n  %y = add %x, %bb\n  %z = gelu %y {approximate = tanh}\n  %s: f32[B] = reduce_sum %z {axes = [1]}\n  output %s\n}\n";
    let g = text::parse(src).unwrap().graph;
    let s = smelt_compiler::schedule::schedule(&g);
    // broadcast + add + the whole tanh-GELU expansion: one kernel, then the reduction.
    assert_eq!(s.counts(), (1, 1), "{}", s.to_text(&Default::default()));
    compare(&g, &common::random_feeds(&g, 3, 5, 1));
}

/// The f32x4 path of the JIT and its scalar tail: rows shorter than, equal to and
/// longer than four lanes, with contiguous and broadcast loads, comparisons feeding
/// `select` and casts, transcendentals split into lanes, and a permuted load that keeps
/// the scalar path.
#[test]
fn vectorised_kernels_and_their_tails() {
    use smelt_compiler::codegen::cranelift::vectorized;
    use smelt_compiler::schedule::{schedule, Step};
    for n in [1, 3, 4, 5, 17, 64] {
        let graphs = [
            (true, format!("input %x: f32[B, {n}]\ninput %y: f32[B, {n}]\ninput %b: f32[{n}]\ninput %s: f32[B]\n%bb: f32[B, {n}] = broadcast %b {{dims = [1]}}\n%ss: f32[B, {n}] = broadcast %s {{dims = [0]}}\n%a = add %x, %bb\n%m = mul %a, %ss\n%e = exp %m\n%t = tanh %y\n%p = max %e, %t\n%q = sub %p, %ss\n%c = gt %x, %y\n%sel = select %c, %q, %a\n%f: f32[B, {n}] = cast %c\n%o = add %sel, %f\noutput %o")),
            (true, format!("input %x: f32[B, {n}]\ninput %y: f32[B, {n}]\n%a = abs %x\n%one: f32[B, {n}] = constant {{value = 1.0}}\n%a1 = add %a, %one\n%r = sqrt %a1\n%rs = rsqrt %a1\n%rc = recip %a1\n%w = pow %a1, %y\n%n = neg %w\n%mn = min %n, %rs\n%d = div %mn, %a1\n%s1 = add %d, %r\n%o = add %s1, %rc\noutput %o")),
            (false, format!("input %x: f32[{n}, B]\ninput %y: f32[B, {n}]\n%t = permute %x {{perm = [1, 0]}}\n%o = mul %t, %y\noutput %o")),
        ];
        for (simd, body) in graphs {
            let src = format!("graph @t {{\n{body}\n}}\n");
            let g = text::parse(&src)
                .unwrap_or_else(|e| panic!("{e}\n{src}"))
                .graph;
            let s = schedule(&g);
            let kernels: Vec<bool> = s
                .steps
                .iter()
                .filter_map(|st| match st {
                    Step::Pointwise(k) => Some(vectorized(k)),
                    Step::Library(_) | Step::MatMul { .. } => None,
                })
                .collect();
            assert_eq!(kernels, vec![simd], "{}", s.to_text(&Default::default()));
            for seed in [1, 2] {
                compare(&g, &common::random_feeds(&g, seed, 3, 4));
            }
        }
    }
}

#[test]
fn fusion_expands_small_powers_and_keeps_scalars_apart() {
    use smelt_compiler::kernel::Expr;
    use smelt_compiler::schedule::Step;
    // x^3 (tanh-GELU's cube) becomes two multiplies; x^2.5 stays a power.
    for (power, pows) in [("3.0", 0), ("2.0", 0), ("2.5", 1)] {
        let src = format!("graph @t {{\n  input %x: f32[B, 8]\n  %c: f32[B, 8] = constant {{value = {power}}}\n  %y = pow %x, %c\n  output %y\n}}\n");
        let g = text::parse(&src).unwrap().graph;
        let s = smelt_compiler::schedule::schedule(&g);
        let Step::Pointwise(k) = &s.steps[0] else {
            panic!("one fused kernel")
        };
        let n = k
            .exprs
            .iter()
            .filter(|(e, _)| matches!(e, Expr::Binary(smelt_compiler::ir::ops::BinaryOp::Pow, ..)))
            .count();
        assert_eq!(n, pows, "x^{power}: {}", s.to_text(&Default::default()));
        compare(&g, &common::random_feeds(&g, 4, 3, 1));
    }
    // beta^step is computed once, then read by the big kernel as a broadcast scalar.
    let src = "graph @t {\n  input %x: f32[B, 8]\n  input %step: f32[]\n  %beta: f32[] = constant {value = 0.9}\n  %p = pow %beta, %step\n  %pb: f32[B, 8] = broadcast %p {dims = []}\n  %y = mul %x, %pb\n  output %y\n}\n";
    let g = text::parse(src).unwrap().graph;
    let s = smelt_compiler::schedule::schedule(&g);
    assert_eq!(s.counts(), (2, 0), "{}", s.to_text(&Default::default()));
    compare(&g, &common::random_feeds(&g, 5, 3, 1));
}

#[test]
fn vector_exp_and_tanh_across_their_range() {
    // Rows of 8 run the f32x4 code; the inputs sweep the whole range of exp, including
    // where it overflows (x > 88.72), underflows, and the infinities and NaN.
    let xs: Vec<f64> = (0..64)
        .map(|i| -100.0 + 200.0 * f64::from(i) / 63.0)
        .chain([
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.0,
            1e-6,
            -1e-6,
            88.5,
            -86.0,
        ])
        .collect();
    let n = xs.len();
    let src = format!(
        "graph @t {{\n  input %x: f32[{}, 8]\n  %e = exp %x\n  %t = tanh %x\n  output %e, %t\n}}\n",
        n / 8
    );
    let g = text::parse(&src).unwrap().graph;
    let feeds: HashMap<String, Tensor> = [(
        "x".to_string(),
        Tensor::from_f64(DType::F32, vec![n / 8, 8], xs.clone()),
    )]
    .into();
    let want = interp::execute(&g, &feeds, Precision::F32).unwrap();
    let got = CpuProgram::compile(&g).unwrap().run(&feeds).unwrap();
    for (k, (c, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
        for (i, (a, b)) in c.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            let ok = (a.is_nan() && b.is_nan())
                || a == &b
                || (a - b).abs() <= 2e-6 * b.abs().max(1e-30)
                || (a - b).abs() <= 1e-7;
            assert!(ok, "output {k} at x = {}: {a} vs {b}", xs[i]);
        }
    }
}

#[test]
fn additive_epilogues_fold_into_the_product() {
    // (body, steps, shown in the schedule): a bias and a residual fold into the product
    // they are added to, even one computed after the product; a product read twice,
    // or added to itself, keeps its own step.
    let bias = "  %bb: f32[B, 24] = broadcast %b {dims = [1]}";
    let cases = [
        (
            format!("input %x: f32[B, 16]\ninput %w: f32[16, 24]\ninput %b: f32[24]\ninput %r: f32[B, 24]\n%p = matmul %x, %w\n{bias}\n%s = add %p, %bb\n%y = add %r, %s\noutput %y"),
            1,
            "added to kernel",
        ),
        (
            format!("input %x: f32[B, 16]\ninput %w: f32[16, 24]\ninput %b: f32[24]\n%p = matmul %x, %w\n{bias}\n%s = add %bb, %p\n%y = relu %s\noutput %y\noutput %s"),
            2,
            "added to kernel",
        ),
        (
            format!("input %x: f32[B, 16]\ninput %w: f32[16, 24]\ninput %b: f32[24]\n%p = matmul %x, %w\n{bias}\n%s = add %p, %bb\noutput %s\noutput %p"),
            2,
            "kernel fused",
        ),
        (
            "input %x: f32[B, 16]\ninput %w: f32[16, 24]\n%p = matmul %x, %w\n%e = exp %p\n%y = add %p, %e\noutput %y".to_string(),
            2,
            "kernel fused",
        ),
        // The other term is computed after the product: the product's step moves to
        // the sum's place, after it.
        (
            "input %x: f32[B, 16]\ninput %w: f32[16, 24]\ninput %v: f32[16, 24]\n%p = matmul %x, %w\n%q = matmul %x, %v\n%e = exp %q\n%y = add %p, %e\noutput %y".to_string(),
            2,
            "added to kernel",
        ),
    ];
    for (body, steps, shown) in cases {
        let src = format!("graph @t {{\n{body}\n}}\n");
        let g = text::parse(&src)
            .unwrap_or_else(|e| panic!("{e}\n{src}"))
            .graph;
        let s = smelt_compiler::schedule::schedule(&g);
        let text = s.to_text(&Default::default());
        assert_eq!(s.steps.len(), steps, "{text}");
        assert!(text.contains(shown), "{text}");
        check(&body);
    }
}
