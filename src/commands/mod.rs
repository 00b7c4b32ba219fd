//! One module per subcommand. Each returns a [`Diagnostic`] on failure, which `main`
//! prints before exiting with code 2.

pub mod bench;
mod bench_conditions;
mod bench_llm;
mod bench_peers;
pub mod compile;
pub mod dump_ir;
pub mod generate;
pub mod generate_llm;
pub mod gpu_check;
pub mod plot;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod train;
mod world;

use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::gpu::GpuTarget;
use smelt_compiler::ir::Graph;
use smelt_compiler::optimize::Options;
use smelt_compiler::pipeline::{prepare, Goal};
use smelt_frontend::lang::Mode;
use smelt_frontend::llm::{Pretrained, Storage};
use smelt_frontend::{Diagnostic, Model};
use smelt_runtime::compiled::cache::{Cache, Outcome};
use smelt_runtime::compiled::{Compiled, Purpose};
use smelt_runtime::engine::GpuOptions;
use std::path::Path;

/// Loads a model file with `--set NAME=VALUE` config overrides, or returns its diagnostic.
pub fn load_model(path: &Path, sets: &[String]) -> Result<Model, Diagnostic> {
    if Pretrained::is_pretrained(path) {
        return Ok(load_pretrained(path, sets)?.0);
    }
    let mut overrides = smelt_frontend::Overrides::new();
    for arg in sets {
        let (name, value) =
            smelt_frontend::parse_override(arg).map_err(|e| Diagnostic::plain(e.to_string()))?;
        overrides.insert(name, value);
    }
    smelt_frontend::load_with(path, &overrides).map_err(|e| e.0)
}

/// Loads a pretrained model (a GGUF file or a Hugging Face directory) for inference:
/// its graph and its weights as parameter values.
pub fn load_pretrained(
    path: &Path,
    sets: &[String],
) -> Result<(Model, Vec<smelt_frontend::llm::Weight>), Diagnostic> {
    let shown = path.display().to_string();
    if let Some(set) = sets.first() {
        return Err(Diagnostic::in_file(
            &shown,
            format!("--set {set}: a pretrained model's configs come from its checkpoint"),
        ));
    }
    // Blocks are not dequantised until a caller asks for the values.
    let model = Pretrained::open_with(path, Storage::Blocks)
        .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    let lowered = model
        .lower(Mode::Infer)
        .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    Ok((lowered, model.weights))
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

/// The optimiser flags shared by `train`, `compile --train` and `dump-ir --train`.
#[derive(clap::Args)]
pub struct OptimizerArgs {
    /// The optimiser [default: adamw].
    #[arg(long = "optimizer", value_enum)]
    kind: Option<OptimizerKind>,
    /// Weight decay (decoupled for AdamW, L2 for SGD). Default: 0.01 for AdamW, 0 for SGD.
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// SGD momentum [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OptimizerKind {
    Adamw,
    Sgd,
}

impl OptimizerArgs {
    /// The optimiser these flags describe, or why the values cannot be used.
    pub fn optimizer(&self) -> Result<Optimizer, Diagnostic> {
        let check =
            |flag: &str, value: Option<f64>, range: std::ops::Range<f64>, what: &str| match value {
                Some(v) if !range.contains(&v) => Err(Diagnostic::plain(format!(
                    "{flag} must be {what}, found {v}"
                ))),
                _ => Ok(()),
            };
        check(
            "--weight-decay",
            self.weight_decay,
            0.0..f64::INFINITY,
            "a finite number, 0 or more",
        )?;
        check(
            "--momentum",
            self.momentum,
            0.0..1.0,
            "a number from 0 up to (not including) 1",
        )?;
        Ok(
            match (
                self.kind.unwrap_or(OptimizerKind::Adamw),
                Optimizer::adamw(),
            ) {
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
                    momentum: self.momentum.unwrap_or(0.0),
                    weight_decay: self.weight_decay.unwrap_or(0.0),
                },
            },
        )
    }

    /// True if any optimiser flag was given (a compiled artefact fixes the optimiser).
    pub fn given(&self) -> bool {
        self.kind.is_some() || self.weight_decay.is_some() || self.momentum.is_some()
    }
}

/// The e-graph optimiser flags shared by `run`, `train`, `compile` and `dump-ir`.
#[derive(clap::Args)]
pub struct OptArgs {
    /// Skip the e-graph optimiser: compile the graph as written.
    #[arg(long)]
    pub no_optimize: bool,
    /// Most e-graph rewrite iterations.
    #[arg(long, value_name = "N", default_value_t = Options::default().iter_limit)]
    pub opt_iters: usize,
    /// Most e-graph nodes.
    #[arg(long, value_name = "N", default_value_t = Options::default().node_limit)]
    pub opt_nodes: usize,
    /// Most milliseconds of rewriting per optimiser run.
    #[arg(long, value_name = "MS", default_value_t = Options::default().time_limit.as_millis() as u64)]
    pub opt_time_ms: u64,
    /// Most ops per e-graph window: a graph of more than three times this many is optimised in
    /// windows of consecutive ops, which keeps compile time linear in depth (0: one
    /// e-graph).
    #[arg(long, value_name = "N", default_value_t = Options::default().window)]
    pub opt_window: usize,
}

impl OptArgs {
    /// The settings the flags default to.
    pub fn defaults() -> OptArgs {
        let o = Options::default();
        OptArgs {
            no_optimize: false,
            opt_iters: o.iter_limit,
            opt_nodes: o.node_limit,
            opt_time_ms: o.time_limit.as_millis() as u64,
            opt_window: o.window,
        }
    }

    /// The optimiser's options, or `None` with `--no-optimize`.
    pub fn options(&self) -> Option<Options> {
        (!self.no_optimize).then(|| Options {
            iter_limit: self.opt_iters,
            node_limit: self.opt_nodes,
            time_limit: std::time::Duration::from_millis(self.opt_time_ms),
            window: self.opt_window,
            ..Options::default()
        })
    }
}

/// `forward` for `goal` as `target` runs it: through the pipeline with the GPU's cost
/// model, or as written with `--no-optimize`.
pub fn prepare_for_gpu(
    forward: &Graph,
    goal: &Goal,
    target: &GpuTarget,
    optimize: &OptArgs,
) -> Result<Graph, Diagnostic> {
    prepare(
        forward,
        goal,
        &target.roofline(),
        optimize.options().as_ref(),
    )
    .map(|p| p.graph)
    .map_err(|e| Diagnostic::plain(e.to_string()))
}

/// The memory limit shared by `run` and `train`.
#[derive(clap::Args)]
pub struct MemoryArgs {
    /// The most memory the run's tensors may take, checked before anything is allocated:
    /// bytes, or with a unit (512M, 8G) [default: 3/4 of the machine's RAM].
    #[arg(long, value_name = "SIZE", value_parser = smelt_runtime::memory::parse_limit)]
    max_memory: Option<u64>,
}

impl MemoryArgs {
    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.max_memory
            .unwrap_or_else(smelt_runtime::memory::default_limit)
    }
}

/// The compile-cache flags shared by `run` and `train`.
#[derive(clap::Args, Default)]
pub struct CacheArgs {
    /// Compile afresh and leave the compile cache alone ($SMELT_CACHE_DIR, else
    /// $XDG_CACHE_HOME/smelt, else ~/.cache/smelt).
    #[arg(long)]
    no_cache: bool,
    /// Say on stderr whether the compiled program came from the compile cache.
    #[arg(long)]
    verbose: bool,
}

/// Compiles `forward` for the CPU backend, through the compile cache unless disabled.
pub fn compile_cpu(
    forward: &Graph,
    purpose: Purpose,
    optimize: &OptArgs,
    flags: &CacheArgs,
) -> Result<Compiled, Diagnostic> {
    let optimize = optimize.options();
    let fail = |e: smelt_runtime::compiled::ArtefactError| Diagnostic::plain(e.to_string());
    let cache = if flags.no_cache {
        None
    } else {
        Cache::from_env()
    };
    let Some(cache) = cache else {
        return Compiled::compile(forward, purpose, optimize.as_ref()).map_err(fail);
    };
    let (compiled, outcome) = cache
        .compile(forward, purpose, optimize.as_ref())
        .map_err(fail)?;
    match &outcome {
        Outcome::NotStored(_) => eprintln!("warning: {outcome}"),
        _ if flags.verbose => eprintln!("{outcome}"),
        _ => {}
    }
    Ok(compiled)
}

/// Loads a compiled artefact, or returns its diagnostic.
pub fn load_compiled(path: &Path) -> Result<Compiled, Diagnostic> {
    Compiled::load(path).map_err(|e| Diagnostic::plain(e.to_string()))
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
