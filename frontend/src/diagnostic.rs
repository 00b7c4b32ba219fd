//! User-facing error messages: `FILE:LINE:COL: error: MESSAGE`, then the source line
//! with a caret under the column. Without a location: `FILE: error: ...` or `error: ...`.

use smelt_compiler::ir::text::Pos;
use std::fmt;

/// One error message, with where it happened when that is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// `FILE:LINE:COL`, or `FILE`, or nothing.
    pub location: Option<String>,
    /// What is wrong: what was expected and what was found.
    pub message: String,
    /// The source line with a caret, when the location is in a text file.
    pub snippet: Option<String>,
}

impl Diagnostic {
    /// A message with no location.
    pub fn plain(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: None,
            message: message.into(),
            snippet: None,
        }
    }

    /// A message about a whole file.
    pub fn in_file(path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: Some(path.to_string()),
            message: message.into(),
            snippet: None,
        }
    }

    /// A message at `pos` in `text` (the contents of `path`).
    pub fn at(path: &str, text: &str, pos: Pos, message: impl Into<String>) -> Diagnostic {
        let line = text.lines().nth(pos.line.saturating_sub(1)).unwrap_or("");
        let num = pos.line.to_string();
        let pad = " ".repeat(num.len());
        let caret_pad: String = line
            .chars()
            .take(pos.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        Diagnostic {
            location: Some(format!("{path}:{pos}")),
            message: message.into(),
            snippet: Some(format!("{pad} |\n{num} | {line}\n{pad} | {caret_pad}^")),
        }
    }

    /// The first line of the rendered message.
    pub fn headline(&self) -> String {
        match &self.location {
            Some(loc) => format!("{loc}: error: {}", self.message),
            None => format!("error: {}", self.message),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.headline())?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}
