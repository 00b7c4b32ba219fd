//! `smelt serve MODEL.gguf|HF_DIR`: the OpenAI-compatible server of `smelt-serve` over
//! the model's decode engine.

use super::generate::WeightPrecision;
use super::generate_llm::engine;
use super::{CacheArgs, OptArgs};
use smelt_frontend::llm::{Pretrained, Storage};
use smelt_frontend::Diagnostic;
use smelt_serve::{Config, Limits, Served};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file or a Hugging Face model directory (with config.json).
    pub model: PathBuf,
    /// The address to listen on (loopback unless you mean otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The port (0: any free one; the one chosen is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The most sequences decoded together (each choice of a request is one).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// KV cache positions shared by all running sequences (a paged pool that grows up
    /// to this); also the longest sequence (at most the model's context).
    #[arg(long, default_value_t = 8192)]
    pub ctx: usize,
    /// The most requests waiting for a place; more get HTTP 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The most prompt tokens read between two decode steps, over all prompts (long
    /// prompts are read in chunks, so running streams keep going).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Requests must send `Authorization: Bearer KEY`.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model's id in requests (default: the file or directory name).
    #[arg(long)]
    pub alias: Option<String>,
    /// The largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Stop by itself after this many seconds, as on SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    pub exit_after: Option<f64>,
    /// After SIGTERM, seconds that running streams get to finish.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub grace: f64,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// As for `smelt generate`.
    #[arg(long, value_enum, default_value_t = WeightPrecision::Quantised)]
    pub precision: WeightPrecision,
    #[command(flatten)]
    pub opt: OptArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

fn seconds(flag: &str, s: f64) -> Result<Duration, Diagnostic> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        Diagnostic::plain(format!(
            "--{flag} must be a number of seconds >= 0, found {s}"
        ))
    })
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    if args.device == Device::Cuda {
        return Err(Diagnostic::plain(
            "--device cuda: the decode engine runs on the CPU only so far; use --device cpu",
        ));
    }
    for (flag, value) in [
        ("parallel", args.parallel),
        ("ctx", args.ctx),
        ("chunk", args.chunk),
        ("max-body", args.max_body),
    ] {
        if value == 0 {
            return Err(Diagnostic::plain(format!("--{flag} must be at least 1")));
        }
    }
    let exit_after = args
        .exit_after
        .map(|s| seconds("exit-after", s))
        .transpose()?;
    let grace = seconds("grace", args.grace)?;
    let shown = args.model.display().to_string();
    if !Pretrained::is_pretrained(&args.model) {
        return Err(Diagnostic::in_file(
            &shown,
            "smelt serve takes a pretrained model: a GGUF file or a Hugging Face directory",
        ));
    }
    let storage = match args.precision {
        WeightPrecision::Quantised => Storage::Blocks,
        WeightPrecision::F32 => Storage::F32,
    };
    let mut model = Pretrained::open_with(&args.model, storage)
        .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    let context = model.context.min(args.ctx);
    let engine = engine(&mut model, &args.opt, &args.cache, context, args.ctx)?;
    let name = args.alias.clone().unwrap_or_else(|| {
        let file = args.model.file_name().unwrap_or(args.model.as_os_str());
        let file = file.to_string_lossy();
        file.strip_suffix(".gguf").unwrap_or(&file).to_string()
    });
    let served = Served {
        name,
        engine,
        tokenizer: model.tokenizer,
        chat_template: model.chat_template,
        stop_tokens: model.stop_tokens,
    };
    let config = Config {
        address: SocketAddr::new(args.host, args.port),
        limits: Limits {
            parallel: args.parallel,
            cache_tokens: args.ctx,
            queue: args.queue,
            chunk: args.chunk,
        },
        api_key: args.api_key,
        max_body: args.max_body,
        exit_after,
        grace,
    };
    smelt_serve::serve(served, config).map_err(|e| Diagnostic::plain(e.to_string()))
}
