//! Focused tests of the optimiser's rules, as a table: a small graph in the text form,
//! the rule that must (or must not) fire, and the ops the optimised graph must consist
//! of. Every case is also run in the reference interpreter before and after, which
//! must agree (see `optimize_soundness.rs` for the tolerance).

use smelt_compiler::ir::{text, DType, Def, Graph};
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
use smelt_compiler::passes::decompose;
use smelt_runtime::interp::{execute, Precision};
use smelt_runtime::tensor::Data;
use smelt_runtime::{rng, Tensor};
use std::collections::HashMap;

struct Case {
    /// The graph's body (between `graph @t {` and `}`).
    body: &'static str,
    /// Decompose composites first (to test recognition).
    decompose: bool,
    /// Use the rules that assume finite values.
    finite: bool,
    /// The rule, and whether it must fire (`true`) or must not (`false`).
    rule: (&'static str, bool),
    /// The op names of the result, sorted, space-separated.
    ops: &'static str,
}

const fn case(body: &'static str, rule: (&'static str, bool), ops: &'static str) -> Case {
    Case {
        body,
        decompose: false,
        finite: false,
        rule,
        ops,
    }
}

const X: &str = "input %x: f32[4, 8]\n";

/// `cross_entropy %x, %t` as `decompose` writes it, except that the batch is summed
/// where cross-entropy takes the mean.
const CROSS_ENTROPY_SUMMED: &str = "input %t: i32[4]
%0: f32[4] = reduce_max %x {axes = [1]}
%1: f32[4, 8] = broadcast %0 {dims = [0]}
%2: f32[4, 8] = sub %x, %1
%3: f32[4, 8] = exp %2
%4: f32[4] = reduce_sum %3 {axes = [1]}
%5: f32[4] = log %4
%6: f32[4, 8] = broadcast %5 {dims = [0]}
%7: f32[4, 8] = sub %2, %6
%8: i32[4, 8] = iota {axis = 1}
%9: i32[4, 8] = broadcast %t {dims = [0]}
%10: bool[4, 8] = eq %8, %9
%11: f32[4, 8] = constant {value = 0.0}
%12: f32[4, 8] = select %10, %7, %11
%13: f32[4] = reduce_sum %12 {axes = [1]}
%14: f32[] = reduce_sum %13 {axes = [0]}
%y: f32[] = neg %14
output %y";

fn cases() -> Vec<Case> {
    vec![
        case(
            "%c: f32[4, 8] = constant {value = 1.0}\n%y = mul %x, %c\noutput %y",
            ("algebra/mul-one", true),
            "",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 2.0}\n%y = mul %c, %x\noutput %y",
            ("algebra/mul-one", false),
            "constant mul",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 0.0}\n%y = add %c, %x\noutput %y",
            ("algebra/add-zero", true),
            "",
        ),
        case(
            "%a = neg %x\n%y = neg %a\noutput %y",
            ("algebra/neg-neg", true),
            "",
        ),
        case(
            "%a = exp %x\n%b = neg %a\n%y = sub %x, %b\noutput %y",
            ("algebra/sub-neg", true),
            "add exp",
        ),
        case(
            "%y = sub %x, %x\noutput %y",
            ("algebra/sub-self", false),
            "sub",
        ),
        Case {
            finite: true,
            ..case(
                "%y = sub %x, %x\noutput %y",
                ("algebra/sub-self", true),
                "constant",
            )
        },
        // Fires, but a memory-bound mul costs what the div costs, so the input stays.
        case(
            "%c: f32[4, 8] = constant {value = 4.0}\n%y = div %x, %c\noutput %y",
            ("algebra/div-pow2-to-mul", true),
            "constant div",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 3.0}\n%y = div %x, %c\noutput %y",
            ("algebra/div-pow2-to-mul", false),
            "constant div",
        ),
        // Constant folding (in the analysis): 2 + 3 becomes one constant.
        case(
            "%a: f32[4, 8] = constant {value = 2.0}\n%b: f32[4, 8] = constant {value = 3.0}\n%c = add %a, %b\n%y = mul %x, %c\noutput %y",
            ("algebra/mul-one", false),
            "constant mul",
        ),
        case(
            "%c: f32[4, 8] = constant {value = -1.0}\n%y = mul %x, %c\noutput %y",
            ("algebra/mul-minus-one", true),
            "neg",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 0.0}\n%y = sub %x, %c\noutput %y",
            ("algebra/sub-zero", true),
            "",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 0.0}\n%y = sub %c, %x\noutput %y",
            ("algebra/zero-sub", true),
            "neg",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 1.0}\n%y = div %x, %c\noutput %y",
            ("algebra/div-one", true),
            "",
        ),
        case(
            "%c: f32[4, 8] = constant {value = 1.0}\n%y = div %c, %x\noutput %y",
            ("algebra/div-one", false),
            "constant div",
        ),
        case(
            "input %z: f32[4, 8]\n%n = neg %z\n%y = add %x, %n\noutput %y",
            ("algebra/add-neg", true),
            "sub",
        ),
        case(
            "input %z: f32[4, 8]\n%n = neg %z\n%y = add %n, %x\noutput %y",
            ("algebra/add-neg", true),
            "sub",
        ),
        case(
            "input %z: f32[4, 8]\n%a = neg %x\n%b = neg %z\n%y = mul %a, %b\noutput %y",
            ("algebra/neg-times-neg", true),
            "mul",
        ),
        case(
            "input %z: f32[4, 8]\n%a = neg %x\n%y = mul %a, %z\noutput %y",
            ("algebra/neg-times-neg", false),
            "mul neg",
        ),
        case(
            "%a = max %x, %x\n%b = min %x, %x\n%y = add %a, %b\noutput %y",
            ("algebra/idempotent-max-min", true),
            "add",
        ),
        case(
            "input %m: bool[4, 8]\n%y = select %m, %x, %x\noutput %y",
            ("algebra/select-same", true),
            "",
        ),
        case(
            "%y: f32[4, 8] = cast %x\noutput %y",
            ("algebra/cast-same-type", true),
            "",
        ),
        case(
            "%y: f64[4, 8] = cast %x\noutput %y",
            ("algebra/cast-same-type", false),
            "cast",
        ),
        // `x * 0` is not 0 for infinite or NaN `x`: only with finite values assumed.
        case(
            "%c: f32[4, 8] = constant {value = 0.0}\n%y = mul %x, %c\noutput %y",
            ("algebra/mul-zero", false),
            "constant mul",
        ),
        Case {
            finite: true,
            ..case(
                "%c: f32[4, 8] = constant {value = 0.0}\n%y = mul %c, %x\noutput %y",
                ("algebra/mul-zero", true),
                "constant",
            )
        },
        case(
            "%y = permute %x {perm = [0, 1]}\noutput %y",
            ("layout/permute-identity", true),
            "",
        ),
        case(
            "%y: f32[4, 8] = reshape %x\noutput %y",
            ("layout/reshape-identity", true),
            "",
        ),
        case(
            "%y: f32[8, 4] = reshape %x\noutput %y",
            ("layout/reshape-identity", false),
            "reshape",
        ),
        case(
            "%y: f32[4, 8] = broadcast %x {dims = [0, 1]}\noutput %y",
            ("layout/broadcast-identity", true),
            "",
        ),
        case(
            "input %v: f32[8]\n%a: f32[4, 8] = broadcast %v {dims = [1]}\n%y: f32[2, 4, 8] = broadcast %a {dims = [1, 2]}\noutput %y",
            ("layout/broadcast-broadcast", true),
            "broadcast",
        ),
        case(
            "input %a: f32[8, 4]\ninput %b: f32[6, 8]\n%at = permute %a {perm = [1, 0]}\n%bt = permute %b {perm = [1, 0]}\n%y = matmul %at, %bt\noutput %y",
            ("layout/matmul-of-transposes", true),
            "matmul permute permute",
        ),
        case(
            "%a = exp %x\n%y = permute %a {perm = [1, 0]}\noutput %y",
            ("layout/sink-permute-through-unary", true),
            "exp permute",
        ),
        // A (B C) with a thin middle: (A B) C does far fewer flops.
        case(
            "input %a: f32[4, 256]\ninput %b: f32[256, 4]\ninput %c: f32[4, 256]\n%bc = matmul %b, %c\n%y = matmul %a, %bc\noutput %y",
            ("matmul/assoc-right-to-left", true),
            "matmul matmul",
        ),
        case(
            "input %w: f32[8, 16]\n%c: f32[4, 8] = constant {value = 3.0}\n%s = mul %x, %c\n%y = matmul %s, %w\noutput %y",
            ("matmul/pull-scalar-out", true),
            "constant matmul mul",
        ),
        case(
            "input %w: f32[8, 16]\n%p = matmul %x, %w\n%c: f32[4, 16] = constant {value = 3.0}\n%y = mul %p, %c\noutput %y",
            ("matmul/push-scalar-in", true),
            "constant matmul mul",
        ),
        case(
            "%a = permute %x {perm = [1, 0]}\n%y = permute %a {perm = [1, 0]}\noutput %y",
            ("layout/permute-permute", true),
            "",
        ),
        case(
            "input %z: f32[2, 3, 4]\n%a = permute %z {perm = [1, 2, 0]}\n%y = permute %a {perm = [1, 2, 0]}\n%w = exp %y\noutput %w",
            ("layout/permute-permute", true),
            "exp permute",
        ),
        case(
            "%a: f32[32] = reshape %x\n%b: f32[8, 4] = reshape %a\n%y = exp %b\noutput %y",
            ("layout/reshape-reshape", true),
            "exp reshape",
        ),
        case(
            "input %w: f32[8, 4]\n%xt = permute %x {perm = [1, 0]}\n%wt = permute %w {perm = [1, 0]}\n%p = matmul %wt, %xt\n%y = permute %p {perm = [1, 0]}\noutput %y",
            ("layout/transpose-of-matmul", true),
            "matmul",
        ),
        case(
            "input %w: f32[8, 4]\n%xt = permute %x {perm = [1, 0]}\n%y = matmul %w, %x\n%z = exp %xt\noutput %y, %z",
            ("layout/transpose-of-matmul", false),
            "exp matmul permute",
        ),
        // A transposed product read by a reduction: (x w)ᵀ = wᵀ xᵀ, whose transposes
        // the product reads in place, saves materialising the transpose.
        case(
            "input %w: f32[8, 16]\n%p = matmul %x, %w\n%t = permute %p {perm = [1, 0]}\n%y = reduce_sum %t {axes = [1]}\noutput %y",
            ("layout/transpose-of-matmul", true),
            "matmul permute permute reduce_sum",
        ),
        // Not a swap of the last two axes: no product of transposes to fold.
        case(
            "input %z: f32[2, 4, 8]\ninput %w: f32[2, 8, 16]\n%p = matmul %z, %w\n%t = permute %p {perm = [1, 0, 2]}\n%y = reduce_sum %t {axes = [2]}\noutput %y",
            ("layout/transpose-of-matmul", false),
            "matmul permute reduce_sum",
        ),
        // (A B) C with a thin middle: A (B C) does far fewer flops.
        case(
            "input %a: f32[256, 4]\ninput %b: f32[4, 256]\ninput %c: f32[256, 4]\n%ab = matmul %a, %b\n%y = matmul %ab, %c\noutput %y",
            ("matmul/assoc-left-to-right", true),
            "matmul matmul",
        ),
        case(
            "input %a: f32[64, 64]\ninput %b: f32[64, 64]\ninput %c: f32[64, 64]\n%ab = matmul %a, %b\n%ac = matmul %a, %c\n%y = add %ab, %ac\noutput %y",
            ("matmul/factor-shared-operand", true),
            "add matmul",
        ),
        case(
            "input %a: f32[64, 64]\ninput %b: f32[64, 64]\ninput %c: f32[64, 64]\ninput %d: f32[64, 64]\n%ab = matmul %a, %b\n%cd = matmul %c, %d\n%y = add %ab, %cd\noutput %y",
            ("matmul/factor-shared-operand", false),
            "add matmul matmul",
        ),
        case(
            "input %h: f32[4, 8]\nparam %wq: f32[8, 8] = normal(0.0, 0.1)\nparam %wk: f32[8, 8] = normal(0.0, 0.1)\n%q = matmul %h, %wq\n%k = matmul %h, %wk\noutput %q, %k",
            ("merge/matmuls-sharing-left-operand", true),
            "matmul matmul",
        ),
        Case {
            decompose: true,
            ..case("%y = relu %x\noutput %y", ("composite/recognise", true), "relu")
        },
        Case {
            decompose: true,
            ..case(
                "%y = softmax %x {axis = 1}\noutput %y",
                ("composite/recognise", true),
                "softmax",
            )
        },
        Case {
            decompose: true,
            ..case(
                "%y = gelu %x {approximate = tanh}\noutput %y",
                ("composite/recognise", true),
                "gelu",
            )
        },
        Case {
            decompose: true,
            ..case(
                "param %g: f32[8] = ones\nparam %b: f32[8] = zeros\n%y = layer_norm %x, %g, %b {eps = 1e-5}\noutput %y",
                ("composite/recognise", true),
                "layer_norm",
            )
        },
        Case {
            decompose: true,
            ..case(
                "input %t: i32[4]\n%y = cross_entropy %x, %t\noutput %y",
                ("composite/recognise", true),
                "cross_entropy",
            )
        },
        // Cross-entropy's decomposition with a sum instead of the final mean is not
        // cross_entropy (its log_softmax part still is log_softmax).
        case(
            CROSS_ENTROPY_SUMMED,
            ("composite/recognise", true),
            "broadcast constant eq iota log_softmax neg reduce_sum reduce_sum select",
        ),
        Case {
            decompose: true,
            ..case(
                "input %q: f32[2, 4, 8]\ninput %k: f32[2, 6, 8]\ninput %v: f32[2, 6, 3]\n%y = attention %q, %k, %v {causal = false, scale = 0.5}\noutput %y",
                ("composite/recognise", true),
                "attention",
            )
        },
        Case {
            decompose: true,
            ..case(
                "input %q: f32[2, 4, 8]\ninput %k: f32[2, 4, 8]\ninput %v: f32[2, 4, 3]\n%y = attention %q, %k, %v {causal = true, scale = 0.125}\noutput %y",
                ("composite/recognise", true),
                "attention",
            )
        },
        // Scores divided by 3 are not scores multiplied by a scale (1/3 is inexact):
        // only the softmax is recognised.
        Case {
            decompose: true,
            ..case(
                "input %q: f32[2, 4, 8]\ninput %k: f32[2, 6, 8]\ninput %v: f32[2, 6, 3]\n%kt = permute %k {perm = [0, 2, 1]}\n%s = matmul %q, %kt\n%c: f32[2, 4, 6] = constant {value = 3.0}\n%d = div %s, %c\n%p = softmax %d {axis = 2}\n%y = matmul %p, %v\noutput %y",
                ("composite/recognise", true),
                "constant div matmul matmul permute softmax",
            )
        },
        // Softmax over the first axis is not recognised as a last-axis softmax.
        Case {
            decompose: true,
            ..case(
                "%y = exp %x\n%s = reduce_sum %y {axes = [1]}\n%t: f32[4, 8] = broadcast %s {dims = [0]}\n%z = div %y, %t\noutput %z",
                ("composite/recognise", false),
                "broadcast div exp reduce_sum",
            )
        },
    ]
}

fn feeds(g: &Graph) -> HashMap<String, Tensor> {
    let mut f = HashMap::new();
    for v in &g.values {
        if matches!(v.def, Def::Node { .. }) {
            continue;
        }
        let shape: Vec<usize> =
            v.ty.dims()
                .iter()
                .map(|d| d.as_static().unwrap() as usize)
                .collect();
        let n = shape.iter().product();
        let seed = rng::seed_for(7, &v.name);
        let xs: Vec<f64> = (0..n)
            .map(|i| 2.0 * rng::uniform01(seed, i as u64) - 1.0)
            .collect();
        // Integer inputs are class labels: spread over [0, 8), the class count here.
        let t = if v.ty.dtype == DType::Bool {
            let data = Data::Bool(xs.iter().map(|x| *x > 0.0).collect());
            Tensor {
                dtype: DType::Bool,
                shape,
                data,
            }
        } else if v.ty.dtype.is_int() {
            let labels = xs.iter().map(|x| ((x + 1.0) * 4.0) as i64).collect();
            Tensor::from_i64(v.ty.dtype, shape, labels)
        } else {
            Tensor::from_f64(v.ty.dtype, shape, xs)
        };
        f.insert(v.name.clone(), t);
    }
    f
}

fn op_names(g: &Graph) -> String {
    let mut names: Vec<&str> = g
        .values
        .iter()
        .filter_map(|v| match &v.def {
            Def::Node { op, .. } => Some(op.name()),
            _ => None,
        })
        .collect();
    names.sort();
    names.join(" ")
}

/// Every rule of the optimiser has a case in the table that makes it fire.
#[test]
fn every_rule_has_a_case_that_fires() {
    let fired: std::collections::BTreeSet<&str> = cases()
        .iter()
        .filter(|c| c.rule.1)
        .map(|c| c.rule.0)
        .collect();
    let missing: Vec<String> = smelt_compiler::optimize::rules::all_rules(true)
        .iter()
        .map(|r| r.name.to_string())
        .filter(|name| !fired.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "rules without a case that fires: {missing:?}"
    );
}

#[test]
fn rule_table() {
    let mut failures = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let src = format!("graph @t {{\n{X}{}\n}}\n", c.body);
        let parsed = text::parse(&src).unwrap_or_else(|e| panic!("case {i}: {e:?}\n{src}"));
        let g = if c.decompose {
            decompose(&parsed.graph)
        } else {
            parsed.graph
        };
        let options = Options {
            assume_finite: c.finite,
            ..Options::default()
        };
        let (opt, report) = optimize(&g, &RooflineTarget::cpu(), &options).unwrap();
        let (rule, must_fire) = c.rule;
        let fired = report.rules_fired.contains_key(rule);
        let shown = format!("case {i}:\n{src}\nresult:\n{}\n{report}", text::print(&opt));
        if fired != must_fire {
            failures.push(format!("rule {rule} fired: {fired}, {shown}"));
        }
        if op_names(&opt) != c.ops {
            failures.push(format!(
                "ops {:?} expected {:?}, {shown}",
                op_names(&opt),
                c.ops
            ));
        }
        let f = feeds(&g);
        let before = execute(&g, &f, Precision::F64).unwrap();
        let after = execute(&opt, &f, Precision::F64).unwrap();
        for (a, b) in before.outputs.iter().zip(&after.outputs) {
            for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
                let ok = c.finite || (x - y).abs() <= 1e-9 * (1.0 + x.abs());
                assert!(ok, "values differ ({x} vs {y}), {shown}");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
