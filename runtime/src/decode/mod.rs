//! Generating tokens with a KV cache on the CPU backend.
//!
//! Two compiled programs come from one model definition (the language's prefill and
//! decode modes): the prefill program reads a prompt and returns its logits and every
//! attention's keys and values (`present.N.k` / `present.N.v`); the decode program reads
//! new tokens at positions `past_len..`, the cached keys and values from a paged cache
//! (`cache.N.k` / `cache.N.v`, blocks of positions, with a `block_table` row per
//! sequence), and returns the same. The cache lives here (`pool.rs`): blocks shared by
//! all sequences, each sequence owning a list of them.
//!
//! The [`Engine`] owns the programs, the weights and every sequence's cache: it feeds
//! one sequence's prompt (in chunks, if the caller likes) and runs one decode step for
//! many sequences of different lengths at once (continuous batching). [`Decoder`] is
//! the same for one sequence.

mod engine;
mod pool;
pub mod sample;

pub use engine::{Engine, SeqId};

use crate::cpu::quant::{QuantFormat, QuantMatrix};
use crate::cpu::CpuProgram;
use crate::interp::RunError;
use smelt_compiler::ir::Graph;

/// The input of programs lowered for the last token only (the language's
/// `PrefillLast` and `DecodeLast` modes): each row's last new token, `i32[B]`.
pub const LAST_TOKEN: &str = "last_token";

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
    /// The KV cache has no free block left.
    #[error("the KV cache is full ({positions} positions held)")]
    CacheFull {
        /// Positions held by sequences.
        positions: usize,
    },
    /// The sequence was removed, or never started (or named twice in one step).
    #[error("no such sequence")]
    Unknown,
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

/// A model ready to generate one sequence, with its KV cache.
pub struct Decoder {
    engine: Engine,
    sequence: SeqId,
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
        Ok(Decoder::with_engine(Engine::new(
            prefill, step, weights, context,
        )?))
    }

    /// A decoder for one sequence of `engine`.
    pub fn with_engine(mut engine: Engine) -> Decoder {
        let sequence = engine.start();
        Decoder { engine, sequence }
    }

    /// Bytes of the weights as held (quantised ones at their block size).
    pub fn weight_bytes(&self) -> usize {
        self.engine.weight_bytes()
    }

    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.engine.len(self.sequence)
    }

    /// True before the first tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the sequence.
    pub fn reset(&mut self) {
        self.engine.remove(self.sequence);
        self.sequence = self.engine.start();
    }

    /// Appends `tokens` to the sequence (the whole prompt at first, then one or more
    /// tokens at a time) and returns the logits of every new position, `[n, vocab]`.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, DecodeError> {
        self.engine.feed(self.sequence, tokens)
    }
}
