//! `smelt dump-ir`: print the IR of a stage.

use super::{load_model, write_output, OptimizerArgs};
use smelt_compiler::autodiff::optimizer::training_step;
use smelt_compiler::ir::{json, text, Bindings};
use smelt_compiler::passes::decompose;
use smelt_compiler::schedule::schedule;
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
    /// Sizes for symbolic dimensions in the memory plan: NAME=SIZE (unbound ones count as 1).
    #[arg(long = "bind", value_name = "NAME=SIZE")]
    binds: Vec<String>,
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
    /// Kernels (fused pointwise kernels and library calls) and the memory plan.
    Scheduled,
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
        Stage::Scheduled => {
            let g = if train {
                step(&model.graph)?
            } else {
                model.graph.clone()
            };
            let mut bindings = Bindings::new();
            for b in &args.binds {
                let parsed = b
                    .split_once('=')
                    .and_then(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)));
                let (k, v) = parsed.ok_or_else(|| {
                    Diagnostic::plain(format!("--bind expects NAME=SIZE, found '{b}'"))
                })?;
                bindings.insert(k, v);
            }
            let text = schedule(&g).to_text(&bindings);
            return match args.format {
                Format::Text => write_output(args.output.as_deref(), &text),
                Format::Json => Err(Diagnostic::plain(
                    "--stage scheduled prints text only for now (use --format text)",
                )),
            };
        }
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
    };
    write_output(args.output.as_deref(), &out)
}
