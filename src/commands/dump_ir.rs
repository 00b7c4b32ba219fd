//! `smelt dump-ir`: print the IR of a stage, as text, JSON, or a picture (DOT or SVG).

use super::{load_model, prepare_for_gpu, write_output, OptArgs, OptimizerArgs};
use smelt_compiler::autodiff::optimizer::training_step;
use smelt_compiler::gpu::{GpuProgram, GpuTarget, SmPlan};
use smelt_compiler::ir::{json, text, Bindings};
use smelt_compiler::optimize::RooflineTarget;
use smelt_compiler::passes::decompose;
use smelt_compiler::pipeline::{prepare, Goal};
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
    /// Sizes for symbolic dimensions in the memory plan and GPU kernels: NAME=SIZE
    /// (unbound ones count as 1).
    #[arg(long = "bind", value_name = "NAME=SIZE")]
    binds: Vec<String>,
    /// The machine to compile for. With `--stage scheduled`, a GPU target prints its SM
    /// plan (stream, grid, block, shared memory and SM budget of every kernel); with
    /// `--stage optimized`, the optimiser costs programs with the target's roofline.
    #[arg(long, value_enum, default_value_t = Target::Cpu)]
    target: Target,
    /// SMs reserved for communication kernels on a GPU target (even; default 20).
    #[arg(long, value_name = "N")]
    comm_sms: Option<u32>,
    /// With `--stage optimized`: print the rules that fired and the estimated cost
    /// before and after to stderr (stdout keeps the IR alone).
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    opt: OptArgs,
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
    /// Kernels (fused pointwise kernels and library calls) and the memory plan of the
    /// optimised graph (of the graph as written with --no-optimize); with a GPU target,
    /// its SM plan.
    Scheduled,
    /// What the CPU backend schedules: the forward graph decomposed and rewritten by the
    /// e-graph optimiser into the cheapest equivalent program under the target's cost
    /// model (composites it recognises, such as attention, are folded back); with
    /// --train, the training step of that graph, optimised again.
    Optimized,
}

/// Machines `--stage scheduled` can plan for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// This machine's CPU backend.
    Cpu,
    /// NVIDIA H800 SXM (132 SMs, NVLink cut to 400 GB/s).
    H800,
    /// NVIDIA H100 SXM.
    H100,
    /// NVIDIA H200 SXM.
    H200,
}

impl Target {
    /// The GPU description, or `None` for the CPU.
    pub fn gpu(self) -> Option<GpuTarget> {
        match self {
            Target::Cpu => None,
            Target::H800 => Some(GpuTarget::h800()),
            Target::H100 => Some(GpuTarget::h100()),
            Target::H200 => Some(GpuTarget::h200()),
        }
    }
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
    /// A Chrome trace of the SM plan (`--stage scheduled` with a GPU target): one
    /// track per stream; open in Perfetto or chrome://tracing.
    Trace,
}

/// Prints the requested stage.
pub fn main(args: Args) -> Result<(), Diagnostic> {
    let model = load_model(&args.model, &args.sets)?;
    let train = args.train || matches!(args.stage, Stage::Grad);
    let goal = if train {
        Goal::Train(args.optimizer.optimizer()?)
    } else {
        Goal::Run
    };
    let step = |g| {
        training_step(g, &args.optimizer.optimizer()?)
            .map_err(|e| Diagnostic::in_file(&model.path, e.to_string()))
    };
    let graph = match args.stage {
        Stage::Parsed => model.graph.clone(),
        Stage::Grad => step(&model.graph)?,
        Stage::Decomposed if train => decompose(&step(&model.graph)?),
        Stage::Decomposed => decompose(&model.graph),
        Stage::Optimized => {
            let cost_model = args
                .target
                .gpu()
                .map_or_else(RooflineTarget::cpu, |t| t.roofline());
            let options = args.opt.options();
            let prepared = prepare(&model.graph, &goal, &cost_model, options.as_ref())
                .map_err(|e| Diagnostic::in_file(&model.path, e.to_string()))?;
            if args.explain {
                for report in &prepared.reports {
                    eprint!("{report}");
                }
            }
            prepared.graph
        }
        Stage::Scheduled => {
            let bindings = parse_bindings(&args.binds, &model.graph)?;
            if let Some(target) = args.target.gpu() {
                let g = prepare_for_gpu(&model.graph, &goal, &target, &args.opt)
                    .map_err(|e| Diagnostic::in_file(&model.path, e.message))?;
                let scheduled = smelt_compiler::gpu::schedule(&g);
                let plan = gpu_plan(&scheduled, &bindings, &target, args.comm_sms)
                    .map_err(|e| Diagnostic::in_file(&model.path, e))?;
                let out = match args.format {
                    Format::Text => plan.to_text(),
                    Format::Json => {
                        serde_json::to_string_pretty(&plan).expect("plans serialise") + "\n"
                    }
                    Format::Trace => plan_trace(&g.name, &plan),
                    Format::Dot | Format::Svg => {
                        return Err(Diagnostic::plain(
                            "--stage scheduled with a GPU target prints text, json or trace",
                        ))
                    }
                };
                return write_output(args.output.as_deref(), &out);
            }
            let options = args.opt.options();
            let g = prepare(
                &model.graph,
                &goal,
                &RooflineTarget::cpu(),
                options.as_ref(),
            )
            .map_err(|e| Diagnostic::in_file(&model.path, e.to_string()))?
            .graph;
            return match args.format {
                Format::Text => {
                    write_output(args.output.as_deref(), &schedule(&g).to_text(&bindings))
                }
                _ => Err(Diagnostic::plain(
                    "--stage scheduled for the CPU prints text (GPU targets: text, json, trace)",
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
        Format::Trace => {
            return Err(Diagnostic::plain(
                "--format trace draws an SM plan: use it with --stage scheduled --target h800",
            ))
        }
        Format::Text => text::print(&graph),
        Format::Json => json::to_json(&graph),
        Format::Dot => smelt_viz::dot::to_dot(&view()?),
        Format::Svg => smelt_viz::svg::to_svg(&view()?),
    };
    write_output(args.output.as_deref(), &out)
}

/// `--bind NAME=SIZE` flags as bindings.
/// `--bind NAME=SIZE` flags as bindings; every value of `graph` must have a size that
/// fits under them (so memory plans never wrap).
pub fn parse_bindings(
    binds: &[String],
    graph: &smelt_compiler::ir::Graph,
) -> Result<Bindings, Diagnostic> {
    let mut bindings = Bindings::new();
    for b in binds {
        let parsed = b
            .split_once('=')
            .and_then(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)));
        let (k, v) = parsed
            .ok_or_else(|| Diagnostic::plain(format!("--bind expects NAME=SIZE, found '{b}'")))?;
        bindings.insert(k, v);
    }
    let all = bind_all(graph, &bindings);
    for v in &graph.values {
        v.ty.bytes(&all, v.ty.dtype.size_bytes() as u64)
            .map_err(|e| Diagnostic::plain(format!("--bind: %{} ({}): {e}", v.name, v.ty)))?;
    }
    Ok(bindings)
}

/// Binds every symbol of `g` that `bindings` leaves open to 1.
pub fn bind_all(g: &smelt_compiler::ir::Graph, bindings: &Bindings) -> Bindings {
    let mut all = bindings.clone();
    for v in &g.values {
        for d in v.ty.dims() {
            for s in d.syms() {
                all.entry(s.clone()).or_insert(1);
            }
        }
    }
    all
}

/// The SM plan of a schedule on a GPU target.
pub fn gpu_plan(
    scheduled: &smelt_compiler::schedule::Schedule,
    bindings: &Bindings,
    target: &GpuTarget,
    comm_sms: Option<u32>,
) -> Result<SmPlan, String> {
    let program = GpuProgram::new(scheduled, &bind_all(&scheduled.graph, bindings))
        .map_err(|e| e.to_string())?;
    SmPlan::new(
        &program,
        target,
        comm_sms.unwrap_or(target.default_comm_sms),
    )
    .map_err(|e| e.to_string())
}

/// The plan as a Chrome trace: one track per stream, events carrying launch parameters.
fn plan_trace(name: &str, plan: &SmPlan) -> String {
    use smelt_compiler::gpu::lower::Role;
    use smelt_viz::trace::{chrome_trace, Role as TraceRole, TraceEvent};
    let events: Vec<TraceEvent> = plan
        .launches
        .iter()
        .map(|l| {
            let (role, track) = match l.role {
                Role::Compute => (TraceRole::Compute, format!("stream {} (compute)", l.stream)),
                Role::Comm => (TraceRole::Comm, format!("stream {} (comm)", l.stream)),
            };
            TraceEvent::new(&l.name, track, role, l.start_us, l.duration_us)
                .with_arg("grid", serde_json::json!(l.grid))
                .with_arg("block", serde_json::json!(l.block))
                .with_arg("shared_bytes", l.shared_bytes)
                .with_arg("sm_budget", l.sm_budget)
                .with_arg("stream", l.stream)
        })
        .collect();
    chrome_trace(&format!("{name} on {}", plan.target), &events)
}
