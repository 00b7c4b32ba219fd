//! `smelt plot`: training curves from `smelt train --log` files.

use super::write_output;
use smelt_frontend::Diagnostic;
use smelt_viz::plot::{read_log, training_curves, Series};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// JSONL logs written by `smelt train --log`; each becomes one curve.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// The SVG file to write (stdout when absent).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// Draws loss and learning rate against step for every log, on one chart.
pub fn main(args: Args) -> Result<(), Diagnostic> {
    let series = args
        .logs
        .iter()
        .map(|path| {
            let points = read_log(path).map_err(|e| Diagnostic::plain(e.to_string()))?;
            Ok(Series {
                label: legend_label(path, &args.logs),
                points,
            })
        })
        .collect::<Result<Vec<_>, Diagnostic>>()?;
    let svg = training_curves(&series).map_err(|e| Diagnostic::plain(e.to_string()))?;
    write_output(args.output.as_deref(), &svg)
}

/// The file name, or the whole path when two logs share a file name.
fn legend_label(path: &std::path::Path, all: &[PathBuf]) -> String {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let shared = all.iter().filter(|p| name(p) == name(path)).count() > 1;
    match name(path) {
        Some(n) if !shared => n,
        _ => path.display().to_string(),
    }
}
