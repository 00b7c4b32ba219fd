//! Every ```smelt block of docs/language.md compiles and runs in the interpreter, and
//! every built-in appears in one of them.

mod common;

use smelt_frontend::lang::builtin_names;

fn smelt_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in doc.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```smelt") => current = Some((i + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_smelt_block_in_the_language_reference_compiles_and_runs() {
    let doc = std::fs::read_to_string(common::root().join("docs/language.md")).unwrap();
    let blocks = smelt_blocks(&doc);
    assert!(blocks.len() >= 20, "found {} blocks", blocks.len());
    for (line, src) in &blocks {
        let graph = common::compile(src)
            .unwrap_or_else(|e| panic!("docs/language.md block at line {line}: {e:?}\n{src}"));
        let out = common::run(&graph, 2, |_| 2);
        for (name, t) in out {
            assert!(
                t.to_f64_vec().iter().all(|x| !x.is_nan()),
                "block at line {line}: output {name} has NaN"
            );
        }
    }
    let all: String = blocks.iter().map(|(_, s)| s.as_str()).collect();
    for name in builtin_names() {
        assert!(
            all.contains(&format!("{name}(")),
            "built-in '{name}' has no example in docs/language.md"
        );
    }
}
