//! One module per subcommand. Each returns a [`Diagnostic`] on failure, which `main`
//! prints before exiting with code 2.

pub mod dump_ir;
pub mod generate;
pub mod run;
pub mod train;

use smelt_frontend::{Diagnostic, Model};
use std::path::Path;

/// Loads a model file with `--set NAME=VALUE` config overrides, or returns its diagnostic.
pub fn load_model(path: &Path, sets: &[String]) -> Result<Model, Diagnostic> {
    let mut overrides = smelt_frontend::Overrides::new();
    for arg in sets {
        let (name, value) = smelt_frontend::parse_override(arg).map_err(Diagnostic::plain)?;
        overrides.insert(name, value);
    }
    smelt_frontend::load_with(path, &overrides).map_err(|e| e.0)
}

/// Writes `text` to `path`, or to stdout when `path` is `None`.
pub fn write_output(path: Option<&Path>, text: &str) -> Result<(), Diagnostic> {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| {
            Diagnostic::in_file(&p.display().to_string(), format!("cannot write: {e}"))
        }),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`smelt dump-ir ... | head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}
