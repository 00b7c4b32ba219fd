//! Helpers shared by the language tests: loading sources and running graphs on
//! random (never all-zero) inputs in the reference interpreter.

#![allow(dead_code)]

use smelt_compiler::ir::{Bindings, Graph};
use smelt_frontend::{lang, Model};
use smelt_runtime::{interp, params, Precision, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Test data made by a script into `$VAR` (default `target/DEFAULT`), recognised by
/// the file `marker` in it. Without it the test skips, saying how to make it, except
/// under `CI`, where that is a failure.
pub fn script_data(var: &str, default: &str, marker: &str, make: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target").join(default));
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    let why = format!("test data not found in {} (run: {make} {0})", dir.display());
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// Loads `examples/NAME` through the public entry point.
pub fn load_example(name: &str) -> Model {
    let path = root().join("examples").join(name);
    smelt_frontend::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Compiles a source text, returning the graph or the error.
pub fn compile(src: &str) -> Result<Graph, lang::LangError> {
    lang::compile(src, "test", &HashMap::new()).map(|l| l.graph)
}

/// A small deterministic generator (splitmix64), so inputs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn float(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Runs `graph` with every symbolic dimension bound to `size`, float inputs uniform in
/// [-1, 1), integer inputs uniform in `[0, int_bound(name))`, and parameters from their
/// initialisers. Returns the outputs by name.
pub fn run(graph: &Graph, size: u64, int_bound: impl Fn(&str) -> i64) -> HashMap<String, Tensor> {
    let mut rng = Rng::new(7);
    let mut bindings = Bindings::new();
    for id in graph.inputs() {
        for d in graph.ty(id).dims() {
            for s in d.syms() {
                bindings.insert(s.clone(), size);
            }
        }
    }
    let mut feeds = params::init_params(graph, 1);
    for id in graph.inputs() {
        let v = graph.value(id);
        let shape = v.ty.shape.eval(&bindings).expect("all symbols bound");
        let n: usize = shape.iter().product();
        let t = if v.ty.dtype.is_int() {
            let bound = int_bound(&v.name).max(1) as u64;
            let vals = (0..n).map(|_| (rng.next() % bound) as i64).collect();
            Tensor::from_i64(v.ty.dtype, shape, vals)
        } else {
            let vals = (0..n).map(|_| rng.float()).collect();
            Tensor::from_f64(v.ty.dtype, shape, vals)
        };
        feeds.insert(v.name.clone(), t);
    }
    let outputs = interp::run(graph, &feeds, Precision::F32)
        .unwrap_or_else(|e| panic!("{}: {e}", graph.name));
    graph
        .outputs
        .iter()
        .map(|&o| graph.value(o).name.clone())
        .zip(outputs)
        .collect()
}

/// The single value of a scalar tensor.
pub fn scalar(t: &Tensor) -> f64 {
    assert_eq!(t.numel(), 1, "expected a scalar, found {}", t.type_string());
    t.to_f64_vec()[0]
}
