//! Training: a compiled training step (forward, backward and optimiser update in one
//! graph, from `compiler::autodiff::optimizer`) run in a loop over batches of data.
//!
//! The loop owns the parameters and optimiser state; after each step it replaces them
//! with the step graph's updates. It feeds the learning rate from the schedule and the
//! step number. Everything is determined by the seed: initial parameters, batches, and
//! so the losses; a run resumed from a checkpoint continues exactly.

pub mod checkpoint;
pub mod data;
pub mod schedule;

pub use checkpoint::Checkpoint;
pub use data::Dataset;
pub use schedule::Schedule;

use crate::compiled::Compiled;
use crate::cpu::Resident;
use crate::engine::{Device, Engine};
use crate::interp::RunError;
use crate::memory::Held;
use crate::params::init_params;
use crate::tensor::Tensor;
use smelt_compiler::autodiff::optimizer::{replica_training_step, Optimizer};
use smelt_compiler::autodiff::AutodiffError;
use smelt_compiler::ir::{text, DType, Graph};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use thiserror::Error;

/// Why training stopped.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The model cannot be trained (no loss, no parameters).
    #[error("{0}")]
    Model(#[from] AutodiffError),
    /// The data cannot feed the model.
    #[error("data: {0}")]
    Data(String),
    /// A step failed to run.
    #[error("{0}")]
    Run(#[from] RunError),
    /// The backend cannot run the step.
    #[error("{0}")]
    Backend(String),
    /// The loss became NaN or infinite; parameters are left as they were before the step.
    #[error("step {step}: the loss is {loss}; stopping (parameters and checkpoints keep their last finite state)")]
    NonFinite {
        /// The step (1-based).
        step: usize,
        /// The loss.
        loss: f64,
    },
    /// A checkpoint could not be written or read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The file is not a smelt checkpoint at all (a plain safetensors file, or not one).
    #[error("checkpoint: {0}")]
    NotACheckpoint(String),
}

/// The settings of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Total steps of the run.
    pub steps: usize,
    /// Samples per batch.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of parameters and batches.
    pub seed: u64,
    /// The optimiser.
    pub optimizer: Optimizer,
    /// The most bytes the run's tensors may take ([`crate::memory::check`], and on the
    /// CPU backend [`crate::memory::check_planned`]).
    pub max_memory: u64,
    /// Data-parallel ranks (1: none). Each rank of the calling thread's world
    /// ([`crate::comm`]) runs `batch / data_parallel` samples of every batch, and the
    /// step averages gradients over the ranks. Not a setting a resumed run must keep.
    pub data_parallel: usize,
}

/// A setting of a resumed run that differs from the checkpoint's.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingChange {
    /// The flag that sets it (`--seed`).
    pub flag: &'static str,
    /// The checkpoint's value (`not recorded` for checkpoints without it).
    pub saved: String,
    /// This run's value.
    pub now: String,
}

impl std::fmt::Display for SettingChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.flag, self.saved, self.now)
    }
}

impl TrainConfig {
    /// The samples each data-parallel rank runs per step.
    pub fn rank_batch(&self) -> usize {
        self.batch / self.data_parallel.max(1)
    }

    /// The settings a resumed run must keep to continue the same run (the batches and
    /// updates depend on them): `(metadata key, flag, value)`. `--steps` may change.
    pub fn settings(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            (
                "smelt.optimizer",
                "--optimizer",
                format!("{:?}", self.optimizer),
            ),
            ("smelt.seed", "--seed", self.seed.to_string()),
            ("smelt.lr", "--lr", self.lr.to_string()),
            ("smelt.batch", "--batch", self.batch.to_string()),
            ("smelt.schedule", "--schedule", self.schedule.to_string()),
        ]
    }

    /// The settings that differ from those recorded in a checkpoint's metadata.
    pub fn changes_from(&self, meta: &BTreeMap<String, String>) -> Vec<SettingChange> {
        self.settings()
            .into_iter()
            .filter(|(key, _, now)| meta.get(*key) != Some(now))
            .map(|(key, flag, now)| SettingChange {
                flag,
                saved: meta
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "not recorded".to_string()),
                now,
            })
            .collect()
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just completed (1-based).
    pub step: usize,
    /// Its loss (before the update).
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Wall time of the step.
    pub seconds: f64,
    /// Tokens (text) or samples processed.
    pub tokens: usize,
    /// Where the step's time went, in order (for profiles).
    pub phases: [Phase; 3],
    /// The step's collectives (data-parallel runs on the CPU backend; zero otherwise).
    pub comm: crate::cpu::CommStats,
}

/// One timed part of a training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phase {
    /// What it did: `batch` (gather the batch and feeds), `run` (forward, backward and
    /// optimiser), `apply` (keep the updated parameters and state).
    pub name: &'static str,
    /// When it began, in seconds after the step began.
    pub start: f64,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// The loss of a step (its first output), which must be finite for the step to count.
/// Each data-parallel rank's loss is its part's mean, so the batch's is their mean;
/// every rank gets it before deciding, so all stop together.
fn finite_loss(step: usize, outputs: &[Tensor], shard: Shard) -> Result<f64, TrainError> {
    let loss = shard.mean_over_ranks(outputs[0].to_f64_vec()[0])?;
    if !loss.is_finite() {
        return Err(TrainError::NonFinite { step, loss });
    }
    Ok(loss)
}

/// Checks that `data` feeds `step_graph` and that a step at the configured batch fits
/// the memory limit, before parameters or batches are allocated: on the CPU backend by
/// its memory plan (once `engine` is compiled), elsewhere by every value at once.
fn check_fits(
    step_graph: &Graph,
    data: &Dataset,
    config: &TrainConfig,
    engine: &Engine,
) -> Result<(), TrainError> {
    data.check(step_graph, config.rank_batch())?;
    let bindings = Dataset::batch_bindings(step_graph, config.rank_batch());
    let limit = config.max_memory;
    let fail = |e: crate::memory::MemoryError| TrainError::Run(e.into());
    match engine {
        Engine::Cpu(program) => {
            crate::memory::check(step_graph, &bindings, limit, Held::Arguments).map_err(fail)?;
            let scheduled = &program.schedule().graph;
            crate::memory::check_planned(
                scheduled,
                &program.memory_plan(&bindings),
                &bindings,
                limit,
            )
            .map_err(fail)
        }
        _ => crate::memory::check(step_graph, &bindings, limit, Held::Everything).map_err(fail),
    }
}

/// A training run in progress.
pub struct Trainer {
    config: TrainConfig,
    forward: Graph,
    step_graph: Graph,
    engine: Engine,
    /// Parameters and optimiser state on the host; empty while `held` has them.
    state: HashMap<String, Tensor>,
    /// The state kept in the CPU backend's buffers between steps (CPU engine only).
    held: Option<Resident>,
    /// The names in `state` (parameters and optimiser state).
    state_names: std::collections::HashSet<String>,
    /// This process's part of every batch.
    shard: Shard,
    completed: usize,
    data: Dataset,
}

impl Trainer {
    /// Starts a run of `forward` (a graph with a scalar loss) on `data`.
    pub fn new(
        forward: &Graph,
        data: Dataset,
        config: TrainConfig,
        device: Device,
    ) -> Result<Trainer, TrainError> {
        let step_graph = replica_training_step(forward, &config.optimizer, config.data_parallel)?;
        Trainer::with_step(forward, step_graph, data, config, device)
    }

    /// Starts a run of `forward` whose training step (for `config`'s optimiser and
    /// data-parallel ranks, with the step graph's interface) is `step_graph`, e.g. made
    /// by `smelt_compiler::pipeline::prepare`.
    pub fn with_step(
        forward: &Graph,
        step_graph: Graph,
        data: Dataset,
        config: TrainConfig,
        device: Device,
    ) -> Result<Trainer, TrainError> {
        let shard = Shard::of_world(&config, &step_graph)?;
        // Compiling allocates no tensors; the check comes before any is made.
        let engine =
            Engine::new(&step_graph, device).map_err(|e| TrainError::Backend(e.to_string()))?;
        check_fits(&step_graph, &data, &config, &engine)?;
        Ok(Trainer::with_engine(
            forward.clone(),
            step_graph,
            engine,
            data,
            config,
            shard,
        ))
    }

    /// Starts a run of a compiled training step (`smelt compile --train`, the compile
    /// cache); its optimiser must be the one in `config`.
    pub fn from_compiled(
        compiled: Compiled,
        data: Dataset,
        config: TrainConfig,
    ) -> Result<Trainer, TrainError> {
        match compiled.purpose.optimizer() {
            Some(opt) if *opt == config.optimizer => {}
            Some(opt) => {
                return Err(TrainError::Backend(format!(
                    "the program was compiled for optimiser {opt:?}, not {:?}",
                    config.optimizer
                )))
            }
            None => {
                return Err(TrainError::Backend(
                    "the program was compiled without --train".into(),
                ))
            }
        }
        let replicas = compiled.purpose.replicas();
        if replicas != config.data_parallel {
            return Err(TrainError::Backend(format!(
                "the program was compiled for {replicas} data-parallel rank(s), not {}",
                config.data_parallel
            )));
        }
        // The scheduled graph has the step graph's inputs, parameters, state and
        // updates under the same names, so it feeds batches and initialisers as well.
        let step_graph = compiled.program.schedule().graph.clone();
        let shard = Shard::of_world(&config, &step_graph)?;
        let engine = Engine::Cpu(compiled.program);
        check_fits(&step_graph, &data, &config, &engine)?;
        Ok(Trainer::with_engine(
            compiled.forward,
            step_graph,
            engine,
            data,
            config,
            shard,
        ))
    }

    fn with_engine(
        forward: Graph,
        step_graph: Graph,
        engine: Engine,
        data: Dataset,
        config: TrainConfig,
        shard: Shard,
    ) -> Trainer {
        let state = init_params(&step_graph, config.seed);
        let state_names = state.keys().cloned().collect();
        Trainer {
            config,
            forward,
            step_graph,
            engine,
            state,
            held: None,
            state_names,
            completed: 0,
            data,
            shard,
        }
    }

    /// Continues a run from `ckpt`: its tensors replace the initial state (names and
    /// types must match the model), and counting resumes at its step.
    pub fn resume(
        forward: &Graph,
        data: Dataset,
        config: TrainConfig,
        device: Device,
        ckpt: Checkpoint,
    ) -> Result<Trainer, TrainError> {
        let mut t = Trainer::new(forward, data, config, device)?;
        t.restore(ckpt)?;
        Ok(t)
    }

    /// Replaces the state with `ckpt`'s tensors (names and types must match the model)
    /// and resumes counting at its step.
    pub fn restore(&mut self, ckpt: Checkpoint) -> Result<(), TrainError> {
        self.release_held();
        for (name, current) in self.state.iter_mut() {
            let saved = ckpt.tensors.get(name).ok_or_else(|| {
                TrainError::Checkpoint(format!(
                    "the checkpoint has no tensor '{name}' (is it from this model and optimiser?)"
                ))
            })?;
            if saved.shape != current.shape || saved.dtype != current.dtype {
                return Err(TrainError::Checkpoint(format!(
                    "tensor '{name}' is {} in the checkpoint but {} in the model",
                    saved.type_string(),
                    current.type_string()
                )));
            }
            *current = saved.clone();
        }
        self.completed = ckpt.step;
        Ok(())
    }

    /// The model graph being trained (what checkpoints record).
    pub fn forward(&self) -> &Graph {
        &self.forward
    }

    /// Steps completed so far.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// The training-step graph (forward, backward, update).
    pub fn step_graph(&self) -> &Graph {
        &self.step_graph
    }

    /// Current parameter and state values.
    pub fn state(&self) -> HashMap<String, Tensor> {
        match &self.held {
            Some(held) => held.to_tensors(),
            None => self.state.clone(),
        }
    }

    /// Moves state held by the backend back to the host.
    fn release_held(&mut self) {
        if let Some(held) = self.held.take() {
            self.state = held.to_tensors();
        }
    }

    /// Runs the next step.
    pub fn step(&mut self) -> Result<StepReport, TrainError> {
        let start = Instant::now();
        let step = self.completed + 1;
        let lr = self
            .config
            .schedule
            .lr(self.config.lr, step, self.config.steps);
        let mut feeds = self.data.batch_part(
            &self.step_graph,
            self.config.batch,
            self.shard.samples(self.config.batch),
            self.config.seed,
            self.completed,
        );
        // Once per batch, cheap next to the step: labels out of range are an error.
        crate::labels::check_class_labels(&self.forward, &feeds)?;
        feeds.insert("lr".into(), Tensor::from_f64(DType::F32, vec![], vec![lr]));
        feeds.insert(
            "step".into(),
            Tensor::from_f64(DType::F32, vec![], vec![step as f64]),
        );
        let batch_end = start.elapsed().as_secs_f64();
        let shard = self.shard;
        let mut comm = crate::cpu::CommStats::default();
        let (run_end, loss) = match &self.engine {
            // The state stays in the backend's f32 buffers from step to step.
            Engine::Cpu(program) => {
                let held = match self.held.take() {
                    Some(h) => h,
                    None => {
                        let h = Resident::new(program, &self.state)?;
                        self.state.clear();
                        h
                    }
                };
                let run = program.run_resident(&feeds, &held);
                let run_end = start.elapsed().as_secs_f64();
                if shard.ranks > 1 {
                    comm = program.last_comm();
                }
                let held = self.held.insert(held);
                let (outputs, updates) = run?;
                let loss = finite_loss(step, &outputs, shard)?;
                held.apply(updates);
                (run_end, loss)
            }
            engine => {
                // The state moves into the feeds and back (no copy); the updates replace it.
                feeds.extend(self.state.drain());
                let run = engine.run(&feeds);
                let run_end = start.elapsed().as_secs_f64();
                for (name, value) in feeds {
                    if self.state_names.contains(&name) {
                        self.state.insert(name, value);
                    }
                }
                let run = run?;
                let loss = finite_loss(step, &run.outputs, shard)?;
                self.state.extend(run.updates);
                (run_end, loss)
            }
        };
        let apply_end = start.elapsed().as_secs_f64();
        let phase = |name, from: f64, to: f64| Phase {
            name,
            start: from,
            seconds: to - from,
        };
        self.completed = step;
        Ok(StepReport {
            step,
            loss,
            lr,
            seconds: start.elapsed().as_secs_f64(),
            tokens: self.config.batch * self.data.tokens_per_sample(&self.step_graph),
            phases: [
                phase("batch", 0.0, batch_end),
                phase("run", batch_end, run_end),
                phase("apply", run_end, apply_end),
            ],
            comm,
        })
    }

    /// The current state as a checkpoint, with the forward graph and the settings.
    pub fn checkpoint(&self) -> Checkpoint {
        let c = &self.config;
        let mut meta: BTreeMap<String, String> = c
            .settings()
            .into_iter()
            .map(|(key, _, value)| (key.to_string(), value))
            .collect();
        meta.insert("smelt.graph".to_string(), text::print(&self.forward));
        meta.insert("smelt.steps".to_string(), c.steps.to_string());
        Checkpoint {
            step: self.completed,
            tensors: self.state().into_iter().collect(),
            meta,
        }
    }
}

/// The part of every batch a data-parallel rank runs: samples
/// `[rank·b, (rank+1)·b)` of the batch, where `b` is the batch over the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shard {
    rank: usize,
    ranks: usize,
}

impl Shard {
    /// This thread's part, from its world ([`crate::comm`]), which must have
    /// `config.data_parallel` ranks that divide the batch, all running `step_graph`
    /// with the same settings (checked collectively).
    fn of_world(config: &TrainConfig, step_graph: &Graph) -> Result<Shard, TrainError> {
        let (rank, ranks) = crate::comm::current_rank();
        let wanted = config.data_parallel.max(1);
        if ranks != wanted {
            return Err(TrainError::Backend(format!(
                "data parallelism over {wanted} rank(s) needs a world of {wanted} processes, but this one has {ranks} (start it with mpirun -np {wanted})"
            )));
        }
        if !config.batch.is_multiple_of(ranks) {
            return Err(TrainError::Data(format!(
                "the batch of {} samples does not split evenly over {ranks} data-parallel ranks",
                config.batch
            )));
        }
        if ranks > 1 {
            use std::hash::{Hash, Hasher};
            // SipHash with fixed keys: the same on every rank of one smelt build.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text::print(step_graph).hash(&mut h);
            format!("{:?} {}", config.settings(), config.steps).hash(&mut h);
            let same = crate::comm::with_current(|w| crate::comm::agree(w, h.finish()))
                .map_err(|e| TrainError::Backend(e.to_string()))?;
            if !same {
                return Err(TrainError::Backend(format!(
                    "rank {rank}: the data-parallel ranks run different models or settings (the model file, --set, the optimiser, --lr, --batch, --seed, --schedule and --steps must be the same on every rank)"
                )));
            }
        }
        Ok(Shard { rank, ranks })
    }

    /// The sample indices of this rank's part of a batch of `batch`.
    fn samples(&self, batch: usize) -> std::ops::Range<usize> {
        let part = batch / self.ranks;
        self.rank * part..(self.rank + 1) * part
    }

    /// The mean of `value` over the ranks (every rank gets it).
    fn mean_over_ranks(&self, value: f64) -> Result<f64, TrainError> {
        if self.ranks == 1 {
            return Ok(value);
        }
        let mut v = [value];
        crate::comm::with_current(|w| w.all_reduce_f64(&mut v))
            .map_err(|e| TrainError::Backend(e.to_string()))?;
        Ok(v[0] / self.ranks as f64)
    }
}
