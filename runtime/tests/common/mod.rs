//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

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
