//! The one error type of the language layer: a message at a source position.

use smelt_compiler::ir::text::Pos;

/// Something wrong with a `.smelt` program, at the position it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct LangError {
    /// Where the problem is (1-based line and column); `None` for problems that are
    /// not in the source, such as a `--set` naming no config.
    pub pos: Option<Pos>,
    /// What was expected and what was found.
    pub message: String,
}

impl LangError {
    /// An error at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> LangError {
        LangError {
            pos: Some(pos),
            message: message.into(),
        }
    }

    /// An error about the program as a whole.
    pub fn unlocated(message: impl Into<String>) -> LangError {
        LangError {
            pos: None,
            message: message.into(),
        }
    }
}

/// Results of the language layer.
pub type LangResult<T> = Result<T, LangError>;

/// Shorthand for `Err(LangError::new(pos, message))`.
pub fn fail<T>(pos: Pos, message: impl Into<String>) -> LangResult<T> {
    Err(LangError::new(pos, message))
}
