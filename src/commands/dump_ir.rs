//! `smelt dump-ir`: print the IR of a stage, as text, JSON, or a picture (DOT or SVG).

use super::{load_model, write_output, OptimizerArgs};
use smelt_compiler::autodiff::optimizer::training_step;
use smelt_compiler::ir::{json, text, Bindings};
use smelt_compiler::optimize::{optimize, Options, RooflineTarget};
use smelt_compiler::passes::decompose;
use smelt_compiler::schedule::schedule;
use smelt_frontend::Diagnostic;
use smelt_viz::{Focus, View};
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
    /// Draw only this value and its neighbourhood (dot and svg formats).
    #[arg(long, value_name = "NAME")]
    focus: Option<String>,
    /// How many edges up (operands) and down (users) from --focus to draw.
    #[arg(long, default_value_t = 2, requires = "focus")]
    depth: usize,
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
    /// Graphviz DOT (`dot -Tsvg`), with the same shapes and colours as `svg`.
    Dot,
    /// An SVG drawing, laid out by smelt itself; opens in a browser.
    Svg,
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
                _ => Err(Diagnostic::plain(
                    "--stage scheduled prints text only for now (use --format text)",
                )),
            };
        }
    };
    if args.focus.is_some() && matches!(args.format, Format::Text | Format::Json) {
        return Err(Diagnostic::plain(
            "--focus draws a neighbourhood: use it with --format dot or --format svg",
        ));
    }
    let view = || match &args.focus {
        Some(name) => View::focused(
            &graph,
            &Focus {
                name: name.clone(),
                depth: args.depth,
            },
        )
        .map_err(|e| Diagnostic::in_file(&model.path, e.to_string())),
        None => Ok(View::of(&graph)),
    };
    let out = match args.format {
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
        Format::Dot => smelt_viz::dot::to_dot(&view()?),
        Format::Svg => smelt_viz::svg::to_svg(&view()?),
    };
    write_output(args.output.as_deref(), &out)
}
