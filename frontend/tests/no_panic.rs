//! No input makes the frontend panic: random token soups and mutated example files
//! (characters deleted, inserted, swapped) compile or fail with an error, never a panic.

mod common;

use proptest::prelude::*;
use smelt_frontend::lang::compile;
use std::collections::HashMap;

fn examples() -> Vec<String> {
    ["mlp", "gpt", "moe", "llama"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(common::root().join(format!("examples/{n}.smelt")))
                .expect("example exists")
        })
        .collect()
}

/// Fragments that the language uses, so random programs get past the lexer often.
const PIECES: &[&str] = &[
    "input ",
    "param ",
    "let ",
    "for ",
    "fn ",
    "output ",
    "loss ",
    "return ",
    "config ",
    " as ",
    " in ",
    "x",
    "y",
    "B",
    "f32",
    "i32",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ":",
    "=",
    "+",
    "-",
    "*",
    "/",
    "@",
    "..",
    "...",
    "0",
    "1",
    "128",
    "0.5",
    "\n",
    "relu(",
    "softmax(",
    "reshape(",
    "zeros",
    "normal(",
    "top_k_mask(",
    "rope(",
    "attention(",
    "causal_mask(",
    "axis=",
    "-1",
    "\"tanh\"",
    "#",
    "99999999999999999999",
    "1e400",
    "embedding(",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Swap(usize, usize),
    Splice(usize, usize, usize),
}

fn apply(src: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match *e {
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i % n);
            }
            Edit::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Edit::Swap(i, j) if !chars.is_empty() => chars.swap(i % n, j % n),
            // Copy a short stretch elsewhere (duplicates lines, brackets, calls).
            Edit::Splice(from, len, to) if !chars.is_empty() => {
                let from = from % n;
                let piece: Vec<char> = chars[from..(from + len % 40).min(chars.len())].to_vec();
                let at = to % (chars.len() + 1);
                chars.splice(at..at, piece);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (
            any::<usize>(),
            prop_oneof![any::<char>(), proptest::char::range(' ', '~')]
        )
            .prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(a, b, c)| Edit::Splice(a, b, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(which in 0usize..4, edits in prop::collection::vec(edit(), 1..6)) {
        let src = apply(&examples()[which], &edits);
        let _ = compile(&src, "fuzz", &HashMap::new());
    }

    #[test]
    fn token_soup_never_panics(pieces in prop::collection::vec(prop::sample::select(PIECES), 0..60)) {
        let _ = compile(&pieces.concat(), "fuzz", &HashMap::new());
    }

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        let _ = compile(&src, "fuzz", &HashMap::new());
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for src in [
        format!("let x = {}1{}", "(".repeat(5000), ")".repeat(5000)),
        format!("let x = {}1", "-".repeat(5000)),
        format!("let x = 1{}", " + 1".repeat(5000)),
        format!("let x = [{}]", "[".repeat(5000)),
        "for i in 0..4096 { for j in 0..4096 { for k in 0..4096 { } } }".to_string(),
    ] {
        assert!(compile(&src, "deep", &HashMap::new()).is_err());
    }
}

#[test]
fn load_reports_bad_files_without_panicking() {
    let dir = std::env::temp_dir().join(format!("smelt-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.smelt");
    std::fs::write(
        &path,
        apply(&examples()[1], &[Edit::Delete(300), Edit::Swap(10, 900)]),
    )
    .unwrap();
    let _ = smelt_frontend::load(&path);
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(smelt_frontend::load(&path).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
