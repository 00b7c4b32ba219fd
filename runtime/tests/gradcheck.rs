//! Gradient checks: for every op and for the example models, the gradients from
//! `compiler::autodiff` agree with central finite differences computed by the reference
//! interpreter in f64 (relative error < 1e-6), on random inputs.

mod common;

use smelt_compiler::autodiff::differentiate;
use smelt_compiler::ir::ops::unary::Domain;
use smelt_compiler::ir::ops::{BinaryOp, ReduceOp, UnaryOp};
use smelt_compiler::ir::{text, Builder, DType, Graph, Op, TensorType, ValueId};
use smelt_runtime::gradcheck::{check_gradients, exact_f32};
use smelt_runtime::{params, Tensor};
use std::collections::HashMap;

use common::Rng;

fn exact(shape: &[usize], values: Vec<f64>) -> Tensor {
    exact_f32(shape, values)
}

/// Checks d(loss)/d(name) for every `name` in `wrt` (relative error < 1e-6).
fn compare(
    g: &Graph,
    loss: ValueId,
    feeds: &HashMap<String, Tensor>,
    wrt: &[&str],
    coords: Option<usize>,
    h: f64,
) {
    if let Err(e) = check_gradients(g, loss, feeds, wrt, coords, h, 1e-6) {
        panic!("{e}\n{}", text::print(g));
    }
}

/// Gradient check of `body` (graph lines defining `%y` from inputs), with loss
/// `sum(y * w)` for a random `w`. `inputs` gives each input's shape and value range.
fn check(body: &str, inputs: &[(&str, &[usize], (f64, f64))], wrt: &[&str]) {
    let decl: String = inputs
        .iter()
        .map(|(n, s, _)| {
            let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
            format!("  input %{n}: f32[{}]\n", dims.join(", "))
        })
        .collect();
    let src = format!("graph @t {{\n{decl}{body}\n  output %y\n}}\n");
    let g = text::parse(&src)
        .unwrap_or_else(|e| panic!("{e}\n{src}"))
        .graph;
    let y = g.find("y").unwrap();
    let mut b = Builder::from_graph(g);
    let yt = b.ty(y).clone();
    let w = b.input("w", yt.clone()).unwrap();
    let prod = b.binary(BinaryOp::Mul, y, w);
    let loss = b.reduce(ReduceOp::Sum, prod, (0..yt.rank()).collect());
    let mut g = b.finish();
    g.outputs = vec![loss];
    let mut rng = Rng(0x9e3779b97f4a7c15 ^ body.len() as u64);
    let mut feeds = HashMap::new();
    for (n, s, (lo, hi)) in inputs {
        let count: usize = s.iter().product();
        feeds.insert(
            n.to_string(),
            exact(s, (0..count).map(|_| rng.uniform(*lo, *hi)).collect()),
        );
    }
    let ws = yt
        .shape
        .as_static()
        .unwrap()
        .iter()
        .map(|&d| d as usize)
        .collect::<Vec<_>>();
    let count: usize = ws.iter().product();
    feeds.insert(
        "w".into(),
        exact(&ws, (0..count).map(|_| rng.uniform(-1.0, 1.0)).collect()),
    );
    compare(&g, loss, &feeds, wrt, None, 1e-6);
}

const ANY: (f64, f64) = (-2.0, 2.0);
const POS: (f64, f64) = (0.5, 2.0);

#[test]
fn unary_ops() {
    // Every op of the table, where it is smooth.
    for op in UnaryOp::ALL {
        let range = match op.def().domain {
            Domain::Real => ANY,
            Domain::NonZero | Domain::Positive => POS,
        };
        let op = op.name();
        check(&format!("  %y = {op} %x"), &[("x", &[2, 3], range)], &["x"]);
    }
}

#[test]
fn binary_ops() {
    for op in ["add", "sub", "mul", "div", "max", "min"] {
        check(
            &format!("  %y = {op} %a, %b"),
            &[("a", &[5], ANY), ("b", &[5], POS)],
            &["a", "b"],
        );
    }
    check(
        "  %y = pow %a, %b",
        &[("a", &[5], POS), ("b", &[5], ANY)],
        &["a", "b"],
    );
    check("  %y = mul %a, %a", &[("a", &[5], ANY)], &["a"]);
}

#[test]
fn select_and_cast() {
    check(
        "  %c = gt %a, %b\n  %y = select %c, %a, %b",
        &[("a", &[6], ANY), ("b", &[6], ANY)],
        &["a", "b"],
    );
    check("  %y: f32[2, 3] = cast %x", &[("x", &[2, 3], ANY)], &["x"]);
}

#[test]
fn reductions() {
    check(
        "  %y: f32[2] = reduce_sum %x {axes = [1]}",
        &[("x", &[2, 3], ANY)],
        &["x"],
    );
    check(
        "  %y: f32[3] = reduce_mean %x {axes = [0]}",
        &[("x", &[2, 3], ANY)],
        &["x"],
    );
    check(
        "  %y: f32[2, 4] = reduce_max %x {axes = [1]}",
        &[("x", &[2, 3, 4], ANY)],
        &["x"],
    );
    check(
        "  %y: f32[] = reduce_mean %x {axes = [0, 1, 2]}",
        &[("x", &[2, 3, 4], ANY)],
        &["x"],
    );
}

#[test]
fn matmul() {
    check(
        "  %y = matmul %a, %b",
        &[("a", &[2, 3, 4], ANY), ("b", &[2, 4, 5], ANY)],
        &["a", "b"],
    );
    check("  %y = matmul %a, %a", &[("a", &[3, 3], ANY)], &["a"]);
}

#[test]
fn movement_ops() {
    let x = [("x", &[2usize, 3, 4][..], ANY)];
    check("  %y: f32[6, 4] = reshape %x", &x, &["x"]);
    check("  %y = permute %x {perm = [2, 0, 1]}", &x, &["x"]);
    check(
        "  %y: f32[5, 2, 3, 4] = broadcast %x {dims = [1, 2, 3]}",
        &x,
        &["x"],
    );
    check(
        "  %y: f32[2, 3, 4] = broadcast %x {dims = [0, 1]}",
        &[("x", &[2, 1], ANY)],
        &["x"],
    );
    check(
        "  %y = slice %x {axis = 2, start = 1, end = 4, step = 1}",
        &x,
        &["x"],
    );
    check(
        "  %y = slice %x {axis = 1, start = 0, end = 3, step = 2}",
        &x,
        &["x"],
    );
    check(
        "  %y = concat %x, %z {axis = 1}",
        &[("x", &[2, 3], ANY), ("z", &[2, 2], ANY)],
        &["x", "z"],
    );
    check(
        "  %y = pad %x {axis = 0, low = 1, high = 2, value = 0.5}",
        &x,
        &["x"],
    );
}

#[test]
fn gather_and_scatter_add() {
    let src = "graph @t {\n  input %t: f32[4, 3]\n  input %u: f32[2, 2, 3]\n  %i: i32[2, 2] = constant {value = [3.0, 0.0, 3.0, 1.0]}\n  %g = gather %t, %i {axis = 0}\n  %s = scatter_add %t, %i, %u {axis = 0}\n  %gs: f32[] = reduce_sum %g {axes = [0, 1, 2]}\n  %sq = mul %s, %s\n  %ss: f32[] = reduce_sum %sq {axes = [0, 1]}\n  %loss = add %gs, %ss\n  output %loss\n}\n";
    let g = text::parse(src).unwrap().graph;
    let mut rng = Rng(5);
    let mut feeds = HashMap::new();
    feeds.insert(
        "t".to_string(),
        exact(&[4, 3], (0..12).map(|_| rng.uniform(-1.0, 1.0)).collect()),
    );
    feeds.insert(
        "u".to_string(),
        exact(
            &[2, 2, 3],
            (0..12).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        ),
    );
    let loss = g.find("loss").unwrap();
    compare(&g, loss, &feeds, &["t", "u"], None, 1e-6);
}

#[test]
fn grouped_products() {
    // Four groups, the last one empty; both ops' rules (and so each other's) are checked.
    let groups = "  %g: i64[5] = constant {value = [2.0, 0.0, 2.0, 1.0, 2.0]}\n";
    check(
        &format!("{groups}  %y = grouped_matmul %x, %m, %g"),
        &[("x", &[5, 3], ANY), ("m", &[4, 3, 2], ANY)],
        &["x", "m"],
    );
    check(
        &format!("{groups}  %y = grouped_matmul_weight_grad %x, %d, %g {{groups = 4}}"),
        &[("x", &[5, 3], ANY), ("d", &[5, 2], ANY)],
        &["x", "d"],
    );
}

#[test]
fn values_picked_by_top_k() {
    // top_k has no gradient; the values it picks, gathered from the flattened rows, do.
    check(
        "  %i = top_k %x {k = 2}\n  %f: f32[12] = reshape %x\n  %r: i64[3, 2] = iota {axis = 0}\n  %n: i64[3, 2] = constant {value = 4.0}\n  %o = mul %r, %n\n  %a = add %o, %i\n  %y = gather %f, %a {axis = 0}",
        &[("x", &[3, 4], ANY)],
        &["x"],
    );
}

#[test]
fn composite_ops() {
    let x = [("x", &[2usize, 5][..], ANY)];
    for op in [
        "relu",
        "sigmoid",
        "silu",
        "gelu %x {approximate = none}",
        "gelu %x {approximate = tanh}",
        "softmax %x {axis = 1}",
        "softmax %x {axis = 0}",
        "log_softmax %x {axis = 1}",
    ] {
        let line = if op.contains("%x") {
            format!("  %y = {op}")
        } else {
            format!("  %y = {op} %x")
        };
        check(&line, &x, &["x"]);
    }
    check_norms(&[2, 5]);
    check(
        "  %l: i32[3] = constant {value = [4.0, 0.0, 2.0]}\n  %y = cross_entropy %x, %l",
        &[("x", &[3, 5], ANY)],
        &["x"],
    );
    let qkv = [
        ("q", &[2usize, 4, 3][..], ANY),
        ("k", &[2usize, 4, 3][..], ANY),
        ("v", &[2usize, 4, 2][..], ANY),
    ];
    check(
        "  %y = attention %q, %k, %v {causal = true, scale = 0.5}",
        &qkv,
        &["q", "k", "v"],
    );
    check(
        "  %y = attention %q, %k, %v {causal = false, scale = 0.5}",
        &qkv,
        &["q", "k", "v"],
    );
}

/// Attention's gradient rule (the `attention_lse` and `attention_grad_*` composites,
/// not the decomposition's), causal and not, with more keys than queries; and the
/// gradients of those composites themselves (second order, through their
/// decomposition).
#[test]
fn attention_backward_composites() {
    let qkv = |tq: usize, tk: usize| {
        [
            ("q", vec![2usize, tq, 3], ANY),
            ("k", vec![2usize, tk, 3], ANY),
            ("v", vec![2usize, tk, 2], ANY),
        ]
    };
    for (causal, tq, tk) in [(true, 4, 4), (false, 3, 5), (true, 5, 3)] {
        let body = format!("  %y = attention %q, %k, %v {{causal = {causal}, scale = 0.6}}");
        let inputs = qkv(tq, tk);
        let inputs: Vec<(&str, &[usize], (f64, f64))> =
            inputs.iter().map(|(n, s, r)| (*n, &s[..], *r)).collect();
        // The rule emits the backward composites.
        let decl: String = inputs
            .iter()
            .map(|(n, s, _)| format!("  input %{n}: f32[{}, {}, {}]\n", s[0], s[1], s[2]))
            .collect();
        let src = format!(
            "graph @t {{\n{decl}{body}\n  %s: f32[] = reduce_sum %y {{axes = [0, 1, 2]}}\n  output %s\n}}\n"
        );
        let g = text::parse(&src).unwrap().graph;
        let wrt: Vec<ValueId> = ["q", "k", "v"].map(|n| g.find(n).unwrap()).to_vec();
        let grads = differentiate(&g, g.find("s").unwrap(), &wrt).unwrap();
        let ops: Vec<&str> = grads
            .graph
            .values
            .iter()
            .filter_map(|v| match &v.def {
                smelt_compiler::ir::Def::Node { op, .. } => Some(op.name()),
                _ => None,
            })
            .collect();
        for name in [
            "attention_lse",
            "attention_grad_q",
            "attention_grad_k",
            "attention_grad_v",
        ] {
            assert_eq!(
                ops.iter().filter(|&&o| o == name).count(),
                1,
                "{name} in {ops:?}"
            );
        }
        assert!(!ops.contains(&"softmax"), "{ops:?}");
        check(&body, &inputs, &["q", "k", "v"]);
    }
    let (q, k, v) = (
        &[2usize, 3, 4][..],
        &[2usize, 5, 4][..],
        &[2usize, 5, 2][..],
    );
    let (dy, stat) = (&[2usize, 3, 2][..], &[2usize, 3][..]);
    for causal in [true, false] {
        let attrs = format!("{{causal = {causal}, scale = 0.4}}");
        check(
            &format!("  %y = attention_lse %q, %k {attrs}"),
            &[("q", q, ANY), ("k", k, ANY)],
            &["q", "k"],
        );
        let grad_inputs = [
            ("q", q, ANY),
            ("k", k, ANY),
            ("v", v, ANY),
            ("dy", dy, ANY),
            ("lse", stat, POS),
            ("delta", stat, ANY),
        ];
        for part in ["q", "k"] {
            check(
                &format!("  %y = attention_grad_{part} %q, %k, %v, %dy, %lse, %delta {attrs}"),
                &grad_inputs,
                &["q", "k", "v", "dy", "lse", "delta"],
            );
        }
        check(
            &format!("  %y = attention_grad_v %q, %k, %dy, %lse {attrs}"),
            &[
                grad_inputs[0],
                grad_inputs[1],
                grad_inputs[3],
                grad_inputs[4],
            ],
            &["q", "k", "dy", "lse"],
        );
    }
}

/// layer_norm and rms_norm on `x` of `shape` (last axis normalised), every operand.
fn check_norms(shape: &[usize]) {
    let last = &shape[shape.len() - 1..];
    let norm = [("x", shape, ANY), ("g", last, POS), ("b", last, ANY)];
    check(
        "  %y = layer_norm %x, %g, %b {eps = 1e-5}",
        &norm,
        &["x", "g", "b"],
    );
    check(
        "  %y = rms_norm %x, %g {eps = 1e-6}",
        &norm[..2],
        &["x", "g"],
    );
}

/// The row composites' rules emit gradient composites (checked above through the
/// forward ops); here on more than one leading axis and with labels outside the classes,
/// and the gradient composites' own gradients (through their decomposition).
#[test]
fn row_gradient_composites() {
    // dgamma and dbeta sum over two leading axes.
    check_norms(&[2, 3, 5]);
    let norm = [("x", &[2usize, 3, 5][..], ANY)];
    check("  %y = log_softmax %x {axis = 0}", &norm[..1], &["x"]);
    // Labels 5 and -1 pick no class: those rows have no gradient.
    check(
        "  %l: i32[2, 3] = constant {value = [1.0, 5.0, 0.0, 3.0, -1.0, 4.0]}\n  %y = cross_entropy %x, %l",
        &norm[..1],
        &["x"],
    );
    let pair = [("s", &[3usize, 4][..], ANY), ("dy", &[3usize, 4][..], ANY)];
    for op in ["softmax_grad", "log_softmax_grad"] {
        for axis in [0, 1] {
            check(
                &format!("  %y = {op} %s, %dy {{axis = {axis}}}"),
                &pair,
                &["s", "dy"],
            );
        }
    }
    let norm_grad = [
        ("x", &[3usize, 4][..], ANY),
        ("g", &[4usize][..], POS),
        ("dy", &[3usize, 4][..], ANY),
    ];
    check(
        "  %y = layer_norm_grad %x, %g, %dy {eps = 1e-5}",
        &norm_grad,
        &["x", "g", "dy"],
    );
    check(
        "  %y = rms_norm_grad %x, %g, %dy {eps = 1e-6}",
        &norm_grad,
        &["x", "g", "dy"],
    );
    check(
        "  %l: i32[3] = constant {value = [4.0, 0.0, 7.0]}\n  %y = cross_entropy_grad %x, %l, %d",
        &[("x", &[3, 5], ANY), ("d", &[], ANY)],
        &["x", "d"],
    );
}

/// Autodiff differentiates each row composite through its gradient composite, not
/// through the forward decomposition.
#[test]
fn row_composites_emit_gradient_composites() {
    for (forward, grad) in [
        ("softmax %x {axis = 1}", "softmax_grad"),
        ("log_softmax %x {axis = 1}", "log_softmax_grad"),
        ("layer_norm %x, %g, %g {eps = 1e-5}", "layer_norm_grad"),
        ("rms_norm %x, %g {eps = 1e-5}", "rms_norm_grad"),
    ] {
        let src = format!("graph @t {{\n  input %x: f32[2, 5]\n  param %g: f32[5] = ones\n  %y = {forward}\n  %loss: f32[] = reduce_sum %y {{axes = [0, 1]}}\n  output %loss\n}}\n");
        let g = text::parse(&src).unwrap().graph;
        let x = g.find("x").unwrap();
        let grads = differentiate(&g, g.find("loss").unwrap(), &[x]).unwrap();
        let printed = text::print(&grads.graph);
        assert!(printed.contains(&format!(" {grad} ")), "{printed}");
        assert!(!printed.contains("reduce_max"), "{printed}");
    }
    let src = "graph @t {\n  input %x: f32[2, 5]\n  input %t: i32[2]\n  %loss = cross_entropy %x, %t\n  output %loss\n}\n";
    let g = text::parse(src).unwrap().graph;
    let grads = differentiate(&g, g.find("loss").unwrap(), &[g.find("x").unwrap()]).unwrap();
    assert!(text::print(&grads.graph).contains(" cross_entropy_grad "));
}

#[test]
fn symbolic_batch_mean() {
    // The adjoint of a mean over a symbolic axis divides by the size known at run time.
    let src = "graph @t {\n  input %x: f32[B, 3]\n  %m: f32[3] = reduce_mean %x {axes = [0]}\n  %sq = mul %m, %m\n  %loss: f32[] = reduce_sum %sq {axes = [0]}\n  output %loss\n}\n";
    let g = text::parse(src).unwrap().graph;
    let mut rng = Rng(77);
    let feeds: HashMap<String, Tensor> = [(
        "x".to_string(),
        exact(&[4, 3], (0..12).map(|_| rng.uniform(-1.0, 1.0)).collect()),
    )]
    .into();
    compare(&g, g.find("loss").unwrap(), &feeds, &["x"], None, 1e-6);
    // cross_entropy_grad divides by the number of rows the same way.
    let src = "graph @t {\n  input %x: f32[B, 3]\n  input %t: i32[B]\n  %loss = cross_entropy %x, %t\n  output %loss\n}\n";
    let g = text::parse(src).unwrap().graph;
    let mut feeds = feeds;
    feeds.insert(
        "t".to_string(),
        Tensor::from_i64(DType::I32, vec![4], vec![0, 2, 1, 2]),
    );
    compare(&g, g.find("loss").unwrap(), &feeds, &["x"], None, 1e-6);
}

#[test]
fn example_mlp_parameters() {
    let g = common::example("examples/mlp.sir");
    let mut feeds = params::init_params(&g, 1);
    for t in feeds.values_mut() {
        *t = exact(&t.shape, t.to_f64_vec());
    }
    let mut rng = Rng(3);
    feeds.insert(
        "x".into(),
        exact(
            &[2, 784],
            (0..2 * 784).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        ),
    );
    feeds.insert(
        "labels".into(),
        Tensor::from_i64(DType::I32, vec![2], vec![3, 7]),
    );
    let loss = g.find("loss").unwrap();
    compare(
        &g,
        loss,
        &feeds,
        &["w1", "b1", "w2", "b2", "w3", "b3"],
        Some(6),
        1e-6,
    );
}

#[test]
fn gradients_of_unused_parameters_are_zero() {
    let mut b = Builder::new("t");
    let x = b.input("x", TensorType::fixed(DType::F32, &[3])).unwrap();
    let w = b
        .param(
            "unused",
            TensorType::fixed(DType::F32, &[2]),
            smelt_compiler::ir::Init::Ones,
        )
        .unwrap();
    let loss = b.reduce(ReduceOp::Sum, x, vec![0]);
    b.output(loss).unwrap();
    let g = b.finish();
    let grads = differentiate(&g, loss, &[w]).unwrap();
    let gw = grads.grads[0].1;
    assert!(
        matches!(&grads.graph.value(gw).def, smelt_compiler::ir::Def::Node { op: Op::Constant { values }, .. } if values == &[0.0])
    );
}

#[test]
fn conv_with_strides_pads_dilations_and_groups() {
    // Output [1, 4, 3, 4]: H (5 + 1 + 0 − 2) / 2 + 1 = 3, W (5 + 0 + 1 − 3) / 1 + 1 = 4.
    check(
        "  %y = conv %x, %k {strides = [2, 1], pads = [1, 0, 0, 1], dilations = [1, 2], groups = 2}",
        &[("x", &[1, 4, 5, 5], ANY), ("k", &[4, 2, 2, 2], ANY)],
        &["x", "k"],
    );
}
