//! Pretrained language models: a GGUF file or a Hugging Face directory becomes the
//! Llama model of `examples/llama.smelt` with its configs set from the checkpoint, its
//! weights renamed to that model's parameters, a tokenizer and a chat template.
//!
//! The graph is never built by hand here: the model language lowers the same source
//! for every purpose ([`Mode::Full`] for `dump-ir` and `run`, [`Mode::Prefill`] and
//! [`Mode::Decode`] for cached generation), so what `dump-ir` shows is what generates.

mod chat;
mod gguf_llama;
mod hf;
mod tokenizer;

pub use chat::{ChatTemplate, Message};
pub use tokenizer::{stop_prefix_len, TextStream, Tokenizer};

/// A weight's block format (re-exported for callers that pick kernels by it).
pub use crate::gguf::GgmlType;

use crate::lang::{self, Mode};
use crate::{Model, Overrides, Source};
use std::path::Path;
use thiserror::Error;

/// The Llama-family model definition every pretrained model is loaded into.
pub const LLAMA_SOURCE: &str = include_str!("../../../examples/llama.smelt");

/// Why a pretrained model cannot be loaded.
#[derive(Debug, Error)]
pub enum LlmError {
    /// The GGUF file is malformed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A file of a Hugging Face directory could not be read.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// An architecture smelt has no model definition for.
    #[error(
        "architecture '{0}' is not supported (smelt knows llama, mistral and smollm checkpoints)"
    )]
    Architecture(String),
    /// Something the architecture needs is missing or malformed.
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer could not be built or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template does not parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The model source does not lower with these configs.
    #[error("the model definition does not compile for this checkpoint: {0}")]
    Lower(String),
}

/// One weight under its model parameter name.
#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    /// The parameter of the model (`layers.0.attn.wq`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values as `f32` in row-major order; empty when only `blocks` are kept.
    pub data: Vec<f32>,
    /// The weight as the checkpoint stores it, in a GGUF block format (with
    /// [`Storage::Blocks`]).
    pub blocks: Option<Blocks>,
}

/// A 2-D weight in a GGUF block format, stored row after row.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocks {
    /// The block format.
    pub ggml_type: crate::gguf::GgmlType,
    /// How the stored rows relate to the weight's shape.
    pub layout: BlockLayout,
    /// The rows' blocks, row after row.
    pub bytes: BlockBytes,
}

/// The bytes of a [`Blocks`] weight: still in the mapped file, or reordered in memory.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockBytes {
    /// As the file stores them, read from its mapping (no copy).
    Mapped(crate::gguf::MappedBytes),
    /// Rows reordered at load (query and key heads).
    Owned(Vec<u8>),
}

impl std::ops::Deref for BlockBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockBytes::Mapped(m) => m,
            BlockBytes::Owned(v) => v,
        }
    }
}

/// How a [`Blocks`] weight's stored rows relate to its shape `[a, b]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockLayout {
    /// A product's weight `[k, n]`: `n` stored rows of `k` values (its columns).
    Columns,
    /// A lookup table `[rows, k]`: its rows as stored.
    Rows,
}

impl Weight {
    /// The values as `f32` in row-major order, dequantised from the blocks if need be.
    pub fn values(&self) -> Vec<f32> {
        match &self.blocks {
            Some(b) if self.data.is_empty() => {
                let (a, c) = (self.shape[0], self.shape[1]);
                let mut rows = Vec::with_capacity(a * c);
                crate::gguf::dequantize(b.ggml_type, &b.bytes, &mut rows);
                match b.layout {
                    BlockLayout::Columns => transposed(&rows, c, a),
                    BlockLayout::Rows => rows,
                }
            }
            _ => self.data.clone(),
        }
    }
}

/// How matrix weights of a quantised checkpoint are kept in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Storage {
    /// Dequantised to `f32` (exact, four or more times the file's size).
    #[default]
    F32,
    /// In the file's block formats, for products that read blocks directly.
    Blocks,
}

/// A loaded pretrained model.
pub struct Pretrained {
    /// Where it came from (shown in messages).
    pub path: String,
    /// The architecture named by the checkpoint (`llama`).
    pub architecture: String,
    /// Config values of [`LLAMA_SOURCE`] (`dim`, `heads`, ...).
    pub configs: Overrides,
    /// Every parameter of the model.
    pub weights: Vec<Weight>,
    /// Text to token ids and back.
    pub tokenizer: Tokenizer,
    /// The chat template, when the checkpoint has one.
    pub chat_template: Option<ChatTemplate>,
    /// Tokens that end a reply.
    pub stop_tokens: Vec<u32>,
    /// The longest sequence the model was trained for.
    pub context: usize,
}

impl Pretrained {
    /// True if `path` looks like a pretrained model (a `.gguf` file or a directory
    /// with `config.json`), not a model file or checkpoint of smelt's own.
    pub fn is_pretrained(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "gguf") || path.join("config.json").is_file()
    }

    /// Loads a `.gguf` file or a Hugging Face directory with every weight as `f32`.
    pub fn open(path: &Path) -> Result<Pretrained, LlmError> {
        Pretrained::open_with(path, Storage::F32)
    }

    /// Loads a `.gguf` file (matrix weights kept as `storage` says) or a Hugging Face
    /// directory (always `f32`).
    pub fn open_with(path: &Path, storage: Storage) -> Result<Pretrained, LlmError> {
        if path.is_dir() {
            hf::open(path)
        } else {
            gguf_llama::open(path, storage)
        }
    }

    /// The model's graph lowered for `mode`, named after the file.
    pub fn lower(&self, mode: Mode) -> Result<Model, LlmError> {
        let name = Path::new(&self.path)
            .file_stem()
            .and_then(|s| s.to_str())
            .map(crate::graph_name)
            .unwrap_or_else(|| "llm".to_string());
        let lowered = lang::compile_for(LLAMA_SOURCE, &name, &self.configs, mode).map_err(|e| {
            let shown = "examples/llama.smelt";
            LlmError::Lower(
                match e.pos {
                    Some(pos) => crate::Diagnostic::at(shown, LLAMA_SOURCE, pos, e.message),
                    None => crate::Diagnostic::in_file(shown, e.message),
                }
                .to_string(),
            )
        })?;
        Ok(Model {
            graph: lowered.graph,
            path: self.path.clone(),
            source: Some(Source {
                text: LLAMA_SOURCE.to_string(),
                positions: lowered.positions,
            }),
        })
    }
}

/// The configs of [`LLAMA_SOURCE`] for one checkpoint, from its hyper-parameters.
#[derive(Clone, Debug)]
struct LlamaShape {
    vocab: usize,
    dim: usize,
    heads: usize,
    kv_heads: usize,
    hidden: usize,
    layers: usize,
    eps: f64,
    rope_base: f64,
}

impl LlamaShape {
    fn configs(&self) -> Result<Overrides, LlmError> {
        let positive = [
            ("vocabulary", self.vocab),
            ("hidden size", self.dim),
            ("head count", self.heads),
            ("key/value head count", self.kv_heads),
            ("feed-forward size", self.hidden),
            ("block count", self.layers),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, n)| *n == 0 || *n > 1 << 24) {
            return Err(LlmError::Invalid(format!(
                "the {what} must lie in 1..=2^24"
            )));
        }
        if !self.dim.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(LlmError::Invalid(format!(
                "{} heads must divide the hidden size {} and be a multiple of the {} key/value heads",
                self.heads, self.dim, self.kv_heads
            )));
        }
        if !(self.eps > 0.0
            && self.eps.is_finite()
            && self.rope_base > 0.0
            && self.rope_base.is_finite())
        {
            return Err(LlmError::Invalid(format!(
                "the norm epsilon ({}) and RoPE base ({}) must be positive",
                self.eps, self.rope_base
            )));
        }
        let head_dim = self.dim / self.heads;
        Ok([
            ("vocab", self.vocab.to_string()),
            ("dim", self.dim.to_string()),
            ("heads", self.heads.to_string()),
            ("kv_heads", self.kv_heads.to_string()),
            ("head_dim", head_dim.to_string()),
            ("hidden", self.hidden.to_string()),
            ("layers", self.layers.to_string()),
            ("eps", format!("{:e}", self.eps)),
            ("rope_base", format!("{:e}", self.rope_base)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }
}

/// `rows × cols` row-major values transposed (a checkpoint's `[out, in]` matrix to
/// the model's `[in, out]`).
fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}
