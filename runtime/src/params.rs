//! First values of parameters, drawn from their declared initialisers.

use crate::rng;
use crate::tensor::Tensor;
use smelt_compiler::ir::{Graph, Init};
use std::collections::HashMap;

/// Initial values for every parameter and state value of `graph`. A random initialiser draws from a
/// stream seeded by `seed` and the parameter's name, so adding or reordering
/// parameters does not change the others' values.
pub fn init_params(graph: &Graph, seed: u64) -> HashMap<String, Tensor> {
    graph
        .params()
        .chain(graph.states())
        .map(|id| {
            let v = graph.value(id);
            let Some(init) = v.def.init() else {
                unreachable!("params() yields params")
            };
            let dims =
                v.ty.shape
                    .as_static()
                    .expect("parameters have static shapes (verified)");
            let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let n: u64 = dims.iter().product();
            let s = rng::seed_for(seed, &v.name);
            let values: Vec<f64> = match *init {
                Init::Zeros => vec![0.0; n as usize],
                Init::Ones => vec![1.0; n as usize],
                Init::Uniform { low, high } => (0..n)
                    .map(|i| low + (high - low) * rng::uniform01(s, i))
                    .collect(),
                Init::Normal { mean, std } => {
                    (0..n).map(|i| mean + std * rng::normal01(s, i)).collect()
                }
            };
            (v.name.clone(), Tensor::from_f64(v.ty.dtype, shape, values))
        })
        .collect()
}
