//! Training data: byte-level text for language models, tensors for everything else.
//!
//! | `--data` | meaning |
//! |---|---|
//! | `FILE.txt` | UTF-8 (or any) bytes; each sample is a random window of the model's integer input `[B, L]`, tokens = bytes 0–255 |
//! | `FILE.safetensors` | one tensor per model input, named like it, rows along axis 0 |
//! | a directory | one `NAME.npy` per model input, rows along axis 0 |
//!
//! The batch of step `s` depends only on the seed and `s` (counter-based sampling), so a
//! resumed run sees exactly the batches an uninterrupted one would.

use super::TrainError;
use crate::io::{read_npy, read_safetensors};
use crate::rng;
use crate::tensor::Tensor;
use smelt_compiler::ir::{Bindings, Graph, ValueId};
use std::collections::HashMap;
use std::path::Path;

/// Inputs that the training loop feeds itself, not from data.
pub const LOOP_INPUTS: [&str; 2] = ["lr", "step"];

/// A loaded data set.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// A byte stream for a language model.
    Text(Vec<u8>),
    /// Named tensors sharing a row count.
    Tensors {
        /// `(input name, tensor)`.
        tensors: Vec<(String, Tensor)>,
        /// Rows (axis 0) of each tensor.
        rows: usize,
    },
}

fn data_error(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Data(format!("{}: {}", path.display(), message.into()))
}

impl Dataset {
    /// Reads `path` (see the module docs for the formats).
    pub fn load(path: &Path) -> Result<Dataset, TrainError> {
        if path.is_dir() {
            let mut tensors = Vec::new();
            let entries = std::fs::read_dir(path).map_err(|e| data_error(path, e.to_string()))?;
            for entry in entries {
                let p = entry.map_err(|e| data_error(path, e.to_string()))?.path();
                if p.extension().and_then(|e| e.to_str()) == Some("npy") {
                    let name = p
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default()
                        .to_string();
                    tensors.push((
                        name,
                        read_npy(&p).map_err(|e| TrainError::Data(e.to_string()))?,
                    ));
                }
            }
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            return Dataset::from_tensors(path, tensors);
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => {
                let tensors =
                    read_safetensors(path).map_err(|e| TrainError::Data(e.to_string()))?;
                Dataset::from_tensors(path, tensors)
            }
            Some("txt") | Some("text") => {
                let bytes = smelt_compiler::input::read_limited(
                    path,
                    smelt_compiler::input::TENSOR_FILE_LIMIT,
                    "text data file",
                )
                .map_err(|e| data_error(path, e.to_string()))?;
                Ok(Dataset::Text(bytes))
            }
            _ => Err(data_error(
                path,
                "unknown data format (expected .txt, .safetensors, or a directory of .npy files)",
            )),
        }
    }

    fn from_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<Dataset, TrainError> {
        let Some((_, first)) = tensors.first() else {
            return Err(data_error(path, "holds no tensors"));
        };
        let rows = *first
            .shape
            .first()
            .ok_or_else(|| data_error(path, "tensors need a row axis (rank >= 1)"))?;
        if let Some((name, t)) = tensors.iter().find(|(_, t)| t.shape.first() != Some(&rows)) {
            return Err(data_error(
                path,
                format!(
                    "tensor '{name}' has {} rows, others have {rows}",
                    t.shape.first().unwrap_or(&0)
                ),
            ));
        }
        if rows == 0 {
            return Err(data_error(path, "the tensors have no rows"));
        }
        Ok(Dataset::Tensors { tensors, rows })
    }

    /// The model inputs this data set feeds: every input except the loop's own.
    fn data_inputs(graph: &Graph) -> Vec<ValueId> {
        graph
            .inputs()
            .filter(|&id| !LOOP_INPUTS.contains(&graph.value(id).name.as_str()))
            .collect()
    }

    /// The sizes of `graph`'s batch symbols: the leading axis of every data input.
    pub fn batch_bindings(graph: &Graph, batch: usize) -> Bindings {
        Dataset::data_inputs(graph)
            .into_iter()
            .filter_map(|id| match graph.ty(id).dims().first()?.syms() {
                [sym] => Some((sym.clone(), batch as u64)),
                _ => None,
            })
            .collect()
    }

    /// Checks that the data can feed `graph` with batches of `batch` samples.
    pub fn check(&self, graph: &Graph, batch: usize) -> Result<(), TrainError> {
        let inputs = Dataset::data_inputs(graph);
        let mismatch = |m: String| Err(TrainError::Data(m));
        for &id in &inputs {
            let v = graph.value(id);
            if let Some(n) = v.ty.dims().first().and_then(|d| d.as_static()) {
                if n as usize != batch {
                    return mismatch(format!(
                        "input %{} has a fixed batch of {n}, but --batch is {batch}",
                        v.name
                    ));
                }
            }
        }
        match self {
            Dataset::Text(bytes) => {
                let [id] = inputs[..] else {
                    return mismatch(format!(
                        "text data feeds one integer input [B, L]; the model has {} data inputs",
                        inputs.len()
                    ));
                };
                let ty = graph.ty(id);
                let len = match ty.dims() {
                    [_, l] if ty.dtype.is_int() => l.as_static(),
                    _ => None,
                };
                let Some(len) = len else {
                    return mismatch(format!(
                        "text data feeds an integer input [B, L] with static L; %{} is {ty}",
                        graph.value(id).name
                    ));
                };
                if bytes.len() < len as usize {
                    return mismatch(format!(
                        "the text has {} bytes, fewer than one sample of {len} tokens",
                        bytes.len()
                    ));
                }
                Ok(())
            }
            Dataset::Tensors { tensors, .. } => {
                for &id in &inputs {
                    let v = graph.value(id);
                    let Some((_, t)) = tensors.iter().find(|(n, _)| *n == v.name) else {
                        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
                        return mismatch(format!(
                            "no data for input %{} (the data has: {})",
                            v.name,
                            names.join(", ")
                        ));
                    };
                    let row_dims: Vec<String> =
                        v.ty.dims()[1..].iter().map(|d| d.to_string()).collect();
                    let same = t.dtype == v.ty.dtype
                        && t.shape.len() == v.ty.rank()
                        && v.ty.dims()[1..]
                            .iter()
                            .zip(&t.shape[1..])
                            .all(|(d, &n)| d.as_static() == Some(n as u64));
                    if !same {
                        return mismatch(format!(
                            "data '{}' is {}, but input %{} expects {}[rows, {}]",
                            v.name,
                            t.type_string(),
                            v.name,
                            v.ty.dtype,
                            row_dims.join(", ")
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The batch for step `step` (0-based) of a run seeded with `seed`.
    pub fn batch(
        &self,
        graph: &Graph,
        batch: usize,
        seed: u64,
        step: usize,
    ) -> HashMap<String, Tensor> {
        self.batch_part(graph, batch, 0..batch, seed, step)
    }

    /// Samples `part` of the batch of `batch` samples for step `step` (0-based) of a run
    /// seeded with `seed`: a data-parallel rank's share, the same samples a single
    /// process would draw at those positions.
    pub fn batch_part(
        &self,
        graph: &Graph,
        batch: usize,
        part: std::ops::Range<usize>,
        seed: u64,
        step: usize,
    ) -> HashMap<String, Tensor> {
        let stream = rng::seed_for(seed, "smelt.batches");
        let pick = |k: usize, n: usize| {
            ((rng::uniform01(stream, (step * batch + k) as u64) * n as f64) as usize).min(n - 1)
        };
        let (first, batch) = (part.start, part.len());
        let pick = |k: usize, n: usize| pick(first + k, n);
        let inputs = Dataset::data_inputs(graph);
        match self {
            Dataset::Text(bytes) => {
                let id = inputs[0];
                let ty = graph.ty(id);
                let len = ty.dims()[1].as_static().expect("checked: static length") as usize;
                let mut tokens = Vec::with_capacity(batch * len);
                for k in 0..batch {
                    let start = pick(k, bytes.len() - len + 1);
                    tokens.extend(bytes[start..start + len].iter().map(|&b| i64::from(b)));
                }
                HashMap::from([(
                    graph.value(id).name.clone(),
                    Tensor::from_i64(ty.dtype, vec![batch, len], tokens),
                )])
            }
            Dataset::Tensors { tensors, rows } => {
                let picked: Vec<usize> = (0..batch).map(|k| pick(k, *rows)).collect();
                tensors
                    .iter()
                    .filter(|(n, _)| inputs.iter().any(|&id| graph.value(id).name == *n))
                    .map(|(name, t)| {
                        let row: usize = t.shape[1..].iter().product();
                        let index: Vec<usize> = picked
                            .iter()
                            .flat_map(|&r| r * row..(r + 1) * row)
                            .collect();
                        let mut shape = t.shape.clone();
                        shape[0] = batch;
                        (
                            name.clone(),
                            Tensor {
                                dtype: t.dtype,
                                shape,
                                data: t.data.pick(&index),
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    /// Samples (rows or windows) and tokens per batch, for throughput reports.
    pub fn tokens_per_sample(&self, graph: &Graph) -> usize {
        match self {
            Dataset::Text(_) => Dataset::data_inputs(graph)
                .first()
                .and_then(|&id| graph.ty(id).dims().get(1).and_then(|d| d.as_static()))
                .unwrap_or(1) as usize,
            Dataset::Tensors { .. } => 1,
        }
    }
}
