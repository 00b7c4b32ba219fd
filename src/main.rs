//! The `smelt` command line: argument parsing and printing only; the work happens in
//! the frontend, compiler and runtime crates.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The compiler builds and drops millions of small vectors and maps (e-graph nodes,
// names, kernels): glibc's allocator spent a fifth of a deep model's compile time in
// `malloc`/`free` and its fastbin consolidation. Training steps free and reallocate the
// same large buffers each step; mimalloc reuses them without the page faults glibc
// took (550 faults in `smelt bench --workload mlp`, 15,600 with glibc even when told
// to keep freed memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// smelt: a deep-learning compiler. Reads model files, shows the IR of every stage, runs models.
#[derive(Parser)]
#[command(name = "smelt", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  smelt dump-ir examples/mlp.sir\n  smelt run examples/mlp.sir --input x=x.npy --input labels=labels.npy --output-dir out/"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's IR at a compiler stage, as text or JSON, or draw it (DOT, SVG).
    #[command(
        after_help = "Examples:\n  smelt dump-ir examples/mlp.sir\n  smelt dump-ir examples/mlp.sir --format json -o mlp.json\n  smelt dump-ir examples/mlp.sir --format svg -o mlp.svg\n  smelt dump-ir examples/gpt.smelt --train --stage grad --format svg --focus layers.0.q --depth 3 -o q.svg"
    )]
    DumpIr(commands::dump_ir::Args),
    /// Run a model on input tensors and write its outputs.
    #[command(
        after_help = "Examples:\n  smelt run examples/mlp.sir --input x=x.npy --input labels=labels.npy\n  smelt run examples/mlp.sir --input x=x.npy --input labels=labels.npy --weights mlp.safetensors --output-dir out/"
    )]
    Run(commands::run::Args),
    /// Compile a model, or with --train its training step, into an artefact that `smelt run`
    /// and `smelt train` take in place of the model file (skipping autodiff and scheduling).
    #[command(
        after_help = "The artefact holds the scheduled program (graphs, fused kernels in kernel IR, settings) with a\nformat version and a content hash; loading it only JIT-compiles the kernels again.\n\nExamples:\n  smelt compile examples/mlp.sir --target cpu -o mlp.smeltc\n  smelt run mlp.smeltc --input x=x.npy --input labels=labels.npy\n  smelt compile examples/gpt.smelt --train --optimizer adamw --target cpu -o gpt-train.smeltc\n  smelt train gpt-train.smeltc --data examples/data/genesis.txt --steps 100"
    )]
    Compile(commands::compile::Args),
    /// Train a model: forward, backward and optimiser compiled into one step.
    #[command(
        after_help = "Examples:\n  smelt train examples/gpt.smelt --data examples/data/genesis.txt --steps 200 --checkpoint ckpt\n  smelt train examples/mlp.smelt --data data.safetensors --optimizer sgd --lr 0.05 --log train.jsonl"
    )]
    Train(commands::train::Args),
    /// Sample text from a byte-level language model checkpoint.
    #[command(
        after_help = "Examples:\n  smelt generate ckpt --prompt 'In the beginning' --tokens 300"
    )]
    Generate(commands::generate::Args),
    /// Serve a pretrained model over HTTP with OpenAI's API (chat and text completions,
    /// streamed or whole), batching the running requests together.
    #[command(
        after_help = "Examples:\n  smelt serve SmolLM2-135M-Instruct.Q4_1.gguf --port 8080 --parallel 8\n  curl http://127.0.0.1:8080/v1/chat/completions -d '{\"model\": \"SmolLM2-135M-Instruct.Q4_1\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
    )]
    Serve(commands::serve::Args),
    /// Time the benchmark workloads (W1–W4) on the CPU backend, with ratios to the
    /// op-by-op baseline measured in the same run.
    #[command(after_help = "Examples:\n  smelt bench\n  smelt bench --workload matmul --iters 30")]
    Bench(commands::bench::Args),
    /// Draw training curves (loss and learning rate against step) from training logs.
    #[command(
        after_help = "Examples:\n  smelt plot train.jsonl -o loss.svg\n  smelt plot adamw.jsonl sgd.jsonl -o compare.svg"
    )]
    Plot(commands::plot::Args),
    /// Simulate a pipeline-parallel training step: a schedule (1F1B, zero bubble,
    /// DualPipe, DualPipeV) over ranks and micro-batches under given pass costs; step
    /// time, bubbles, trace.
    #[command(
        after_help = "Example:\n  smelt simulate --schedule zb1p --pp 4 --micro-batches 8 --costs F=1,B=2,W=1"
    )]
    Simulate(commands::simulate::Args),
    /// Measure the GPU path on a real GPU: bf16 matmul time, where communication CTAs
    /// run, the slowdown of reserving SMs, and all-to-all/compute overlap.
    #[command(after_help = "Example:\n  smelt gpu-check --target h200 --comm-sms 24")]
    GpuCheck(commands::gpu_check::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DumpIr(args) => commands::dump_ir::main(args),
        Command::Run(args) => commands::run::main(args),
        Command::Compile(args) => commands::compile::main(args),
        Command::Train(args) => commands::train::main(args),
        Command::Generate(args) => commands::generate::main(args),
        Command::Serve(args) => commands::serve::main(args),
        Command::Bench(args) => commands::bench::main(args),
        Command::Plot(args) => commands::plot::main(args),
        Command::Simulate(args) => commands::simulate::main(args),
        Command::GpuCheck(args) => commands::gpu_check::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(diagnostic) => {
            eprintln!("{diagnostic}");
            ExitCode::from(2)
        }
    }
}
