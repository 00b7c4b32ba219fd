//! `smelt bench`: times the benchmark workloads W1–W4 (../shared/peers/README.md) on
//! the CPU backend, against the op-by-op CPU backend measured in the same run; and,
//! with `--workload compile`, how long compiling a training step takes at growing depth,
//! stage by stage.

use super::bench_peers::{default_results, latest, minutes_ago, PeerCell};
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
    /// Timed iterations per workload (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
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
    println!("| workload | smelt median ms | peer | peer median ms | smelt ÷ peer | peer's results written |");
    println!("|---|---:|---|---:|---:|---|");
    for &(w, name, median) in timed {
        for cell in w.peers() {
            let Some((record, written)) = latest(dir, &cell) else {
                continue;
            };
            let Some(peer) = record["median_ms"].as_f64() else {
                continue;
            };
            println!(
                "| {name} | {median:.1} | {} | {peer:.1} | {:.2} | {:.0} min ago |",
                cell.label,
                median / peer,
                minutes_ago(written)
            );
        }
    }
    println!("\nA ratio below 1 means smelt is faster. It means something only if the peers ran in this sitting, on a quiet machine.");
}

/// Fixed random feeds for every parameter and input of `graph`.
fn feeds(w: Workload, graph: &Graph, batch: usize) -> HashMap<String, Tensor> {
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
/// Returns the median and minimum step time (ms).
fn time(
    program: &CpuProgram,
    feeds: &HashMap<String, Tensor>,
    warmup: usize,
    iters: usize,
) -> Result<(f64, f64), Diagnostic> {
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
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        step()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ms.len() / 2], ms[0]))
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
            args.iters.min(5),
            storage,
            args.peers.as_deref(),
        )?;
    }
    if !compile.is_empty() {
        compile_workload(&args.layers, !args.no_optimize, &root, args.iters)?;
    }
    Ok(())
}

/// Times the run-time workloads `workloads`.
fn run_workloads(args: &Args, workloads: &[Workload], root: &Path) -> Result<(), Diagnostic> {
    println!("| workload | smelt median (min) ms | GFLOP/s | compile + first step s | op-by-op median ms | speed-up |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut timed = Vec::new();
    for &w in workloads {
        let c = case(w, root)?;
        let start = Instant::now();
        let fused = build(&c, !args.no_optimize, true)?;
        let feeds = feeds(w, &fused.schedule().graph, c.batch);
        fused
            .run(&feeds)
            .map_err(|e| Diagnostic::plain(e.to_string()))?;
        let first = start.elapsed().as_secs_f64();
        let (median, min) = time(&fused, &feeds, args.warmup, args.iters)?;
        // Its buffers (kept between runs) are not the baseline's.
        drop(fused);
        let baseline = if args.no_baseline {
            None
        } else {
            let p = build(&c, false, false)?;
            Some(time(&p, &feeds, args.warmup.min(1), args.iters)?.0)
        };
        let (base, ratio) = match baseline {
            Some(b) => (format!("{b:.1}"), format!("{:.2}×", b / median)),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {median:.1} ({min:.1}) | {:.1} | {first:.2} | {base} | {ratio} |",
            c.name,
            c.gflop / (median / 1e3)
        );
        timed.push((w, c.name, median));
    }
    println!("\nspeed-up = op-by-op CPU backend (same kernels; no e-graph optimiser, no fusion) ÷ smelt, measured in this run.");
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
