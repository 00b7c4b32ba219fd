//! The smelt model language (`.smelt` files): configs, inputs, parameters, functions
//! with typed tensor arguments, `for` loops that stack layers, numpy-style operators
//! and built-ins for the common layers. See `docs/language.md` for the full reference.
//!
//! Pipeline, one module per step: [`lexer`] (text to tokens), [`parser`] (tokens to
//! [`ast`]), then lowering ([`lower`], with [`expr`], [`builtins`], [`init`] and the
//! shape rules in [`shapes`]), which type-checks every operation while it builds the
//! graph. All of them report a [`LangError`] at a source position.

pub mod ast;
mod builtins;
pub mod error;
mod expr;
mod init;
mod kv_cache;
mod last_token;
pub mod lexer;
mod lower;
pub mod parser;
mod shapes;
mod value;

pub use builtins::builtin_names;
pub use error::LangError;
pub use init::INITIALISERS;
pub use kv_cache::{Mode, BLOCKS_AXIS, BLOCK_POSITIONS, PAGES_AXIS};
pub use last_token::LAST_TOKEN_INPUT;
pub use lower::Lowered;

use std::collections::HashMap;

/// Compiles the source of a `.smelt` program into a graph called `name`, with the
/// config values in `overrides` (name to value text, as given to `--set`).
pub fn compile(
    src: &str,
    name: &str,
    overrides: &HashMap<String, String>,
) -> Result<Lowered, LangError> {
    compile_for(src, name, overrides, Mode::Full)
}

/// [`compile`] for a purpose: the model as written, or a prefill or decode step with a
/// KV cache (see [`Mode`]).
pub fn compile_for(
    src: &str,
    name: &str,
    overrides: &HashMap<String, String>,
    mode: Mode,
) -> Result<Lowered, LangError> {
    let program = parser::parse(src)?;
    let lowered = lower::lower(&program, name, overrides, mode)?;
    // The builder checks every node as it is added; this also covers the renaming of
    // values after lowering, so a bug here is reported instead of producing a bad graph.
    smelt_compiler::ir::verify(&lowered.graph).map_err(|e| {
        LangError::unlocated(format!(
            "internal error: the lowered graph does not verify: {e}"
        ))
    })?;
    Ok(lowered)
}
