//! `smelt compile`: compile a model (or its training step) once and write the artefact
//! that `smelt run` and `smelt train` load in place of a model file.

use super::{load_model, OptimizerArgs};
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
    /// The backend to compile for.
    #[arg(long, value_enum, default_value_t = Target::Cpu)]
    target: Target,
    /// Where to write the artefact (by convention NAME.smeltc).
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Override a config constant of a .smelt model: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Target {
    Cpu,
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    let Target::Cpu = args.target;
    if !args.train && args.optimizer.given() {
        return Err(Diagnostic::plain(
            "optimiser flags need --train (a program without --train has no update)",
        ));
    }
    let model = load_model(&args.model, &args.sets)?;
    let purpose = if args.train {
        Purpose::Train(args.optimizer.optimizer())
    } else {
        Purpose::Run
    };
    let compiled = Compiled::compile(&model.graph, purpose).map_err(|e| Diagnostic::plain(e.0))?;
    compiled
        .save(&args.output)
        .map_err(|e| Diagnostic::plain(e.0))?;
    let (fused, library) = compiled.program.schedule().counts();
    eprintln!(
        "wrote {}: {fused} fused kernels, {library} library steps",
        args.output.display()
    );
    Ok(())
}
