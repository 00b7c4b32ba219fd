//! smelt's frontend: reads model files into the graph IR.
//!
//! | extension | reader |
//! |---|---|
//! | `.sir` | the IR's canonical text form ([`smelt_compiler::ir::text`]) |
//! | `.json` | the IR's JSON form ([`smelt_compiler::ir::json`]) |
//!
//! Every reader returns a verified graph, plus (for text sources) where each value is
//! defined, so later errors about a value can point at its line.
#![warn(missing_docs)]

pub mod diagnostic;
pub mod onnx;

use smelt_compiler::ir::{json, text, Graph, ValueId};
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

/// Loads a model file, choosing the reader by extension.
pub fn load(path: &Path) -> Result<Model, LoadError> {
    load_with(path, &onnx::ImportOptions::default())
}

/// Like [`load`], with options for ONNX import (values of inputs to specialise on).
pub fn load_with(path: &Path, options: &onnx::ImportOptions) -> Result<Model, LoadError> {
    let shown = path.display().to_string();
    if path.extension().and_then(|e| e.to_str()) == Some("onnx") {
        let bytes = std::fs::read(path).map_err(|e| {
            LoadError(Diagnostic::in_file(
                &shown,
                format!("cannot read model file: {e}"),
            ))
        })?;
        return onnx::import_model(&bytes, options)
            .map(|imported| Model {
                graph: imported.graph,
                path: shown.clone(),
                source: None,
            })
            .map_err(|e| LoadError(Diagnostic::in_file(&shown, e.message)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError(Diagnostic::in_file(
            &shown,
            format!("cannot read model file: {e}"),
        ))
    })?;
    match path.extension().and_then(|e| e.to_str()) {
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
            .map_err(|m| LoadError(Diagnostic::in_file(&shown, m))),
        _ => Err(LoadError(Diagnostic::in_file(
            &shown,
            "unknown model file type (expected .sir, .json or .onnx)",
        ))),
    }
}
