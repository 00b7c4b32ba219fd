//! smelt's frontend: reads model files into the graph IR.
//!
//! | extension | reader |
//! |---|---|
//! | `.sir` | the IR's canonical text form ([`smelt_compiler::ir::text`]) |
//! | `.json` | the IR's JSON form ([`smelt_compiler::ir::json`]) |
//! | `.smelt` | the smelt model language ([`lang`], `docs/language.md`) |
//! | `.onnx` | ONNX models ([`onnx`]); initializers become constants |
//!
//! [`gguf`] reads llama.cpp's GGUF files (metadata, tensors, dequantisation), and
//! [`llm`] turns a GGUF file or a Hugging Face directory into the Llama model of
//! `examples/llama.smelt` with its weights, tokenizer and chat template.
//!
//! Every reader returns a verified graph, plus (for text sources) where each value is
//! defined, so later errors about a value can point at its line.
#![warn(missing_docs)]

pub mod diagnostic;
pub mod gguf;
pub mod lang;
pub mod llm;
pub mod onnx;

use smelt_compiler::input;
use smelt_compiler::ir::{json, text, Graph, ValueId};
use std::collections::HashMap;
use std::path::Path;
use thiserror::Error;

pub use diagnostic::Diagnostic;

/// A loaded model: its graph and, for text sources, the source positions of values.
#[derive(Debug, Clone)]
pub struct Model {
    /// The verified graph.
    pub graph: Graph,
    /// The file it came from.
    pub path: String,
    /// The source text and value positions, for text formats.
    pub source: Option<Source>,
}

/// Source text of a model, kept for diagnostics.
#[derive(Debug, Clone)]
pub struct Source {
    /// The full text.
    pub text: String,
    /// `positions[id]` is where value `id` is defined.
    pub positions: Vec<text::Pos>,
}

impl Model {
    /// A diagnostic located at the definition of `value` when the source is known.
    pub fn diagnostic_at(&self, value: ValueId, message: String) -> Diagnostic {
        match &self.source {
            Some(src) => {
                Diagnostic::at(&self.path, &src.text, src.positions[value.index()], message)
            }
            None => Diagnostic::in_file(&self.path, message),
        }
    }
}

/// A model file could not be loaded.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LoadError(pub Diagnostic);

/// Config values given on the command line (`--set NAME=VALUE`), by name.
pub type Overrides = HashMap<String, String>;

/// A `--set` argument that is not `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--set expects NAME=VALUE, found '{arg}'")]
pub struct OverrideError {
    /// The argument as given.
    pub arg: String,
}

/// Parses one `--set NAME=VALUE` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), OverrideError> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(OverrideError {
            arg: arg.to_string(),
        }),
    }
}

/// Loads a model file, choosing the reader by extension.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    load_with(path, &Overrides::new())
}

/// Loads a model file with config overrides (only `.smelt` models have configs).
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Model, LoadError> {
    let shown = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str());
    if ext != Some("smelt") {
        if let Some(name) = overrides.keys().min() {
            return Err(LoadError(Diagnostic::in_file(
                &shown,
                format!("--set {name}: only .smelt models have configs"),
            )));
        }
    }
    if ext == Some("onnx") {
        return load_onnx(path, &onnx::ImportOptions::default());
    }
    let (limit, kind) = match ext {
        Some("json") => (input::JSON_LIMIT, "JSON model"),
        _ => (input::MODEL_TEXT_LIMIT, "model text file"),
    };
    let text = input::read_limited_text(path, limit, kind)
        .map_err(|e| LoadError(Diagnostic::in_file(&shown, e.to_string())))?;
    match ext {
        Some("smelt") => load_smelt(path, shown, text, overrides),
        Some("sir") => match text::parse(&text) {
            Ok(parsed) => Ok(Model {
                graph: parsed.graph,
                path: shown,
                source: Some(Source {
                    text,
                    positions: parsed.positions,
                }),
            }),
            Err(e) => Err(LoadError(Diagnostic::at(&shown, &text, e.pos, e.message))),
        },
        Some("json") => json::from_json(&text)
            .map(|graph| Model {
                graph,
                path: shown.clone(),
                source: None,
            })
            .map_err(|m| LoadError(Diagnostic::in_file(&shown, m.to_string()))),
        _ => Err(LoadError(Diagnostic::in_file(
            &shown,
            "unknown model file type (expected .smelt, .sir, .json or .onnx)",
        ))),
    }
}

/// A graph name made from a file stem: letters, digits and `_`.
pub(crate) fn graph_name(stem: &str) -> String {
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Imports an ONNX model with import options (input values to specialise shapes on).
pub fn load_onnx(path: &Path, options: &onnx::ImportOptions) -> Result<Model, LoadError> {
    let shown = path.display().to_string();
    let bytes = input::read_limited(path, input::PROTOBUF_LIMIT, "ONNX model")
        .map_err(|e| LoadError(Diagnostic::in_file(&shown, e.to_string())))?;
    onnx::import_model(&bytes, options)
        .map(|imported| Model {
            graph: imported.graph,
            path: shown.clone(),
            source: None,
        })
        .map_err(|e| LoadError(Diagnostic::in_file(&shown, e.message)))
}

/// Compiles a `.smelt` source; the graph is named after the file stem.
fn load_smelt(
    path: &Path,
    shown: String,
    text: String,
    overrides: &Overrides,
) -> Result<Model, LoadError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let name = graph_name(stem);
    match lang::compile(&text, &name, overrides) {
        Ok(lowered) => Ok(Model {
            graph: lowered.graph,
            path: shown,
            source: Some(Source {
                text,
                positions: lowered.positions,
            }),
        }),
        Err(e) => Err(LoadError(match e.pos {
            Some(pos) => Diagnostic::at(&shown, &text, pos, e.message),
            None => Diagnostic::in_file(&shown, e.message),
        })),
    }
}
