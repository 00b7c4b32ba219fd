//! `smelt compile`: compile a model (or its training step) once and write the artefact
//! that `smelt run` and `smelt train` load in place of a model file; for a GPU target,
//! write the PTX module and its SM plan.

use super::dump_ir::{gpu_plan, parse_bindings, Target};
use super::{load_model, prepare_for_gpu, write_output, OptArgs, OptimizerArgs};
use smelt_compiler::pipeline::Goal;
use smelt_frontend::Diagnostic;
use smelt_runtime::compiled::{Compiled, Purpose};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.smelt, .sir, .json or .onnx).
    model: PathBuf,
    /// Compile the training step (forward, backward and optimiser update) for `smelt train`.
    #[arg(long)]
    train: bool,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    #[command(flatten)]
    opt: OptArgs,
    /// The machine to compile for: the CPU backend, or a Hopper GPU.
    #[arg(long, value_enum, default_value_t = Target::Cpu)]
    target: Target,
    /// What to write for a GPU target: `ptx`, the PTX module (`MODEL.ptx`) and its SM
    /// plan (`MODEL.plan.json`) in the output directory.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Sizes for symbolic dimensions of GPU kernels: NAME=SIZE (unbound ones count as 1).
    #[arg(long = "bind", value_name = "NAME=SIZE")]
    binds: Vec<String>,
    /// SMs reserved for communication kernels on a GPU target (even; default 20).
    #[arg(long, value_name = "N")]
    comm_sms: Option<u32>,
    /// Where to write: the artefact (by convention NAME.smeltc), or for `--emit ptx` a
    /// directory.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Override a config constant of a .smelt model: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
}

/// What a GPU compile writes.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Emit {
    /// PTX text, one `.ptx` file per module, with the SM plan beside it.
    Ptx,
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    if !args.train && args.optimizer.given() {
        return Err(Diagnostic::plain(
            "optimiser flags need --train (a program without --train has no update)",
        ));
    }
    let model = load_model(&args.model, &args.sets)?;
    if let Some(target) = args.target.gpu() {
        if args.emit != Some(Emit::Ptx) {
            return Err(Diagnostic::plain(format!(
                "a GPU target writes PTX: add --emit ptx (and -o DIR) to compile for {}",
                target.name
            )));
        }
        let goal = if args.train {
            Goal::Train(args.optimizer.optimizer()?)
        } else {
            Goal::Run
        };
        let graph = prepare_for_gpu(&model.graph, &goal, &target, &args.opt)
            .map_err(|e| Diagnostic::in_file(&model.path, e.message))?;
        return emit_ptx(&args, &model.path, &graph, &target);
    }
    if args.emit.is_some() {
        return Err(Diagnostic::plain(
            "--emit ptx needs a GPU target (--target h800, h100 or h200)",
        ));
    }
    let purpose = if args.train {
        Purpose::Train(args.optimizer.optimizer()?)
    } else {
        Purpose::Run
    };
    let optimize = args.opt.options();
    let compiled = Compiled::compile(&model.graph, purpose, optimize.as_ref())
        .map_err(|e| Diagnostic::plain(e.to_string()))?;
    compiled
        .save(&args.output)
        .map_err(|e| Diagnostic::plain(e.to_string()))?;
    let (fused, library) = compiled.program.schedule().counts();
    eprintln!(
        "wrote {}: {fused} fused kernels, {library} library steps",
        args.output.display()
    );
    Ok(())
}

/// Writes `DIR/NAME.ptx` and `DIR/NAME.plan.json` for `graph` on a GPU target.
fn emit_ptx(
    args: &Args,
    model_path: &str,
    graph: &smelt_compiler::ir::Graph,
    target: &smelt_compiler::gpu::GpuTarget,
) -> Result<(), Diagnostic> {
    use smelt_compiler::gpu::{ptx, GpuProgram};
    let bindings = parse_bindings(&args.binds, graph)?;
    let scheduled = smelt_compiler::gpu::schedule(graph);
    let plan = gpu_plan(&scheduled, &bindings, target, args.comm_sms)
        .map_err(|e| Diagnostic::in_file(model_path, e))?;
    let program = GpuProgram::new(
        &scheduled,
        &super::dump_ir::bind_all(&scheduled.graph, &bindings),
    )
    .map_err(|e| Diagnostic::in_file(model_path, e.to_string()))?;
    let kernels = program.kernels();
    std::fs::create_dir_all(&args.output).map_err(|e| {
        Diagnostic::in_file(
            &args.output.display().to_string(),
            format!("cannot create: {e}"),
        )
    })?;
    let stem = smelt_compiler::gpu::lower::identifier(&graph.name);
    let ptx_path = args.output.join(format!("{stem}.ptx"));
    write_output(Some(&ptx_path), &ptx::module(&kernels))?;
    let plan_path = args.output.join(format!("{stem}.plan.json"));
    let json = serde_json::to_string_pretty(&plan).expect("plans serialise") + "\n";
    write_output(Some(&plan_path), &json)?;
    eprintln!(
        "wrote {} ({} kernels, {}) and {}",
        ptx_path.display(),
        kernels.len(),
        ptx::arch(&kernels),
        plan_path.display()
    );
    Ok(())
}
