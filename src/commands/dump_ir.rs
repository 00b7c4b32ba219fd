//! `smelt dump-ir`: print the IR of a stage.

use super::{load_model, write_output};
use smelt_compiler::ir::{json, text};
use smelt_frontend::Diagnostic;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.smelt, .sir, .json or .onnx).
    model: PathBuf,
    /// Override a config constant of a .smelt model: NAME=VALUE. Repeat for each.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// The compiler stage to print.
    #[arg(long, value_enum, default_value_t = Stage::Parsed)]
    stage: Stage,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Stage {
    /// The graph as read from the model file, verified.
    Parsed,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// The canonical text form (`.sir`), which parses back to the same graph.
    Text,
    /// The JSON form.
    Json,
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    let model = load_model(&args.model, &args.sets)?;
    let graph = match args.stage {
        Stage::Parsed => model.graph,
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
    };
    write_output(args.output.as_deref(), &out)
}
