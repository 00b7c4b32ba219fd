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
