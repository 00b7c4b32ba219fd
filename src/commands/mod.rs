//! One module per subcommand. Each returns a [`Diagnostic`] on failure, which `main`
//! prints before exiting with code 2.

pub mod bench;
pub mod dump_ir;
pub mod generate;
pub mod gpu_check;
pub mod plot;
pub mod run;
pub mod train;

use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_frontend::{Diagnostic, Model};
use smelt_runtime::engine::GpuOptions;
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

/// The optimiser flags shared by `train` and `dump-ir --train`.
#[derive(clap::Args)]
pub struct OptimizerArgs {
    /// The optimiser.
    #[arg(long = "optimizer", value_enum, default_value_t = OptimizerKind::Adamw)]
    kind: OptimizerKind,
    /// Weight decay (decoupled for AdamW, L2 for SGD). Default: 0.01 for AdamW, 0 for SGD.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OptimizerKind {
    Adamw,
    Sgd,
}

impl OptimizerArgs {
    /// The optimiser these flags describe.
    pub fn optimizer(&self) -> Optimizer {
        match (self.kind, Optimizer::adamw()) {
            (
                OptimizerKind::Adamw,
                Optimizer::AdamW {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                },
            ) => Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay: self.weight_decay.unwrap_or(weight_decay),
            },
            _ => Optimizer::Sgd {
                momentum: self.momentum,
                weight_decay: self.weight_decay.unwrap_or(0.0),
            },
        }
    }
}

/// GPU options shared by `run` and `train` (`--device gpusim|cuda`).
#[derive(clap::Args, Clone, Copy)]
pub struct GpuArgs {
    /// The GPU to plan for with `--device cuda|gpusim` (its SM count must match the GPU's).
    #[arg(long, value_enum, default_value_t = GpuTargetArg::H200)]
    pub target: GpuTargetArg,
    /// SMs reserved for communication kernels (even; default: the target's, 20).
    #[arg(long)]
    pub comm_sms: Option<u32>,
}

/// A GPU target name.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum GpuTargetArg {
    H800,
    H100,
    H200,
}

impl GpuArgs {
    /// The runtime's GPU options.
    pub fn options(&self) -> GpuOptions {
        let target = match self.target {
            GpuTargetArg::H800 => "h800",
            GpuTargetArg::H100 => "h100",
            GpuTargetArg::H200 => "h200",
        };
        let default = smelt_compiler::gpu::GpuTarget::by_name(target)
            .map(|t| t.default_comm_sms)
            .unwrap_or(20);
        GpuOptions {
            target,
            comm_sms: self.comm_sms.unwrap_or(default),
        }
    }
}
