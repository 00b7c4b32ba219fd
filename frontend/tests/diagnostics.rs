//! Malformed programs give the intended diagnostic at the intended place.
//!
//! Each case is (source, a substring of the message, line, column); line 0 means the
//! error is about the program as a whole and has no position.

mod common;

use smelt_frontend::lang::compile;
use std::collections::HashMap;

const CASES: &[(&str, &str, usize, usize)] = &[
    ("let x = 1 $ 2", "unexpected character '$'", 1, 11),
    ("input x: f32[B, 4]\nlet y = x +", "expected an expression, found end of file", 2, 12),
    ("input x: q32[B]", "unknown dtype 'q32'", 1, 10),
    ("input x: f32[B, 4]\noutput y = x @ x", "'@' contraction sizes differ", 2, 14),
    ("input a: f32[2, 3]\ninput b: f32[4]\noutput c = a + b", "do not broadcast", 3, 14),
    ("input a: f32[2]\ninput b: i32[2]\noutput c = a * b", "different dtypes: f32[2] and i32[2]", 3, 14),
    ("input x: f32[2]\noutput y = relu(z)", "unknown name 'z'", 2, 17),
    ("input logits: f32[2]\noutput y = relu(logit)", "did you mean 'logits'", 2, 17),
    ("input x: f32[2]\noutput y = sofmax(x)", "unknown function 'sofmax' (did you mean 'softmax'?)", 2, 12),
    ("input x: f32[B, 4]\nparam w: f32[B, 4] = zeros", "a parameter needs a static shape", 2, 10),
    ("param w: i32[4] = zeros", "a parameter needs a float dtype", 1, 10),
    ("param w: f32[4] = gaussian(1.0)", "unknown initialiser 'gaussian'", 1, 19),
    ("param w: f32[4] = uniform(1.0, -1.0)", "needs finite low < high", 1, 19),
    ("param w: f32[4] = normal(-0.1)", "must be positive", 1, 19),
    ("for i in 0..2 {\n  param w: f32[4] = zeros\n}", "parameter 'w' is declared twice", 2, 3),
    (
        "fn f(x: f32[N, 4]) -> f32[N, 4] {\n  return x\n}\ninput a: f32[2, 3]\noutput y = f(a)",
        "argument 'x' of 'f' has type f32[2, 3], but the signature expects size 4 on axis 1",
        5,
        14,
    ),
    (
        "fn f(x: f32[N, 4]) -> f32[N, 5] {\n  return x\n}\ninput a: f32[2, 4]\noutput y = f(a)",
        "'f' is declared to return f32[2, 5], but its body returns f32[2, 4]",
        1,
        23,
    ),
    (
        "fn f(x: f32[N]) -> f32[N] {\n  return x\n}\ninput a: f32[2]\noutput y = f(a, a)",
        "'f' takes 1 argument(s), found 2",
        5,
        12,
    ),
    ("fn f(x: f32[N]) {\n  let y = x\n}", "must end with 'return EXPR'", 1, 4),
    (
        "fn f(x: f32[N]) -> f32[N] {\n  return f(x)\n}\ninput a: f32[2]\noutput y = f(a)",
        "calls nest deeper than 64",
        2,
        10,
    ),
    ("input x: f32[B, 4]\nloss = relu(x)", "the loss must be a float scalar", 2, 8),
    ("input x: f32[2]", "the model has no outputs", 0, 0),
    ("input t: i32[B, 129]\noutput y = cast(t[:, :130], f32)", "slice bound 130 is out of range", 2, 23),
    ("input t: f32[B, 4]\noutput y = t[0:1]", "run-time size B", 2, 14),
    ("input t: f32[4]\noutput y = t[0, 1]", "too many indices", 2, 12),
    ("input t: f32[4]\noutput y = t[4]", "index 4 is out of range", 2, 14),
    (
        "input t: f32[4, 6]\noutput y = reshape(t, [5, 5])",
        "cannot reshape f32[4, 6] (24 elements) to [5, 5] (25 elements)",
        2,
        23,
    ),
    ("input t: f32[4]\noutput y = softmax(t, axis=2)", "axis 2 is out of range", 2, 12),
    (
        "input x: f32[2, 8]\nparam g: f32[4] = ones\nparam b: f32[8] = zeros\noutput y = layer_norm(x, g, b)",
        "the gain must be f32[8]",
        4,
        26,
    ),
    (
        "input l: f32[2, 10]\ninput y: f32[2]\nloss = cross_entropy(l, y)",
        "labels for logits f32[2, 10] must be integers of shape [2], found f32[2]",
        3,
        25,
    ),
    ("input x: f32[2]\noutput y = softmax(x, dim=0)", "unknown keyword argument 'dim'", 2, 23),
    (
        "input x: f32[2]\nlet y = x\ny = reshape(x, [2, 1])\noutput z = y",
        "cannot assign a value of type f32[2, 1] to 'y', which has type f32[2]",
        3,
        5,
    ),
    ("input x: f32[2]\ny = x", "'y' is not defined", 2, 1),
    (
        "fn f(x: f32[N]) -> f32[N] {\n  config k = 2\n  return x\n}\ninput a: f32[2]\noutput y = f(a)",
        "only allowed at the top level",
        2,
        3,
    ),
    ("return 1", "'return' is only allowed in a function", 1, 1),
    ("let for = 1", "found keyword 'for'", 1, 5),
    ("input x: f32[2]\noutput y = gelu(x, approximate=\"tanh)", "unterminated string", 2, 32),
    ("input x: f32[2]\noutput y = gelu(x, approximate=\"fast\")", "'approximate' must be", 2, 20),
    ("input x: f32[2, 8]\noutput y = top_k_mask(x, 9)", "k must be between 1", 2, 26),
    ("input x: f32[2, 8]\noutput y = top_k(x, 9)", "k must be between 1 and 8", 2, 21),
    ("input x: i32[2, 8]\noutput y = top_k(x, 2)", "argument 1 must be a float tensor", 2, 18),
    ("input x: f32[2, 8]\ninput i: f32[2, 2]\noutput y = take_along(x, i)", "ids must be integers", 3, 26),
    (
        "input x: f32[6, 4]\nparam w: f32[3, 5, 2] = zeros\ninput g: i32[6]\noutput y = grouped_matmul(x, w, g)",
        "w must be [groups, 4, N] of f32",
        4,
        30,
    ),
    (
        "input x: f32[6, 4]\nparam w: f32[3, 4, 2] = zeros\ninput g: i32[5]\noutput y = grouped_matmul(x, w, g)",
        "groups must be integers of shape [6]",
        4,
        33,
    ),
    (
        "fn f(x: f32[N, D]) -> f32[N, D / 3] {\n  return x\n}\ninput a: f32[2, 4]\noutput y = f(a)",
        "4 is not divisible by 3",
        1,
        32,
    ),
    ("for i in 0..100000 {\n}", "at most 4096", 1, 13),
    (
        "input t: i32[2]\noutput y = cast(t * 0.5, f32)",
        "cannot use float 0.5 where a i32 tensor is expected",
        2,
        19,
    ),
    ("input x: f32[2]\noutput y = relu(x)\noutput y = x", "output 'y' is declared twice", 3, 1),
    (
        "input x: f32[B, 4]\nlet y: f32[B, 5] = x\noutput z = y",
        "'y' is annotated f32[B, 5], but its value has type f32[B, 4]",
        2,
        8,
    ),
    ("input x: f32[2]\noutput y = relu(x) as r", "'as' names the parameters", 2, 12),
    ("input x: f32[2]\noutput y = cast((x > 0) + (x > 1), f32)", "'+' is not defined on bool", 2, 25),
    ("input x: f32[2]\noutput y = softmax", "'softmax' is a function", 2, 12),
    ("input x: f32[2]\ninput x: f32[3]", "'x' is already defined", 2, 1),
    ("config n = 2\nconfig n = 3", "config 'n' is defined twice", 2, 1),
    ("let y = x\n[1]", "expected a statement", 2, 1),
    ("config n = zeros([2])", "a config must be a number or a boolean, found a tensor", 1, 12),
];

#[test]
fn malformed_programs_give_the_intended_diagnostic() {
    assert!(CASES.len() >= 30);
    let mut failures = Vec::new();
    for (src, want, line, col) in CASES {
        match compile(src, "test", &HashMap::new()) {
            Ok(_) => failures.push(format!("{src:?}: compiled, expected '{want}'")),
            Err(e) => {
                let at = e.pos.map(|p| (p.line, p.col)).unwrap_or((0, 0));
                if !e.message.contains(want) || at != (*line, *col) {
                    failures.push(format!(
                        "{src:?}:\n   want {line}:{col} '{want}'\n   got  {}:{} '{}'",
                        at.0, at.1, e.message
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unknown_and_ill_typed_overrides_are_reported() {
    let src = "config n = 2\ninput x: f32[n]\noutput y = relu(x)";
    let set = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
    let e = compile(src, "t", &set("m", "3"))
        .err()
        .expect("unknown config");
    assert!(e.message.contains("no config 'm'"), "{}", e.message);
    let e = compile(src, "t", &set("n", "2.5"))
        .err()
        .expect("float for int");
    assert!(e.message.contains("expected an integer"), "{}", e.message);
    let g = compile(src, "t", &set("n", "7"))
        .expect("valid override")
        .graph;
    assert_eq!(g.ty(g.find("x").unwrap()).to_string(), "f32[7]");
}

#[test]
fn diagnostics_render_file_line_col_and_a_caret() {
    let dir = std::env::temp_dir().join(format!("smelt-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.smelt");
    std::fs::write(&path, "input x: f32[2]\noutput y = relu(z)\n").unwrap();
    let err = smelt_frontend::load(&path).expect_err("fails");
    let text = err.to_string();
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("bad.smelt:2:17: error: unknown name 'z'"),
        "{text}"
    );
    assert!(
        text.contains("2 | output y = relu(z)\n  |                 ^"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
