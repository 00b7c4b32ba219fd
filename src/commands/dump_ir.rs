//! `smelt dump-ir`: print the IR of a stage.

use super::{load_model, write_output, OptimizerArgs};
use smelt_compiler::autodiff::optimizer::training_step;
use smelt_compiler::ir::{json, text};
use smelt_compiler::passes::decompose;
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
    /// Print the training-step program (forward, backward and optimiser update) rather
    /// than the forward graph; stages after `parsed` start from it.
    #[arg(long)]
    train: bool,
    #[command(flatten)]
    optimizer: OptimizerArgs,
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
    /// With backward and optimiser: the training step (implies --train).
    Grad,
    /// Composite ops expanded into primitives, as the CPU backend runs it.
    Decomposed,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// The canonical text form (`.sir`), which parses back to the same graph.
    Text,
    /// The JSON form.
    Json,
}

/// Prints the requested stage.
pub fn main(args: Args) -> Result<(), Diagnostic> {
    let model = load_model(&args.model, &args.sets)?;
    let train = args.train || matches!(args.stage, Stage::Grad);
    let step = |g| {
        training_step(g, &args.optimizer.optimizer())
            .map_err(|e| Diagnostic::in_file(&model.path, e.to_string()))
    };
    let graph = match args.stage {
        Stage::Parsed => model.graph.clone(),
        Stage::Grad => step(&model.graph)?,
        Stage::Decomposed if train => decompose(&step(&model.graph)?),
        Stage::Decomposed => decompose(&model.graph),
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
    };
    write_output(args.output.as_deref(), &out)
}
