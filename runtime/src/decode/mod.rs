//! Generating tokens with a KV cache on the CPU backend.
//!
//! Two compiled programs come from one model definition (the language's prefill and
//! decode modes): the prefill program reads a prompt and returns its logits and every
//! attention's keys and values (`present.N.k` / `present.N.v`); the decode program reads
//! new tokens at positions `past_len..`, the cached keys and values (`past.N.k` /
//! `past.N.v`), and returns the same. The cache lives here, one growing buffer per
//! attention and part, laid out `[heads, positions, head_dim]` as the programs use it.

pub mod sample;

use crate::cpu::quant::{QuantFormat, QuantMatrix};
use crate::cpu::{CpuProgram, QuantUse, Resident};
use crate::interp::RunError;
use crate::tensor::Tensor;
use smelt_compiler::ir::{DType, Graph};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a decoder cannot be built or run.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A program lacks an input or output the decoder needs.
    #[error("the {program} program has no {what}")]
    Interface {
        /// `prefill` or `decode`.
        program: &'static str,
        /// What is missing.
        what: String,
    },
    /// A run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The sequence would outgrow the context.
    #[error("the sequence would reach {len} tokens, beyond the context of {context}")]
    Context {
        /// The length it would reach.
        len: usize,
        /// The most allowed.
        context: usize,
    },
    /// No tokens were given.
    #[error("the prompt has no tokens")]
    Empty,
}

/// Where a program's outputs are.
#[derive(Clone, Debug)]
struct Outputs {
    logits: usize,
    /// `(k, v)` output positions per cached attention.
    cache: Vec<(usize, usize)>,
}

impl Outputs {
    fn find(g: &Graph, program: &'static str, attentions: usize) -> Result<Outputs, DecodeError> {
        let at = |name: &str| {
            g.outputs
                .iter()
                .position(|&o| g.value(o).name == name)
                .ok_or_else(|| DecodeError::Interface {
                    program,
                    what: format!("output '{name}'"),
                })
        };
        let cache = (0..attentions)
            .map(|n| {
                Ok((
                    at(&format!("present.{n}.k"))?,
                    at(&format!("present.{n}.v"))?,
                ))
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Outputs {
            logits: at("logits")?,
            cache,
        })
    }
}

/// A model ready to generate one sequence, with its KV cache.
pub struct Decoder {
    prefill: CpuProgram,
    step: CpuProgram,
    /// The weights, and the cache as the decode program's inputs `past.N.k` and
    /// `past.N.v` (`[1, heads, capacity, head_dim]`, the first `len` positions filled),
    /// held in the backend's buffers.
    held: Resident,
    prefill_out: Outputs,
    step_out: Outputs,
    tokens_input: String,
    /// Cache positions allocated per head (a multiple of [`CACHE_STEP`]).
    capacity: usize,
    heads: usize,
    head_dim: usize,
    len: usize,
    context: usize,
}

/// A weight's values for the decoder.
#[derive(Clone, Debug)]
pub enum WeightData {
    /// `f32` values in row-major order.
    F32(Vec<f32>),
    /// A matrix `[k, n]` in a block format, read directly by the products that use it
    /// (or dequantised when the programs use it otherwise).
    Quantised(QuantMatrix),
    /// A lookup table `[rows, k]` whose stored rows are those of the matrix
    /// (`[k, rows]`), read a row at a time by the lookups (or dequantised).
    QuantisedTable(QuantMatrix),
}

impl WeightData {
    /// A 2-D weight of shape `shape` stored in blocks of ggml type `ggml_type` (its
    /// number in GGUF files), if the CPU backend reads that format: a product's weight
    /// `[k, n]` stored as its `n` columns, or with `table` a lookup table `[n, k]`
    /// stored as its rows.
    pub fn quantised(
        ggml_type: u32,
        shape: [usize; 2],
        bytes: &[u8],
        table: bool,
    ) -> Option<WeightData> {
        let (k, n) = if table {
            (shape[1], shape[0])
        } else {
            (shape[0], shape[1])
        };
        let format = match ggml_type {
            2 => QuantFormat::Q4_0,
            3 => QuantFormat::Q4_1,
            8 => QuantFormat::Q8_0,
            12 => QuantFormat::Q4K,
            _ => return None,
        };
        let matrix = QuantMatrix::new(format, k, n, bytes).ok()?;
        Some(if table {
            WeightData::QuantisedTable(matrix)
        } else {
            WeightData::Quantised(matrix)
        })
    }
}

impl Decoder {
    /// A decoder from the compiled prefill and decode programs of one model, its
    /// weights `(name, shape, values)`, and the longest sequence allowed.
    pub fn new(
        prefill: CpuProgram,
        step: CpuProgram,
        weights: Vec<(String, Vec<usize>, WeightData)>,
        context: usize,
    ) -> Result<Decoder, DecodeError> {
        let g = &step.schedule().graph;
        let attentions = g
            .inputs()
            .filter(|&id| g.value(id).name.starts_with("past.") && g.value(id).name.ends_with(".k"))
            .count();
        let missing = |what: &str| DecodeError::Interface {
            program: "decode",
            what: what.to_string(),
        };
        let first = g
            .find("past.0.k")
            .ok_or_else(|| missing("input 'past.0.k'"))?;
        let dims = g.ty(first).dims();
        let (heads, head_dim) = match (
            dims.len(),
            dims.get(1).and_then(|d| d.as_static()),
            dims.get(3).and_then(|d| d.as_static()),
        ) {
            (4, Some(h), Some(d)) => (h as usize, d as usize),
            _ => return Err(missing("cache input of type f32[B, heads, past, head_dim]")),
        };
        let tokens_input = g
            .inputs()
            .find(|&id| g.ty(id).dtype.is_int() && g.ty(id).rank() == 2)
            .map(|id| g.value(id).name.clone())
            .ok_or_else(|| missing("integer token input [B, T]"))?;
        let prefill_out = Outputs::find(&prefill.schedule().graph, "prefill", attentions)?;
        let step_out = Outputs::find(g, "decode", attentions)?;
        let programs = [&prefill, &step];
        let mut held = Resident::default();
        // Equal matrices (a tied head and its embedding table) are held once.
        let mut shared: Vec<Arc<QuantMatrix>> = Vec::new();
        for (name, shape, data) in weights {
            let (matrix, usage) = match data {
                WeightData::F32(v) => {
                    held.insert_f32(&step, name, shape, v)?;
                    continue;
                }
                WeightData::Quantised(q) => (q, QuantUse::Weight),
                WeightData::QuantisedTable(q) => (q, QuantUse::Table),
            };
            let matrix = match shared.iter().find(|s| ***s == matrix) {
                Some(s) => s.clone(),
                None => {
                    shared.push(Arc::new(matrix));
                    shared[shared.len() - 1].clone()
                }
            };
            // Where a program reads it other than its kernels support, it is
            // dequantised instead.
            if held
                .quantise(&programs, &name, matrix.clone(), usage)
                .is_err()
            {
                let values = match usage {
                    QuantUse::Weight => matrix.dequantize(),
                    QuantUse::Table => matrix.dequantize_rows(),
                };
                held.insert_f32(&step, name, shape, values)?;
            }
        }
        Ok(Decoder {
            prefill,
            step,
            held,
            prefill_out,
            step_out,
            tokens_input,
            capacity: 0,
            heads,
            head_dim,
            len: 0,
            context,
        })
    }

    /// Bytes of the weights as held (quantised ones at their block size).
    pub fn weight_bytes(&self) -> usize {
        self.held.size_bytes()
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        for i in 0..self.step_out.cache.len() {
            for part in ["k", "v"] {
                self.held.take_input(&format!("past.{i}.{part}"));
            }
        }
        self.len = 0;
        self.capacity = 0;
    }

    /// Appends `tokens` to the sequence (the whole prompt at first, then one or more
    /// tokens at a time) and returns the logits of every new position, `[n, vocab]`.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, DecodeError> {
        if tokens.is_empty() {
            return Err(DecodeError::Empty);
        }
        let n = tokens.len();
        if self.len + n > self.context {
            return Err(DecodeError::Context {
                len: self.len + n,
                context: self.context,
            });
        }
        let ids = tokens.iter().map(|&t| i64::from(t)).collect();
        let mut feeds = HashMap::from([(
            self.tokens_input.clone(),
            Tensor::from_i64(DType::I32, vec![1, n], ids),
        )]);
        let (program, outputs) = if self.len == 0 {
            (&self.prefill, &self.prefill_out)
        } else {
            feeds.insert(
                "past_len".into(),
                Tensor::from_i64(DType::I32, vec![1], vec![self.len as i64]),
            );
            (&self.step, &self.step_out)
        };
        // The steps run on a thread of rayon's pool, so its parallel loops use that
        // thread and one other while the caller sleeps; run from outside the pool,
        // the caller would share the cores with workers spinning between the many
        // small loops of a decode step (measured: 52 → 60 tok/s on 2 cores). Training
        // steps, with fewer and larger loops, did not gain, so only decoding does this.
        let held = &self.held;
        let (out, _) = rayon::scope(|_| program.run_resident(&feeds, held))?;
        let (heads, d, len) = (self.heads, self.head_dim, self.len);
        let capacity = match len + n {
            needed if needed > self.capacity => needed.next_multiple_of(CACHE_STEP),
            _ => self.capacity,
        };
        let rows = Rows { heads, d, len, n };
        for (i, &(k, v)) in outputs.cache.iter().enumerate() {
            for (part, at) in [("k", k), ("v", v)] {
                let name = format!("past.{i}.{part}");
                let old = self.held.take_input(&name).unwrap_or_default();
                let cache = rows.place(old, self.capacity, capacity, out[at].floats());
                self.held
                    .set_input(&name, vec![1, heads, capacity, d], cache);
            }
        }
        self.capacity = capacity;
        self.len += n;
        let logits = out[outputs.logits].floats();
        let vocab = logits.len() / n;
        Ok(logits
            .chunks(vocab)
            .map(|row| row.iter().map(|&x| x as f32).collect())
            .collect())
    }
}

/// Cache positions are allocated this many at a time: a decode step writes its rows in
/// place, and the decode program sees a new `past` size (and makes a new memory plan)
/// only when the cache grows. Positions at or after `past_len` are masked out.
const CACHE_STEP: usize = 64;

/// Where one run's new cache rows go: `n` rows per head after `len` filled ones, each
/// `d` values, for `heads` heads.
struct Rows {
    heads: usize,
    d: usize,
    len: usize,
    n: usize,
}

impl Rows {
    /// The cache `[heads, capacity, d]` holding `old` (`[heads, old_capacity, d]`, its
    /// first `len` rows filled) and then the `new` rows `[heads, n, d]`: written in
    /// place when the capacity is unchanged, else copied into a larger buffer.
    fn place(&self, old: Vec<f32>, old_capacity: usize, capacity: usize, new: &[f64]) -> Vec<f32> {
        let Rows { heads, d, len, n } = *self;
        let mut cache = if capacity == old_capacity && old.len() == heads * capacity * d {
            old
        } else {
            let mut grown = vec![0.0; heads * capacity * d];
            for h in 0..heads {
                let (from, to) = (h * old_capacity * d, h * capacity * d);
                grown[to..to + len * d].copy_from_slice(&old[from..from + len * d]);
            }
            grown
        };
        for h in 0..heads {
            let at = (h * capacity + len) * d;
            let rows = &new[h * n * d..(h + 1) * n * d];
            for (c, &x) in cache[at..at + n * d].iter_mut().zip(rows) {
                *c = x as f32;
            }
        }
        cache
    }
}
