//! `smelt dump-ir`: print the IR of a stage.

use super::{load_model, write_output, OptimizerArgs};
use smelt_compiler::autodiff::optimizer::training_step;
use smelt_compiler::ir::{json, text};
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
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
    /// With `--stage optimized`: print the rules that fired and the estimated cost
    /// before and after to stderr (stdout keeps the IR alone).
    #[arg(long)]
    explain: bool,
    /// Most e-graph rewrite iterations of `--stage optimized`.
    #[arg(long, value_name = "N", default_value_t = Options::default().iter_limit)]
    opt_iters: usize,
    /// Most e-graph nodes of `--stage optimized`.
    #[arg(long, value_name = "N", default_value_t = Options::default().node_limit)]
    opt_nodes: usize,
    /// Most milliseconds of rewriting in `--stage optimized`.
    #[arg(long, value_name = "MS", default_value_t = Options::default().time_limit.as_millis() as u64)]
    opt_time_ms: u64,
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
    /// Decomposed, then rewritten by the e-graph optimiser into the cheapest equivalent
    /// program under the CPU cost model (composites it recognises are folded back).
    Optimized,
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
        Stage::Optimized => {
            let decomposed = if train {
                decompose(&step(&model.graph)?)
            } else {
                decompose(&model.graph)
            };
            let options = Options {
                iter_limit: args.opt_iters,
                node_limit: args.opt_nodes,
                time_limit: std::time::Duration::from_millis(args.opt_time_ms),
                ..Options::default()
            };
            let (graph, report) =
                optimize(&decomposed, &RooflineTarget::cpu(), &options).map_err(|e| {
                    Diagnostic::in_file(&model.path, format!("optimisation failed: {e}"))
                })?;
            if args.explain {
                eprint!("{report}");
            }
            graph
        }
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
    };
    write_output(args.output.as_deref(), &out)
}
