//! `smelt train`: compile a training step and run it over data.

use super::{
    compile_cpu, load_compiled, load_model, prepare_for_gpu, CacheArgs, MemoryArgs, OptArgs,
    OptimizerArgs,
};
use smelt_compiler::gpu::GpuTarget;
use smelt_compiler::ir::text;
use smelt_compiler::ir::Graph;
use smelt_compiler::pipeline::Goal;
use smelt_frontend::Diagnostic;
use smelt_runtime::compiled::{is_artefact, Compiled, Purpose};
use smelt_runtime::engine::Device;
use smelt_runtime::train::{
    Checkpoint, Dataset, Schedule, StepReport, TrainConfig, TrainError, Trainer,
};
use smelt_runtime::Precision;
use smelt_viz::trace::{chrome_trace, Role, TraceEvent};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.smelt, .sir or .json), which must output a scalar `loss`, or an
    /// artefact from `smelt compile --train` (its optimiser is the one compiled in).
    model: PathBuf,
    /// Training data: a .txt file (byte-level tokens), a .safetensors file or a directory
    /// of NAME.npy files (one tensor per model input, rows along axis 0).
    #[arg(long)]
    data: PathBuf,
    /// Total number of steps (a resumed run continues up to this step).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Samples per batch (with --dp, the global batch: each rank runs its share).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Data-parallel ranks: one process each, started with `mpirun -np N` (needs a
    /// smelt built with the `mpi` feature). Gradients are averaged over the ranks every
    /// step; rank 0 writes the log, profile and checkpoints.
    #[arg(long, default_value_t = 1)]
    dp: usize,
    /// Seconds a data-parallel rank waits for the others at a collective before the
    /// run is stopped on every rank.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    comm_timeout: f64,
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Learning-rate schedule: constant, cosine, or cosine:WARMUP_STEPS.
    #[arg(long, default_value = "constant")]
    schedule: Schedule,
    /// Seed of the initial parameters and of the batches.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// Append one JSON object per step to this file (`step`, `loss`, `lr`, `seconds`, ...).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Write a Chrome trace of measured step timing to this file (open it in
    /// ui.perfetto.dev or chrome://tracing): each step on the `cpu` track, with its
    /// phases (batch, run, apply) nested inside, and checkpoint writes.
    #[arg(long, value_name = "FILE.json")]
    profile: Option<PathBuf>,
    /// Write checkpoints into this directory.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Steps between checkpoints (and one at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    /// Continue from the checkpoint in this directory (with the same optimiser, seed,
    /// --lr, --batch and --schedule; --steps may grow).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Resume even if the optimiser, seed, --lr, --batch or --schedule differ from the
    /// checkpoint's (the changes are listed).
    #[arg(long, requires = "resume")]
    allow_changed_settings: bool,
    /// Where to run: `cpu`, `interp`, `cuda` (an NVIDIA GPU) or `gpusim` (the GPU
    /// kernels simulated on the CPU; slow).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    #[command(flatten)]
    gpu: super::GpuArgs,
    /// Override a config constant of a .smelt model: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    opt: OptArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Interp,
    Gpusim,
    Cuda,
}

fn fail(e: TrainError) -> Diagnostic {
    Diagnostic::plain(e.to_string())
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    if !(args.comm_timeout.is_finite() && args.comm_timeout > 0.0 && args.comm_timeout < 1e9) {
        return Err(Diagnostic::plain(format!(
            "--comm-timeout must be a positive number of seconds, found {}",
            args.comm_timeout
        )));
    }
    let timeout = std::time::Duration::from_secs_f64(args.comm_timeout);
    let world = super::world::join(args.dp, timeout)?;
    smelt_runtime::comm::with_world(world, || train(args))
}

fn train(args: Args) -> Result<(), Diagnostic> {
    let lead = smelt_runtime::comm::current_rank().0 == 0;
    if smelt_frontend::llm::Pretrained::is_pretrained(&args.model) {
        return Err(Diagnostic::in_file(
            &args.model.display().to_string(),
            "training a pretrained model (fine-tuning) is not supported yet; use it with generate, run or dump-ir",
        ));
    }
    // Either a compiled training step (artefact) or a model to compile now.
    let source = if is_artefact(&args.model) {
        Source::Compiled(Box::new(load_train_artefact(&args)?))
    } else {
        Source::Model(load_model(&args.model, &args.sets)?.graph)
    };
    if args.batch == 0 || args.steps == 0 || args.checkpoint_every == 0 || args.dp == 0 {
        return Err(Diagnostic::plain(
            "--steps, --batch, --checkpoint-every and --dp must be at least 1",
        ));
    }
    if args.dp > 1 && matches!(args.device, DeviceArg::Gpusim | DeviceArg::Cuda) {
        return Err(Diagnostic::plain(
            "--dp runs on --device cpu or interp (the GPU runtime has no NCCL engine yet)",
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Diagnostic::plain(format!(
            "--lr must be a positive number, found {}",
            args.lr
        )));
    }
    let optimizer = match &source {
        Source::Compiled(c) => c
            .purpose
            .optimizer()
            .expect("load_train_artefact refuses run artefacts")
            .clone(),
        Source::Model(_) => args.optimizer.optimizer()?,
    };
    let config = TrainConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        schedule: args.schedule,
        seed: args.seed,
        optimizer: optimizer.clone(),
        max_memory: args.memory.limit(),
        data_parallel: args.dp,
    };
    let ckpt = match &args.resume {
        None => None,
        Some(dir) => {
            let ckpt = Checkpoint::load(dir).map_err(fail)?;
            let forward = match &source {
                Source::Compiled(c) => &c.forward,
                Source::Model(g) => g,
            };
            if ckpt.meta.get("smelt.graph") != Some(&text::print(forward)) {
                return Err(Diagnostic::plain(format!(
                    "{}: the checkpoint was made from a different model (or different --set values)",
                    dir.display()
                )));
            }
            let changes = config.changes_from(&ckpt.meta);
            let listed = changes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if !changes.is_empty() && !args.allow_changed_settings {
                return Err(Diagnostic::plain(format!(
                    "{}: this run's settings differ from the checkpoint's ({listed}), so it would not continue the same run; use the checkpoint's settings, or add --allow-changed-settings",
                    dir.display()
                )));
            }
            if !changes.is_empty() {
                eprintln!("warning: resuming with changed settings: {listed}");
            }
            Some(ckpt)
        }
    };
    let data = Dataset::load(&args.data).map_err(fail)?;
    let mut trainer = match (source, args.device) {
        (Source::Compiled(c), _) => Trainer::from_compiled(*c, data, config),
        (Source::Model(g), DeviceArg::Cpu) => {
            let purpose = match args.dp {
                1 => Purpose::Train(optimizer),
                replicas => Purpose::TrainReplica {
                    optimizer,
                    replicas,
                },
            };
            let compiled = compile_cpu(&g, purpose, &args.opt, &args.cache)?;
            Trainer::from_compiled(compiled, data, config)
        }
        (Source::Model(g), DeviceArg::Interp) => {
            Trainer::new(&g, data, config, Device::Interp(Precision::F32))
        }
        (Source::Model(g), DeviceArg::Gpusim | DeviceArg::Cuda) => {
            let options = args.gpu.options();
            let target =
                GpuTarget::by_name(options.target).map_err(|e| Diagnostic::plain(e.to_string()))?;
            let step = prepare_for_gpu(&g, &Goal::Train(optimizer), &target, &args.opt)?;
            let device = match args.device {
                DeviceArg::Cuda => Device::Cuda(options),
                _ => Device::GpuSim(options),
            };
            Trainer::with_step(&g, step, data, config, device)
        }
    }
    .map_err(fail)?;
    if let Some(ckpt) = ckpt {
        trainer.restore(ckpt).map_err(fail)?;
    }
    let mut log = match args.log.as_ref().filter(|_| lead) {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    Diagnostic::in_file(&p.display().to_string(), format!("cannot open log: {e}"))
                })?,
        ),
        None => None,
    };
    let first = trainer.completed();
    if first >= args.steps {
        return Err(Diagnostic::plain(format!(
            "the checkpoint is at step {first}; ask for more --steps to continue"
        )));
    }
    let mut progress = Progress::new(first, args.steps, lead);
    let mut profile = args
        .profile
        .as_ref()
        .filter(|_| lead)
        .map(|_| Profile::new());
    let save = |trainer: &Trainer, profile: &mut Option<Profile>| -> Result<(), Diagnostic> {
        if let Some(dir) = args.checkpoint.as_ref().filter(|_| lead) {
            let began = profile.as_ref().map(Profile::now);
            trainer.checkpoint().save(dir).map_err(fail)?;
            if let (Some(p), Some(began)) = (profile.as_mut(), began) {
                p.checkpoint(trainer.completed(), began);
            }
        }
        Ok(())
    };
    while trainer.completed() < args.steps {
        let began = profile.as_ref().map(Profile::now);
        let report = match trainer.step() {
            Ok(r) => r,
            Err(e) => {
                progress.finish();
                // Keep the timing of the steps that ran: it may show why this one failed.
                if let (Some(path), Some(p)) = (&args.profile, &profile) {
                    p.write(path)?;
                }
                return Err(fail(e));
            }
        };
        if let (Some(p), Some(began)) = (profile.as_mut(), began) {
            p.step(&report, began);
        }
        if let Some(f) = &mut log {
            // Data-parallel steps on the CPU backend also say how their gradient sums
            // went: seconds on the communication lane, and the share compute hid.
            let comm = match report.comm.collectives {
                0 => String::new(),
                _ => format!(
                    ",\"comm_seconds\":{},\"comm_hidden\":{}",
                    report.comm.seconds,
                    report.comm.hidden()
                ),
            };
            let line = format!(
                "{{\"step\":{},\"loss\":{},\"lr\":{},\"seconds\":{},\"tokens_per_second\":{}{comm}}}\n",
                report.step,
                report.loss,
                report.lr,
                report.seconds,
                report.tokens as f64 / report.seconds
            );
            f.write_all(line.as_bytes())
                .map_err(|e| Diagnostic::plain(format!("cannot write the log: {e}")))?;
        }
        progress.update(&report);
        if report.step % args.checkpoint_every == 0 || report.step == args.steps {
            save(&trainer, &mut profile)?;
        }
    }
    progress.finish();
    if let (Some(path), Some(p)) = (&args.profile, &profile) {
        p.write(path)?;
        eprintln!("profile: {}", path.display());
    }
    if let Some(dir) = args.checkpoint.as_ref().filter(|_| lead) {
        eprintln!(
            "checkpoint: {}",
            dir.join(smelt_runtime::train::checkpoint::FILE).display()
        );
    }
    Ok(())
}

/// What `train` runs: a compiled training step, or a model graph to compile.
enum Source {
    Compiled(Box<Compiled>),
    Model(Graph),
}

/// Loads a compiled artefact for `train`: it must hold a training step, and settings
/// fixed at compile time (`--set`, the optimiser) cannot be given again.
fn load_train_artefact(args: &Args) -> Result<Compiled, Diagnostic> {
    let shown = args.model.display().to_string();
    let fixed = |what: &str| {
        Diagnostic::in_file(
            &shown,
            format!("{what} applies when compiling; this is a compiled artefact"),
        )
    };
    if !args.sets.is_empty() {
        return Err(fixed("--set"));
    }
    if args.optimizer.given() {
        return Err(fixed(
            "the optimiser (--optimizer, --weight-decay, --momentum)",
        ));
    }
    if matches!(args.device, DeviceArg::Interp) {
        return Err(Diagnostic::in_file(
            &shown,
            "a compiled artefact runs on --device cpu; give the model file to use the interpreter",
        ));
    }
    let compiled = load_compiled(&args.model)?;
    if compiled.purpose == Purpose::Run {
        return Err(Diagnostic::in_file(
            &shown,
            "this artefact was compiled without --train; compile it with smelt compile --train",
        ));
    }
    Ok(compiled)
}

/// Measured timing of a training run, as trace events on the `cpu` track.
struct Profile {
    origin: std::time::Instant,
    events: Vec<TraceEvent>,
}

impl Profile {
    fn new() -> Profile {
        Profile {
            origin: std::time::Instant::now(),
            events: Vec::new(),
        }
    }

    /// Microseconds since the run began.
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1e6
    }

    /// Records a step that began at `began` (microseconds) and just ended.
    fn step(&mut self, report: &StepReport, began: f64) {
        let ended = self.now();
        self.events.push(
            TraceEvent::new(
                format!("step {}", report.step),
                "cpu",
                Role::Compute,
                began,
                ended - began,
            )
            .with_arg("step", report.step)
            .with_arg("loss", report.loss)
            .with_arg("lr", report.lr)
            .with_arg("tokens", report.tokens),
        );
        // The trainer times its phases from its own start, a moment after `began`,
        // so they nest inside the step's span.
        let inner_start = ended - report.seconds * 1e6;
        for phase in &report.phases {
            self.events.push(TraceEvent::new(
                phase.name,
                "cpu",
                Role::Compute,
                inner_start + phase.start * 1e6,
                phase.seconds * 1e6,
            ));
        }
    }

    /// Records a checkpoint write of step `step` that began at `began`.
    fn checkpoint(&mut self, step: usize, began: f64) {
        let ended = self.now();
        self.events.push(
            TraceEvent::new("checkpoint", "cpu", Role::Comm, began, ended - began)
                .with_arg("step", step),
        );
    }

    fn write(&self, path: &std::path::Path) -> Result<(), Diagnostic> {
        std::fs::write(path, chrome_trace("smelt train", &self.events)).map_err(|e| {
            Diagnostic::in_file(&path.display().to_string(), format!("cannot write: {e}"))
        })
    }
}

/// A progress bar on a terminal; plain lines otherwise; nothing on data-parallel ranks
/// other than 0.
struct Progress {
    shown: bool,
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    first: usize,
    started: std::time::Instant,
    tokens: usize,
}

impl Progress {
    fn new(first: usize, total: usize, shown: bool) -> Progress {
        let bar = (shown && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len} {msg} ETA {eta}",
                )
                .expect("the template is valid"),
            );
            bar.set_position(first as u64);
            bar
        });
        Progress {
            shown,
            bar,
            total,
            first,
            started: std::time::Instant::now(),
            tokens: 0,
        }
    }

    fn update(&mut self, r: &StepReport) {
        self.tokens += r.tokens;
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.tokens as f64 / elapsed;
        let msg = format!("loss {:.4} lr {:.2e} {:.0} tok/s", r.loss, r.lr, rate);
        match &self.bar {
            Some(bar) => {
                bar.set_position(r.step as u64);
                bar.set_message(msg);
            }
            None if !self.shown => {}
            None => {
                let every = (self.total / 20).max(1);
                if r.step.is_multiple_of(every) || r.step == self.total || r.step == self.first + 1
                {
                    let done = (r.step - self.first) as f64;
                    let eta = elapsed / done * (self.total - r.step) as f64;
                    eprintln!("step {}/{} {msg} ETA {eta:.0}s", r.step, self.total);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
