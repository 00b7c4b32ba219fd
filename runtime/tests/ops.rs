//! What every op computes, checked on small cases written in the text form:
//! `check(graph, inputs, expected)`. Expected values are worked out by hand or by an
//! independent formula, never by the interpreter itself.

use smelt_compiler::ir::ops::UnaryOp;
use smelt_compiler::ir::{text, DType};
use smelt_runtime::{interp, Data, Precision, Tensor};
use std::collections::HashMap;

fn f32s(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, shape.to_vec(), v.to_vec())
}

fn i32s(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_i64(DType::I32, shape.to_vec(), v.to_vec())
}

/// Runs the one-output graph `body` (lines inside `graph @t { ... }`) on `inputs`.
fn eval(body: &str, inputs: &[(&str, Tensor)]) -> Result<Tensor, String> {
    let src = format!("graph @t {{\n{body}\n}}\n");
    let g = text::parse(&src).map_err(|e| format!("{e}\n{src}"))?.graph;
    let feeds: HashMap<String, Tensor> = inputs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    interp::run(&g, &feeds, Precision::F64)
        .map(|mut o| o.remove(0))
        .map_err(|e| e.to_string())
}

fn check(body: &str, inputs: &[(&str, Tensor)], shape: &[usize], want: &[f64]) {
    let got = eval(body, inputs).unwrap();
    assert_eq!(got.shape, shape, "shape of\n{body}");
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= 1e-12 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(
            ok,
            "element {i}: got {g}, want {w} in\n{body}\n(all: {got:?})"
        );
    }
}

/// An independent formula for an elementwise op.
type Formula = fn(f64) -> f64;
type BoxedFormula = Box<dyn Fn(f64) -> f64>;

/// `x` rounded to f32, as an f32 tensor stores it.
fn f32r(x: f64) -> f64 {
    x as f32 as f64
}

fn x4() -> Tensor {
    f32s(&[4], &[0.5, -1.25, 2.0, 3.5])
}

#[test]
fn unary_math_matches_std() {
    let xs = [0.5, -1.25, 2.0, 3.5];
    // Formulas written here, independent of the op table; every op must have one.
    let cases: [(&str, Formula); 16] = [
        ("neg", |x| -x),
        ("abs", f64::abs),
        ("exp", f64::exp),
        ("log", f64::ln),
        ("sqrt", f64::sqrt),
        ("rsqrt", |x| 1.0 / x.sqrt()),
        ("recip", |x| 1.0 / x),
        ("tanh", f64::tanh),
        ("erf", |x| libm_erf(x)),
        ("sin", f64::sin),
        ("cos", f64::cos),
        ("softsign", |x| x / (1.0 + x.abs())),
        ("sinh", |x| (x.exp() - (-x).exp()) / 2.0),
        ("cosh", |x| (x.exp() + (-x).exp()) / 2.0),
        ("asinh", |x| (x + (x * x + 1.0).sqrt()).ln()),
        ("softplus", |x| (1.0 + x.exp()).ln()),
    ];
    for op in UnaryOp::ALL {
        assert!(
            cases.iter().any(|(name, _)| *name == op.name()),
            "'{}' has no independent formula here",
            op.name()
        );
    }
    for (name, f) in cases {
        let want: Vec<f64> = xs.iter().map(|&x| f(x)).collect();
        check(
            &format!("input %x: f32[4]\n%y = {name} %x\noutput %y"),
            &[("x", x4())],
            &[4],
            &want,
        );
    }
}

/// erf by numerical integration (Simpson), independent of the interpreter's libm.
fn libm_erf(x: f64) -> f64 {
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn binary_arithmetic_and_comparisons() {
    let b = f32s(&[4], &[2.0, 2.0, -1.0, 3.5]);
    let inputs = [("a", x4()), ("b", b)];
    let two = |op: &str| format!("input %a: f32[4]\ninput %b: f32[4]\n%y = {op} %a, %b\noutput %y");
    check(&two("add"), &inputs, &[4], &[2.5, 0.75, 1.0, 7.0]);
    check(&two("sub"), &inputs, &[4], &[-1.5, -3.25, 3.0, 0.0]);
    check(&two("mul"), &inputs, &[4], &[1.0, -2.5, -2.0, 12.25]);
    check(&two("div"), &inputs, &[4], &[0.25, -0.625, -2.0, 1.0]);
    check(&two("max"), &inputs, &[4], &[2.0, 2.0, 2.0, 3.5]);
    check(&two("min"), &inputs, &[4], &[0.5, -1.25, -1.0, 3.5]);
    check(
        &two("pow"),
        &inputs,
        &[4],
        &[0.25, 1.5625, 0.5, 3.5f64.powf(3.5)],
    );
    check(&two("eq"), &inputs, &[4], &[0.0, 0.0, 0.0, 1.0]);
    check(&two("ne"), &inputs, &[4], &[1.0, 1.0, 1.0, 0.0]);
    check(&two("lt"), &inputs, &[4], &[1.0, 1.0, 0.0, 0.0]);
    check(&two("le"), &inputs, &[4], &[1.0, 1.0, 0.0, 1.0]);
    check(&two("gt"), &inputs, &[4], &[0.0, 0.0, 1.0, 0.0]);
    check(&two("ge"), &inputs, &[4], &[0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn integer_arithmetic_truncates_and_wraps() {
    let a = i32s(&[3], &[7, -7, i32::MAX as i64]);
    let b = i32s(&[3], &[2, 2, 1]);
    let body =
        |op: &str| format!("input %a: i32[3]\ninput %b: i32[3]\n%y = {op} %a, %b\noutput %y");
    check(
        &body("div"),
        &[("a", a.clone()), ("b", b.clone())],
        &[3],
        &[3.0, -3.0, i32::MAX as f64],
    );
    check(
        &body("add"),
        &[("a", a.clone()), ("b", b.clone())],
        &[3],
        &[9.0, -5.0, i32::MIN as f64],
    );
    let zero = i32s(&[3], &[1, 0, 1]);
    let err = eval(&body("div"), &[("a", a), ("b", zero)]).unwrap_err();
    assert!(err.contains("integer division by zero"), "{err}");
}

#[test]
fn select_and_cast() {
    let body =
        "input %a: f32[4]\ninput %b: f32[4]\n%c = gt %a, %b\n%y = select %c, %a, %b\noutput %y";
    check(
        body,
        &[("a", x4()), ("b", f32s(&[4], &[1.0, 1.0, 1.0, 1.0]))],
        &[4],
        &[1.0, 1.0, 2.0, 3.5],
    );
    let body = "input %a: f32[4]\n%y: i32[4] = cast %a\noutput %y";
    check(body, &[("a", x4())], &[4], &[0.0, -1.0, 2.0, 3.0]);
    let body = "input %a: i32[2]\n%y: f32[2] = cast %a\n%z: bool[2] = cast %a\n%w: f32[2] = cast %z\n%o = add %y, %w\noutput %o";
    check(body, &[("a", i32s(&[2], &[0, 5]))], &[2], &[0.0, 6.0]);
    let body = "input %a: f32[1]\n%y: bf16[1] = cast %a\noutput %y";
    check(
        body,
        &[("a", f32s(&[1], &[1.0 + 1.0 / 512.0]))],
        &[1],
        &[1.0],
    );
}

#[test]
fn reductions_drop_their_axes() {
    let m = f32s(&[2, 3], &[1.0, 2.0, 3.0, -4.0, 5.0, 6.0]);
    let body = |op: &str, axes: &str, ty: &str| {
        format!("input %m: f32[2, 3]\n%y: {ty} = {op} %m {{axes = {axes}}}\noutput %y")
    };
    check(
        &body("reduce_sum", "[1]", "f32[2]"),
        &[("m", m.clone())],
        &[2],
        &[6.0, 7.0],
    );
    check(
        &body("reduce_sum", "[0]", "f32[3]"),
        &[("m", m.clone())],
        &[3],
        &[-3.0, 7.0, 9.0],
    );
    check(
        &body("reduce_max", "[0, 1]", "f32[]"),
        &[("m", m.clone())],
        &[],
        &[6.0],
    );
    check(
        &body("reduce_mean", "[1]", "f32[2]"),
        &[("m", m.clone())],
        &[2],
        &[2.0, 7.0 / 3.0],
    );
    check(
        &body("reduce_sum", "[]", "f32[2, 3]"),
        &[("m", m)],
        &[2, 3],
        &[1.0, 2.0, 3.0, -4.0, 5.0, 6.0],
    );
}

#[test]
fn batched_matmul() {
    let a = f32s(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = f32s(&[2, 2, 2], &[1.0, 0.0, 0.0, 1.0, 2.0, 1.0, 1.0, 2.0]);
    let body = "input %a: f32[2, 1, 2]\ninput %b: f32[2, 2, 2]\n%y = matmul %a, %b\noutput %y";
    check(
        body,
        &[("a", a), ("b", b)],
        &[2, 1, 2],
        &[1.0, 2.0, 10.0, 11.0],
    );
}

#[test]
fn movement_ops() {
    let m = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let one = |line: &str| format!("input %m: f32[2, 3]\n{line}\noutput %y");
    check(
        &one("%y: f32[3, 2] = reshape %m"),
        &[("m", m.clone())],
        &[3, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    check(
        &one("%y = permute %m {perm = [1, 0]}"),
        &[("m", m.clone())],
        &[3, 2],
        &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
    );
    check(
        &one("%y = slice %m {axis = 1, start = 0, end = 3, step = 2}"),
        &[("m", m.clone())],
        &[2, 2],
        &[1.0, 3.0, 4.0, 6.0],
    );
    check(
        &one("%y = slice %m {axis = 0, start = 1, end = 2, step = 1}"),
        &[("m", m.clone())],
        &[1, 3],
        &[4.0, 5.0, 6.0],
    );
    check(
        &one("%y = concat %m, %m {axis = 0}"),
        &[("m", m.clone())],
        &[4, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    check(
        &one("%y = concat %m, %m {axis = 1}"),
        &[("m", m.clone())],
        &[2, 6],
        &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0],
    );
    check(
        &one("%y = pad %m {axis = 1, low = 1, high = 2, value = -1.0}"),
        &[("m", m.clone())],
        &[2, 6],
        &[
            -1.0, 1.0, 2.0, 3.0, -1.0, -1.0, -1.0, 4.0, 5.0, 6.0, -1.0, -1.0,
        ],
    );
    check(
        &one("%y: f32[2, 2, 3] = broadcast %m {dims = [0, 2]}"),
        &[("m", m.clone())],
        &[2, 2, 3],
        &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0],
    );
    let col = f32s(&[2, 1], &[7.0, 8.0]);
    let body = "input %c: f32[2, 1]\n%y: f32[2, 3] = broadcast %c {dims = [0, 1]}\noutput %y";
    check(
        body,
        &[("c", col)],
        &[2, 3],
        &[7.0, 7.0, 7.0, 8.0, 8.0, 8.0],
    );
}

#[test]
fn gather_and_scatter_add_are_adjoint() {
    let table = f32s(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let idx = i32s(&[2, 2], &[2, 0, 2, 1]);
    let body = "input %t: f32[3, 2]\ninput %i: i32[2, 2]\n%y = gather %t, %i {axis = 0}\noutput %y";
    check(
        body,
        &[("t", table.clone()), ("i", idx.clone())],
        &[2, 2, 2],
        &[5.0, 6.0, 1.0, 2.0, 5.0, 6.0, 3.0, 4.0],
    );
    let body = "input %t: f32[3, 2]\ninput %i: i32[3]\n%y = gather %t, %i {axis = 1}\noutput %y";
    check(
        body,
        &[("t", table.clone()), ("i", i32s(&[3], &[1, 1, 0]))],
        &[3, 3],
        &[2.0, 2.0, 1.0, 4.0, 4.0, 3.0, 6.0, 6.0, 5.0],
    );
    let upd = f32s(
        &[2, 2, 2],
        &[1.0, 1.0, 10.0, 10.0, 100.0, 100.0, 1000.0, 1000.0],
    );
    let body = "input %t: f32[3, 2]\ninput %i: i32[2, 2]\ninput %u: f32[2, 2, 2]\n%y = scatter_add %t, %i, %u {axis = 0}\noutput %y";
    check(
        body,
        &[("t", table.clone()), ("i", idx), ("u", upd)],
        &[3, 2],
        &[11.0, 12.0, 1003.0, 1004.0, 106.0, 107.0],
    );
    let bad = i32s(&[2, 2], &[0, 3, 0, 0]);
    let err = eval(
        "input %t: f32[3, 2]\ninput %i: i32[2, 2]\n%y = gather %t, %i {axis = 0}\noutput %y",
        &[("t", table), ("i", bad)],
    )
    .unwrap_err();
    assert!(
        err.contains("index 3 is out of range 0..3 on axis 0"),
        "{err}"
    );
}

#[test]
fn top_k_orders_largest_first_with_ties_to_the_lower_index() {
    let x = f32s(
        &[3, 4],
        &[
            0.5,
            2.0,
            -1.0,
            2.0, // a tie: index 1 before 3
            f64::NAN,
            1.0,
            f64::INFINITY,
            0.0, // NaN ranks as +inf, before the later +inf
            -3.0,
            -2.0,
            -1.0,
            -4.0,
        ],
    );
    let body = "input %x: f32[3, 4]\n%y = top_k %x {k = 3}\noutput %y";
    check(
        body,
        &[("x", x)],
        &[3, 3],
        &[1.0, 3.0, 0.0, 0.0, 2.0, 1.0, 2.0, 1.0, 0.0],
    );
    let err =
        text::parse("graph @t {\n  input %x: f32[3, 4]\n  %y = top_k %x {k = 5}\n  output %y\n}\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("1 <= k <= 4"), "{err}");
}

#[test]
fn grouped_matmul_multiplies_each_row_by_its_groups_matrix() {
    // w[0] = [[1, 0], [0, 1]] (identity), w[1] = [[0, 1], [1, 0]] (swap), w[2] = 2·identity.
    let w = f32s(
        &[3, 2, 2],
        &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.0, 2.0],
    );
    let x = f32s(&[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let group = |v: &[i64]| Tensor::from_i64(DType::I64, vec![4], v.to_vec());
    let body = "input %x: f32[4, 2]\ninput %w: f32[3, 2, 2]\ninput %g: i64[4]\n%y = grouped_matmul %x, %w, %g\noutput %y";
    check(
        body,
        &[
            ("x", x.clone()),
            ("w", w.clone()),
            ("g", group(&[1, 0, 2, 1])),
        ],
        &[4, 2],
        &[2.0, 1.0, 3.0, 4.0, 10.0, 12.0, 8.0, 7.0],
    );
    // dw[e] = Σ x[t]ᵀ dy[t] over e's rows; group 1 has none, so dw[1] = 0.
    let dy = f32s(&[4, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0]);
    let body = "input %x: f32[4, 2]\ninput %d: f32[4, 2]\ninput %g: i64[4]\n%y = grouped_matmul_weight_grad %x, %d, %g {groups = 3}\noutput %y";
    check(
        body,
        &[("x", x.clone()), ("d", dy), ("g", group(&[0, 2, 0, 2]))],
        &[3, 2, 2],
        &[
            1.0 + 5.0,
            5.0,
            2.0 + 6.0,
            6.0, // rows 0 and 2
            0.0,
            0.0,
            0.0,
            0.0, // empty group
            14.0,
            3.0,
            16.0,
            4.0, // rows 1 and 3
        ],
    );
    let err = eval(
        "input %x: f32[4, 2]\ninput %w: f32[3, 2, 2]\ninput %g: i64[4]\n%y = grouped_matmul %x, %w, %g\noutput %y",
        &[("x", x), ("w", w), ("g", group(&[0, 3, 0, 0]))],
    )
    .unwrap_err();
    assert!(err.contains("group 3 is out of range 0..3"), "{err}");
}

#[test]
fn source_ops() {
    check(
        "%y: f32[2, 2] = constant {value = [1.0, 2.0, 3.0, 4.0]}\noutput %y",
        &[],
        &[2, 2],
        &[1.0, 2.0, 3.0, 4.0],
    );
    check(
        "%y: i32[2, 3] = iota {axis = 1}\noutput %y",
        &[],
        &[2, 3],
        &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    );
    check(
        "input %x: f32[B]\n%y: f32[B, 2] = constant {value = 0.5}\noutput %y",
        &[("x", f32s(&[3], &[0.0; 3]))],
        &[3, 2],
        &[0.5; 6],
    );
    let u = eval(
        "%y: f32[1000] = random_uniform {low = -2.0, high = 2.0, seed = 9}\noutput %y",
        &[],
    )
    .unwrap()
    .to_f64_vec();
    assert!(u.iter().all(|&v| (-2.0..2.0).contains(&v)));
    let mean = u.iter().sum::<f64>() / 1000.0;
    assert!(mean.abs() < 0.15, "mean {mean}");
    let again = eval(
        "%y: f32[1000] = random_uniform {low = -2.0, high = 2.0, seed = 9}\noutput %y",
        &[],
    )
    .unwrap()
    .to_f64_vec();
    assert_eq!(u, again, "counter-based random numbers are reproducible");
    let n = eval(
        "%y: f32[4000] = random_normal {mean = 1.0, std = 2.0, seed = 1}\noutput %y",
        &[],
    )
    .unwrap()
    .to_f64_vec();
    let mean = n.iter().sum::<f64>() / 4000.0;
    let var = n.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4000.0;
    assert!(
        (mean - 1.0).abs() < 0.1 && (var - 4.0).abs() < 0.3,
        "mean {mean} var {var}"
    );
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
    row.iter().map(|v| (v - m).exp() / s).collect()
}

#[test]
fn activation_composites_match_their_formulas() {
    let xs = [0.5, -1.25, 2.0, 3.5];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let cases: Vec<(&str, BoxedFormula)> = vec![
        ("relu", Box::new(|x: f64| x.max(0.0))),
        ("sigmoid", Box::new(sig)),
        ("silu", Box::new(move |x: f64| x * sig(x))),
        (
            "gelu %x {approximate = none}",
            Box::new(|x: f64| 0.5 * x * (1.0 + libm_erf(x / 2f64.sqrt()))),
        ),
        (
            "gelu %x {approximate = tanh}",
            Box::new(|x: f64| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            }),
        ),
    ];
    for (op, f) in cases {
        let line = if op.contains("%x") {
            format!("%y = {op}")
        } else {
            format!("%y = {op} %x")
        };
        let want: Vec<f64> = xs.iter().map(|&x| f(x)).collect();
        check(
            &format!("input %x: f32[4]\n{line}\noutput %y"),
            &[("x", x4())],
            &[4],
            &want,
        );
    }
}

#[test]
fn normalisation_composites_match_their_formulas() {
    let v = [1.0, 2.0, 4.0, -3.0, 0.5, 0.25];
    let m = f32s(&[2, 3], &v);
    let mut sm = softmax(&v[..3]);
    sm.extend(softmax(&v[3..]));
    check(
        "input %m: f32[2, 3]\n%y = softmax %m {axis = 1}\noutput %y",
        &[("m", m.clone())],
        &[2, 3],
        &sm,
    );
    let lsm: Vec<f64> = sm.iter().map(|p| p.ln()).collect();
    check(
        "input %m: f32[2, 3]\n%y = log_softmax %m {axis = 1}\noutput %y",
        &[("m", m.clone())],
        &[2, 3],
        &lsm,
    );
    let col: Vec<f64> = (0..3).flat_map(|j| softmax(&[v[j], v[j + 3]])).collect();
    let col_t = [col[0], col[2], col[4], col[1], col[3], col[5]];
    check(
        "input %m: f32[2, 3]\n%y = softmax %m {axis = 0}\noutput %y",
        &[("m", m.clone())],
        &[2, 3],
        &col_t,
    );

    let g = f32s(&[3], &[1.0, 2.0, 0.5]);
    let bta = f32s(&[3], &[0.0, 0.1, -0.1]);
    let mut ln = Vec::new();
    let mut rms = Vec::new();
    for row in v.chunks(3) {
        let mean = row.iter().sum::<f64>() / 3.0;
        let var = row.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
        let ms = row.iter().map(|x| x * x).sum::<f64>() / 3.0;
        for (j, x) in row.iter().enumerate() {
            ln.push(
                (x - mean) / (var + 1e-5).sqrt() * [1.0, 2.0, 0.5][j]
                    + [0.0, f32r(0.1), f32r(-0.1)][j],
            );
            rms.push(x / (ms + 1e-6).sqrt() * [1.0, 2.0, 0.5][j]);
        }
    }
    let body = "input %m: f32[2, 3]\ninput %g: f32[3]\ninput %b: f32[3]\n%y = layer_norm %m, %g, %b {eps = 1e-5}\noutput %y";
    check(
        body,
        &[("m", m.clone()), ("g", g.clone()), ("b", bta)],
        &[2, 3],
        &ln,
    );
    let body =
        "input %m: f32[2, 3]\ninput %g: f32[3]\n%y = rms_norm %m, %g {eps = 1e-6}\noutput %y";
    check(body, &[("m", m), ("g", g)], &[2, 3], &rms);
}

#[test]
fn cross_entropy_is_the_mean_negative_log_likelihood() {
    let v = [1.0, 2.0, 4.0, -3.0, 0.5, 0.25];
    let want = -(softmax(&v[..3])[2].ln() + softmax(&v[3..])[0].ln()) / 2.0;
    let body = "input %z: f32[2, 3]\ninput %l: i32[2]\n%y = cross_entropy %z, %l\noutput %y";
    check(
        body,
        &[("z", f32s(&[2, 3], &v)), ("l", i32s(&[2], &[2, 0]))],
        &[],
        &[want],
    );
}

#[test]
fn causal_attention_matches_a_direct_computation() {
    let (t, d) = (3, 2);
    // Values exactly representable in f32, so the inputs are what the formula sees.
    let q: Vec<f64> = (0..t * d).map(|i| f32r((i as f64 * 0.7).sin())).collect();
    let k: Vec<f64> = (0..t * d).map(|i| f32r((i as f64 * 1.3).cos())).collect();
    let v: Vec<f64> = (0..t * d).map(|i| f32r(i as f64 * 0.1 - 0.2)).collect();
    let scale = 0.5;
    let mut want = Vec::new();
    for i in 0..t {
        let scores: Vec<f64> = (0..=i)
            .map(|j| (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f64>() * scale)
            .collect();
        let p = softmax(&scores);
        for c in 0..d {
            want.push((0..=i).map(|j| p[j] * v[j * d + c]).sum());
        }
    }
    let body = "input %q: f32[1, 3, 2]\ninput %k: f32[1, 3, 2]\ninput %v: f32[1, 3, 2]\n%y = attention %q, %k, %v {causal = true, scale = 0.5}\noutput %y";
    let ins = [
        ("q", f32s(&[1, 3, 2], &q)),
        ("k", f32s(&[1, 3, 2], &k)),
        ("v", f32s(&[1, 3, 2], &v)),
    ];
    check(body, &ins, &[1, 3, 2], &want);
}

#[test]
fn f32_precision_rounds_every_result() {
    let g = text::parse("graph @t {\n  input %a: f32[1]\n  %y = add %a, %a\n  output %y\n}\n")
        .unwrap()
        .graph;
    let x = Tensor {
        dtype: DType::F32,
        shape: vec![1],
        data: Data::Float(vec![0.1f32 as f64]),
    };
    let feeds: HashMap<String, Tensor> = [("a".to_string(), x)].into();
    let y = interp::run(&g, &feeds, Precision::F32).unwrap();
    assert_eq!(y[0].to_f64_vec()[0], (0.1f32 + 0.1f32) as f64);
}

#[test]
fn f64_values_keep_f64_precision_in_both_modes() {
    let g = text::parse(
        "graph @t {\n  input %a: f64[1]\n  %e = exp %a\n  %y = add %e, %a\n  output %y\n}\n",
    )
    .unwrap()
    .graph;
    let a = Tensor::from_f64(DType::F64, vec![1], vec![0.1]);
    let feeds: HashMap<String, Tensor> = [("a".to_string(), a)].into();
    for precision in [Precision::F32, Precision::F64] {
        let y = interp::run(&g, &feeds, precision).unwrap();
        assert_eq!(y[0].dtype, DType::F64);
        assert_eq!(y[0].to_f64_vec()[0], 0.1f64.exp() + 0.1);
    }
}
