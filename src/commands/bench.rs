//! `smelt bench`: times the benchmark workloads W1–W4 (../shared/peers/README.md) on
//! the CPU backend, against the op-by-op CPU backend measured in the same run; and,
//! with `--workload compile`, how long compiling a training step takes at growing depth,
//! stage by stage.

use super::bench_conditions::{cpu, wait_quiet, CpuSample, Quiet};
use super::bench_peers::{default_results, latest, peers_data, record_age, PeerCell};
use super::load_model;
use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::ir::{Def, Graph};
use smelt_compiler::optimize::{Options, RooflineTarget};
use smelt_compiler::pipeline::{prepare, Goal};
use smelt_compiler::schedule::schedule_with;
use smelt_frontend::Diagnostic;
use smelt_runtime::cpu::{CpuProgram, Resident};
use smelt_runtime::{params, rng, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Which workloads to time.
    #[arg(long, value_enum, default_values_t = vec![Workload::Mlp, Workload::Gpt, Workload::Matmul, Workload::Moe])]
    workload: Vec<Workload>,
    /// Timed iterations per workload (the median is reported). Default: the peers'
    /// counts (W1 and W3: 30, W2 and W4: 20; compile: 10; llm: 5).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed iterations first. Default: the peers' counts (W1 and W3: 5, W2 and
    /// W4: 3).
    #[arg(long)]
    warmup: Option<usize>,
    /// Seconds to wait, before each workload, for the machine to be quiet (under 10%
    /// busy), as the peers do; 0: do not wait.
    #[arg(long, default_value_t = 90, value_name = "SECONDS")]
    quiet_max: u64,
    /// Skip the op-by-op baseline (faster; no ratio).
    #[arg(long)]
    no_baseline: bool,
    /// Time the graphs as written, without the e-graph optimiser.
    #[arg(long)]
    no_optimize: bool,
    /// The peers' results folder to compare with (default: $PEERS_HOME/results, else
    /// ~/.cache/smelt-peers/results, when it exists). Time the peers in the same
    /// sitting: bash ../shared/peers/run_one.sh PEER WORKLOAD.
    #[arg(long, value_name = "DIR")]
    peers: Option<PathBuf>,
    /// The GGUF file of the llm workload (default: the peers' SmolLM2-135M-Instruct
    /// Q4_1, else the test data's).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The llm workload's weights: in their block formats, or dequantised to f32.
    #[arg(long, value_enum, default_value_t = super::generate::WeightPrecision::Quantised)]
    precision: super::generate::WeightPrecision,
    /// Depths the compile workload compiles each model at.
    #[arg(long, value_delimiter = ',', default_values_t = vec![8, 16, 32, 64, 128])]
    layers: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Workload {
    /// W1: MLP 784-1024-1024-10 training step, batch 128, SGD.
    Mlp,
    /// W2: GPT (2 layers, d_model 256) training step, batch 8, AdamW.
    Gpt,
    /// W3: 1024³ f32 matrix product.
    Matmul,
    /// W4: MoE (8 experts, top-2) forward and backward, 1024 tokens; sparse routing
    /// (each token runs its 2 experts, `grouped_matmul`).
    Moe,
    /// W4 in its dense formulation (every expert on every token, zero gates).
    MoeDense,
    /// W5: prefill and decode tok/s of a pretrained LLM (SmolLM2-135M, Q4_1 GGUF),
    /// as llama-bench measures them.
    Llm,
    /// Compile time, not run time: the GPT and Llama training steps (AdamW) at each
    /// `--layers` depth, from the model file to native code, stage by stage (fastest
    /// of `--iters` runs per depth, interleaved).
    Compile,
}

struct Case {
    name: &'static str,
    forward: Graph,
    goal: Goal,
    batch: usize,
    gflop: f64,
}

fn random(
    shape: &[usize],
    name: &str,
    int_max: Option<i64>,
    dtype: smelt_compiler::ir::DType,
) -> Tensor {
    let n: usize = shape.iter().product();
    let s = rng::seed_for(42, name);
    match int_max {
        Some(m) => Tensor::from_i64(
            dtype,
            shape.to_vec(),
            (0..n as u64)
                .map(|i| (rng::uniform01(s, i) * m as f64) as i64)
                .collect(),
        ),
        None => Tensor::from_f64(
            dtype,
            shape.to_vec(),
            (0..n as u64).map(|i| rng::normal01(s, i)).collect(),
        ),
    }
}

fn case(w: Workload, root: &Path) -> Result<Case, Diagnostic> {
    let load = |p: &str| load_model(&root.join(p), &[]).map(|m| m.graph);
    let (name, file, goal, batch, gflop) = match w {
        Workload::Mlp => (
            "W1 mlp train step",
            "examples/mlp.smelt",
            Goal::Train(Optimizer::sgd()),
            128,
            1.22,
        ),
        Workload::Gpt => (
            "W2 gpt train step",
            "examples/gpt.smelt",
            Goal::Train(Optimizer::adamw()),
            8,
            11.3,
        ),
        Workload::Matmul => (
            "W3 matmul 1024³",
            "examples/bench/matmul.sir",
            Goal::Run,
            1,
            2.0 * 1024f64.powi(3) / 1e9,
        ),
        // Exact top-2: 2 of the 8 experts' FLOP.
        Workload::Moe => (
            "W4 moe fwd+bwd (sparse)",
            "examples/bench/moe_w4.smelt",
            Goal::Gradients,
            1024,
            2.68,
        ),
        Workload::MoeDense => (
            "W4 moe fwd+bwd (dense)",
            "examples/bench/moe_w4_dense.smelt",
            Goal::Gradients,
            1024,
            10.7,
        ),
        Workload::Compile | Workload::Llm => {
            return Err(Diagnostic::plain(
                "the compile and llm workloads are timed on their own",
            ))
        }
    };
    Ok(Case {
        name,
        forward: load(file)?,
        goal,
        batch,
        gflop,
    })
}

impl Workload {
    /// Warm-up and timed iterations, as the peers' harness runs them
    /// (../shared/peers/common/harness.py).
    fn peer_counts(self) -> (usize, usize) {
        match self {
            Workload::Mlp | Workload::Matmul => (5, 30),
            _ => (3, 20),
        }
    }

    /// The peers' fixed data of this workload: (file under the data folder, smelt's
    /// name), from `examples/bench/peer_data.txt`. W3 has none: every peer draws its
    /// own N(0, 1) matrices; W4's dense model cannot take the stacked expert arrays.
    fn peer_files(self) -> Vec<(String, String)> {
        let key = match self {
            Workload::Mlp => "mlp",
            Workload::Gpt => "gpt",
            Workload::Moe => "moe",
            // The dense model holds each expert's parameters apart, not stacked.
            Workload::MoeDense => return vec![],
            Workload::Matmul | Workload::Compile | Workload::Llm => return vec![],
        };
        include_str!("../../examples/bench/peer_data.txt")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [w, file, name] if w == key => Some((file.to_string(), name.to_string())),
                _ => None,
            })
            .collect()
    }

    /// The peers' records this workload is compared with.
    fn peers(self) -> Vec<PeerCell> {
        let cell = |label, file, workload, variant| PeerCell {
            label,
            file,
            workload,
            variant,
        };
        match self {
            Workload::Mlp | Workload::Gpt => {
                let w = if self == Workload::Mlp { "mlp" } else { "gpt" };
                vec![
                    cell("JAX jit", "jax", w, "jit"),
                    cell("PyTorch eager", "torch", w, "eager"),
                ]
            }
            Workload::Matmul => vec![cell("NumPy/OpenBLAS", "numpy-openblas", "matmul", "sgemm")],
            Workload::Moe => vec![
                cell("PyTorch eager (sparse)", "torch", "moe", "sparse"),
                cell("JAX jit (ragged)", "jax", "moe", "ragged"),
            ],
            Workload::MoeDense => vec![
                cell("PyTorch eager (dense)", "torch", "moe", "dense"),
                cell("JAX jit (dense)", "jax", "moe", "dense"),
            ],
            Workload::Compile | Workload::Llm => vec![],
        }
    }
}

/// Prints smelt's medians beside the peers' latest records in `dir`.
fn print_peers(dir: &Path, timed: &[(Workload, &str, f64)]) {
    println!("\nPeers' latest records in {}:\n", dir.display());
    println!(
        "| workload | smelt median ms | peer | peer median ms | smelt ÷ peer | peer measured |"
    );
    println!("|---|---:|---|---:|---:|---|");
    for &(w, name, median) in timed {
        for cell in w.peers() {
            let Some(record) = latest(dir, &cell) else {
                continue;
            };
            let Some(peer) = record["median_ms"].as_f64() else {
                continue;
            };
            println!(
                "| {name} | {median:.1} | {} | {peer:.1} | {:.2} | {} |",
                cell.label,
                median / peer,
                record_age(&record, dir, cell.file)
            );
        }
    }
    println!("\nA ratio below 1 means smelt is faster. It means something only if the peers ran in this sitting, on a quiet machine.");
}

/// The feeds of workload `w`: the peers' fixed inputs and initial parameters where
/// their data is set up (`data`), otherwise smelt's fixed random ones; and which.
fn feeds(
    w: Workload,
    graph: &Graph,
    batch: usize,
    data: Option<&Path>,
) -> Result<(HashMap<String, Tensor>, &'static str), Diagnostic> {
    let mut feeds = random_feeds(w, graph, batch);
    let files = w.peer_files();
    let Some(data) = data.filter(|_| !files.is_empty()) else {
        let source = match w {
            _ if !files.is_empty() => "random (no peers' data)",
            Workload::MoeDense => "random (parameters per expert, not the peers' stacked ones)",
            _ => "random (as the peers)",
        };
        return Ok((feeds, source));
    };
    for (file, name) in files {
        if graph.find(&name).is_none() {
            return Err(Diagnostic::plain(format!(
                "the peers' {file} has no counterpart %{name} in the workload's graph"
            )));
        }
        let t = smelt_runtime::io::read_npy(&data.join(&file))
            .map_err(|e| Diagnostic::plain(format!("the peers' data: {e}")))?;
        feeds.insert(name, t);
    }
    Ok((feeds, "the peers' fixed data"))
}

/// Fixed random feeds for every parameter and input of `graph`.
fn random_feeds(w: Workload, graph: &Graph, batch: usize) -> HashMap<String, Tensor> {
    let mut feeds = params::init_params(graph, 0);
    for id in graph.inputs() {
        let v = graph.value(id);
        let shape: Vec<usize> =
            v.ty.dims()
                .iter()
                .map(|d| d.as_static().map_or(batch, |n| n as usize))
                .collect();
        let t = match v.name.as_str() {
            "lr" => Tensor::from_f64(
                v.ty.dtype,
                vec![],
                vec![if w == Workload::Mlp { 0.01 } else { 1e-3 }],
            ),
            "step" => Tensor::from_f64(v.ty.dtype, vec![], vec![1.0]),
            "labels" => random(&shape, &v.name, Some(10), v.ty.dtype),
            "tokens" => random(&shape, &v.name, Some(512), v.ty.dtype),
            _ => random(&shape, &v.name, None, v.ty.dtype),
        };
        feeds.insert(v.name.clone(), t);
    }
    feeds
}

/// Runs the pipeline (`optimize`: with the e-graph optimiser) and schedules the result
/// (`fuse`: with fusion).
fn build(c: &Case, optimize: bool, fuse: bool) -> Result<CpuProgram, Diagnostic> {
    let options = Options::default();
    let prepared = prepare(
        &c.forward,
        &c.goal,
        &RooflineTarget::cpu(),
        optimize.then_some(&options),
    )
    .map_err(|e| Diagnostic::plain(e.to_string()))?;
    CpuProgram::compile_with(&prepared.graph, fuse).map_err(|e| Diagnostic::plain(e.to_string()))
}

/// Times `program` on `feeds` as a training loop does: parameters and optimiser state
/// stay in the backend's buffers and each step's updates become the next step's state.
/// Returns the median and minimum step time (ms), and the share of the machine other
/// processes used meanwhile.
fn time(
    program: &CpuProgram,
    feeds: &HashMap<String, Tensor>,
    warmup: usize,
    iters: usize,
) -> Result<Timing, Diagnostic> {
    let fail = |e: smelt_runtime::RunError| Diagnostic::plain(e.to_string());
    let g = &program.schedule().graph;
    let (held, inputs): (HashMap<_, _>, HashMap<_, _>) =
        feeds.clone().into_iter().partition(|(name, _)| {
            g.find(name)
                .is_some_and(|id| !matches!(g.value(id).def, Def::Input))
        });
    let mut resident = Resident::new(program, &held).map_err(fail)?;
    let mut step = || -> Result<(), Diagnostic> {
        let (_, updates) = program.run_resident(&inputs, &resident).map_err(fail)?;
        resident.apply(updates);
        Ok(())
    };
    for _ in 0..warmup {
        step()?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(iters);
    let before = CpuSample::now();
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        step()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let foreign = before
        .zip(CpuSample::now())
        .map(|(a, b)| b.foreign_since(&a));
    ms.sort_by(f64::total_cmp);
    Ok(Timing {
        median: ms[ms.len() / 2],
        min: ms[0],
        foreign,
    })
}

/// One program's timed steps.
struct Timing {
    /// Median step, ms.
    median: f64,
    /// Fastest step, ms.
    min: f64,
    /// The share of the machine (all cores = 1) other processes used while timing.
    foreign: Option<f64>,
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = if root.join("examples").is_dir() {
        root
    } else {
        PathBuf::from(".")
    };
    let (compile, run): (Vec<Workload>, Vec<Workload>) =
        args.workload.iter().partition(|&&w| w == Workload::Compile);
    let (llm, run): (Vec<Workload>, Vec<Workload>) = run.iter().partition(|&&w| w == Workload::Llm);
    if !run.is_empty() {
        run_workloads(&args, &run, &root)?;
    }
    if !llm.is_empty() {
        let storage = match args.precision {
            super::generate::WeightPrecision::Quantised => smelt_frontend::llm::Storage::Blocks,
            super::generate::WeightPrecision::F32 => smelt_frontend::llm::Storage::F32,
        };
        super::bench_llm::llm_workload(
            args.model.as_deref(),
            args.iters.unwrap_or(5).min(5),
            storage,
            args.peers.as_deref(),
        )?;
    }
    if !compile.is_empty() {
        compile_workload(
            &args.layers,
            !args.no_optimize,
            &root,
            args.iters.unwrap_or(10),
        )?;
    }
    Ok(())
}

/// Times the run-time workloads `workloads`.
fn run_workloads(args: &Args, workloads: &[Workload], root: &Path) -> Result<(), Diagnostic> {
    let data = peers_data();
    println!("CPU: {}", cpu());
    match &data {
        Some(d) => println!("Data: the peers' fixed inputs and initial parameters, {}", d.display()),
        None => println!("Data: smelt's fixed random inputs (the peers' data is not set up: bash ../shared/peers/setup.sh)"),
    }
    println!(
        "Before each workload: a wait of up to {} s for a quiet machine (under 10% busy), as the peers do.\n",
        args.quiet_max
    );
    println!("| workload | smelt median (min) ms | GFLOP/s | compile + first step s | op-by-op median ms | speed-up | warm-up + timed | data | machine | other load |");
    println!("|---|---:|---:|---:|---:|---:|---|---|---|---:|");
    let mut timed = Vec::new();
    for &w in workloads {
        let c = case(w, root)?;
        let (peer_warmup, peer_iters) = w.peer_counts();
        let (warmup, iters) = (
            args.warmup.unwrap_or(peer_warmup),
            args.iters.unwrap_or(peer_iters),
        );
        let quiet = wait_quiet(Duration::from_secs(args.quiet_max));
        let start = Instant::now();
        let fused = build(&c, !args.no_optimize, true)?;
        let (feeds, source) = feeds(w, &fused.schedule().graph, c.batch, data.as_deref())?;
        fused
            .run(&feeds)
            .map_err(|e| Diagnostic::plain(e.to_string()))?;
        let first = start.elapsed().as_secs_f64();
        let smelt = time(&fused, &feeds, warmup, iters)?;
        // Its buffers (kept between runs) are not the baseline's.
        drop(fused);
        // The baseline gets the same warm-up and count as the fused program.
        let baseline = if args.no_baseline {
            None
        } else {
            let p = build(&c, false, false)?;
            Some(time(&p, &feeds, warmup, iters)?.median)
        };
        let (base, ratio) = match baseline {
            Some(b) => (format!("{b:.1}"), format!("{:.2}×", b / smelt.median)),
            None => ("—".into(), "—".into()),
        };
        let load = smelt
            .foreign
            .map_or("—".into(), |f| format!("{:.0}%", f * 100.0));
        let machine = match quiet {
            Quiet::Unchecked => "not checked".to_string(),
            q => q.to_string(),
        };
        println!(
            "| {} | {:.1} ({:.1}) | {:.1} | {first:.2} | {base} | {ratio} | {warmup} + {iters} | {source} | {machine} | {load} |",
            c.name,
            smelt.median,
            smelt.min,
            c.gflop / (smelt.median / 1e3)
        );
        timed.push((w, c.name, smelt.median));
    }
    println!("\nspeed-up = op-by-op CPU backend (same kernels; no e-graph optimiser, no fusion) ÷ smelt, measured in this run. other load = the share of the machine (all cores = 1) other processes used while smelt's steps were timed.");
    match args.peers.clone().or_else(default_results) {
        Some(dir) => print_peers(&dir, &timed),
        None => println!("Peers (JAX, PyTorch, tinygrad, NumPy) on the same workloads: bash ../shared/peers/run_all.sh, in the same sitting; then --peers DIR."),
    }
    Ok(())
}

/// The compile stages `smelt bench --workload compile` times, in order.
const COMPILE_STAGES: [&str; 7] = [
    "parse",
    "decompose",
    "e-graph",
    "autodiff",
    "e-graph (step)",
    "schedule",
    "JIT",
];

/// Wall time of each stage of [`COMPILE_STAGES`] for one model at one depth.
type CompileTimes = [Duration; COMPILE_STAGES.len()];

/// Compiles the training step (AdamW) of the model in `file` with `layers` blocks, from
/// the file to native code, timing each stage.
fn compile_once(file: &Path, layers: usize, optimize: bool) -> Result<CompileTimes, Diagnostic> {
    let start = Instant::now();
    let model = load_model(file, &[format!("layers={layers}")])?;
    let parse = start.elapsed();
    let options = Options::default();
    let prepared = prepare(
        &model.graph,
        &Goal::Train(Optimizer::adamw()),
        &RooflineTarget::cpu(),
        optimize.then_some(&options),
    )
    .map_err(|e| Diagnostic::in_file(&model.path, e.to_string()))?;
    let start = Instant::now();
    let scheduled = schedule_with(&prepared.graph, true);
    let schedule = start.elapsed();
    let start = Instant::now();
    CpuProgram::from_schedule(scheduled, true).map_err(|e| Diagnostic::plain(e.to_string()))?;
    let jit = start.elapsed();
    let p = prepared.times;
    Ok([
        parse,
        p.decompose,
        p.forward_egraph,
        p.autodiff,
        p.step_egraph,
        schedule,
        jit,
    ])
}

/// Prints, per model and depth, the fastest of `runs` compilations for each stage and
/// for the whole, and how much longer the whole took than at the previous depth (linear
/// growth: 2× per doubling). Compiling is deterministic, so time above the fastest run
/// is the machine's noise; on a shared 2-core machine the median still moved a
/// doubling's ratio by ±0.3. Depths run interleaved, round by round, so a slow spell
/// does not land on one depth.
fn compile_workload(
    layers: &[usize],
    optimize: bool,
    root: &Path,
    runs: usize,
) -> Result<(), Diagnostic> {
    println!("Compile time (ms) of the training step (AdamW), by stage, fastest of {runs} runs:\n");
    println!(
        "| model | layers | {} | total | × previous |",
        COMPILE_STAGES.join(" | ")
    );
    println!(
        "|---|---:|{}---:|---:|",
        "---:|".repeat(COMPILE_STAGES.len())
    );
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let fastest = |v: Vec<Duration>| v.into_iter().min().unwrap_or_default();
    for (name, file) in [
        ("gpt", "examples/gpt.smelt"),
        ("llama", "examples/llama.smelt"),
    ] {
        let mut times: Vec<Vec<CompileTimes>> = vec![Vec::new(); layers.len()];
        for _ in 0..runs.max(1) {
            for (i, &n) in layers.iter().enumerate() {
                times[i].push(compile_once(&root.join(file), n, optimize)?);
            }
        }
        let mut previous: Option<(usize, Duration)> = None;
        for (&n, runs) in layers.iter().zip(times) {
            let total = fastest(runs.iter().map(|t| t.iter().sum()).collect());
            let stages: Vec<String> = (0..COMPILE_STAGES.len())
                .map(|s| ms(fastest(runs.iter().map(|t| t[s]).collect())))
                .collect();
            let growth = match previous {
                Some((m, before)) if m > 0 => format!(
                    "{:.2} (depth ×{:.1})",
                    total.as_secs_f64() / before.as_secs_f64(),
                    n as f64 / m as f64
                ),
                _ => "—".into(),
            };
            println!(
                "| {name} | {n} | {} | {} | {growth} |",
                stages.join(" | "),
                ms(total)
            );
            previous = Some((n, total));
        }
    }
    println!("\nThe goal (issue 24): at most 2.2× per doubling of depth.");
    Ok(())
}
