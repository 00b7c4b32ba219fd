//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use smelt_compiler::ir::ops::unary::Domain;
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use smelt_compiler::ir::{text, Graph};

/// Reads a `.sir` example of the repository (a runtime test needs only the IR, not the
/// frontend).
pub fn example(path: &str) -> Graph {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    text::parse(&std::fs::read_to_string(full).unwrap())
        .unwrap()
        .graph
}

/// A small deterministic generator (xorshift), so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Random feeds for every input (floats in [-2, 2], ints in [0, int_max)) and
/// initialised parameters and state; symbolic dimensions take the size `bind`.
pub fn random_feeds(
    g: &Graph,
    seed: u64,
    bind: usize,
    int_max: i64,
) -> std::collections::HashMap<String, smelt_runtime::Tensor> {
    use smelt_runtime::{params, Tensor};
    let mut rng = Rng(seed);
    let mut feeds = params::init_params(g, seed);
    for id in g.inputs() {
        let v = g.value(id);
        let shape: Vec<usize> =
            v.ty.dims()
                .iter()
                .map(|d| d.as_static().map(|n| n as usize).unwrap_or(bind))
                .collect();
        let n: usize = shape.iter().product();
        let t = if v.ty.dtype.is_float() {
            Tensor::from_f64(
                v.ty.dtype,
                shape,
                (0..n).map(|_| rng.uniform(-2.0, 2.0)).collect(),
            )
        } else {
            Tensor::from_i64(
                v.ty.dtype,
                shape,
                (0..n)
                    .map(|_| (rng.uniform(0.0, int_max as f64) as i64).min(int_max - 1))
                    .collect(),
            )
        };
        feeds.insert(v.name.clone(), t);
    }
    feeds
}

/// Asserts |got − want| ≤ tol · max(1, max|want|) elementwise (NaN matches NaN, and an
/// infinity itself).
pub fn assert_close(
    what: &str,
    got: &smelt_runtime::Tensor,
    want: &smelt_runtime::Tensor,
    tol: f64,
) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let (c, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().fold(
        1.0f64,
        |m, v| if v.is_finite() { m.max(v.abs()) } else { m },
    );
    for (i, (a, b)) in c.iter().zip(&w).enumerate() {
        let same_special = (a.is_nan() && b.is_nan()) || (a.is_infinite() && a == b);
        assert!(
            same_special || (a - b).abs() <= tol * scale,
            "{what}[{i}]: backend {a} vs interpreter {b}"
        );
    }
}

/// Float unary ops finite on every real number (from the op table), and the
/// one-operand composites.
pub fn unary_ops() -> Vec<&'static str> {
    let primitives = UnaryOp::ALL
        .iter()
        .filter(|op| op.def().domain != Domain::Positive)
        .map(|op| op.name());
    primitives.chain(["relu", "sigmoid", "silu"]).collect()
}

/// Float unary ops finite only on positive numbers (tests feed them `abs x`).
pub fn positive_unary_ops() -> Vec<&'static str> {
    UnaryOp::ALL
        .iter()
        .filter(|op| op.def().domain == Domain::Positive)
        .map(|op| op.name())
        .collect()
}

/// Every binary op and comparison, on two floats of one shape.
pub fn binary_ops() -> Vec<&'static str> {
    let arithmetic = BinaryOp::ALL.iter().map(|op| op.name());
    arithmetic
        .chain(CompareOp::ALL.iter().map(|op| op.name()))
        .collect()
}

/// Attention's backward as the gradient rule writes it: the row log-sum-exp, `delta`,
/// and the three adjoints (as a graph body: q, k, v and dy are inputs).
pub fn attention_backward(
    q: &str,
    k: &str,
    v: &str,
    dtype: &str,
    causal: bool,
    scale: f64,
) -> String {
    let dv = v.rsplit(", ").next().unwrap();
    let dy = format!("{}, {dv}", q.rsplit_once(", ").unwrap().0);
    let attrs = format!("{{causal = {causal}, scale = {scale}}}");
    let last = q.split(", ").count() - 1;
    format!(
        "input %q: {dtype}[{q}]\ninput %k: {dtype}[{k}]\ninput %v: {dtype}[{v}]\ninput %dy: {dtype}[{dy}]\n\
         %y = attention %q, %k, %v {attrs}\n\
         %lse = attention_lse %q, %k {attrs}\n\
         %dy_y = mul %dy, %y\n\
         %delta = reduce_sum %dy_y {{axes = [{last}]}}\n\
         %dq = attention_grad_q %q, %k, %v, %dy, %lse, %delta {attrs}\n\
         %dk = attention_grad_k %q, %k, %v, %dy, %lse, %delta {attrs}\n\
         %dv = attention_grad_v %q, %k, %dy, %lse {attrs}\n\
         output %lse, %dq, %dk, %dv"
    )
}
