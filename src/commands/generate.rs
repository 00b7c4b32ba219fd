//! `smelt generate`: sample text from a byte-level language model checkpoint.

use smelt_compiler::ir::{text, Graph, ValueId};
use smelt_frontend::Diagnostic;
use smelt_runtime::engine::{Device, Engine};
use smelt_runtime::train::Checkpoint;
use smelt_runtime::{rng, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint directory (or file) written by `smelt train --checkpoint`, a GGUF
    /// file, or a Hugging Face model directory (with config.json).
    pub model: PathBuf,
    /// The text to continue (with --chat: the user's message).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// How many tokens (bytes for smelt's own byte-level models) to generate.
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Sampling temperature (0 picks the most likely token).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pretrained models: wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// Pretrained models with --chat: a system message before the prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Pretrained models: keep only the K most likely tokens (0: all).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub top_k: usize,
    /// Pretrained models: keep the most likely tokens up to probability P (1: all).
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f64,
    /// Pretrained models: drop tokens below P times the most likely one's probability.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub min_p: f64,
    /// Pretrained models: penalise tokens already in the text (1: off).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub repeat_penalty: f64,
    /// Pretrained models: stop before this text (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Pretrained models: `quantised` keeps GGUF weights in their block formats
    /// (Q4_0, Q4_1, Q8_0 and Q4_K products read blocks directly; activations are rounded to
    /// 8 bits per block); `f32` dequantises them at load, the exact path.
    #[arg(long, value_enum, default_value_t = WeightPrecision::Quantised)]
    pub precision: WeightPrecision,
    #[command(flatten)]
    pub opt: super::OptArgs,
    #[command(flatten)]
    pub cache: super::CacheArgs,
}

/// How a pretrained model's weights are held.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightPrecision {
    /// In the checkpoint's block formats where the products can read them.
    Quantised,
    /// Dequantised to f32.
    F32,
}

/// The model's token input `[B, L]` and its `logits` output `[B, T, V]`.
fn token_model(g: &Graph) -> Result<(ValueId, ValueId), String> {
    let input = g
        .inputs()
        .find(|&id| g.ty(id).dtype.is_int() && g.ty(id).rank() == 2)
        .ok_or("the model has no integer token input [B, L]")?;
    let logits = g
        .outputs
        .iter()
        .copied()
        .find(|&o| g.value(o).name == "logits" && g.ty(o).rank() == 3)
        .ok_or("the model has no output `logits` [B, T, V]")?;
    Ok((input, logits))
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    if smelt_frontend::llm::Pretrained::is_pretrained(&args.model) {
        return super::generate_llm::main(args);
    }
    let shown = args.model.display().to_string();
    let ckpt = Checkpoint::load(&args.model).map_err(|e| Diagnostic::plain(e.to_string()))?;
    let src = ckpt
        .meta
        .get("smelt.graph")
        .ok_or_else(|| Diagnostic::in_file(&shown, "the checkpoint has no model graph"))?;
    let graph = text::parse(src)
        .map_err(|e| {
            Diagnostic::in_file(
                &shown,
                format!("the checkpoint's model does not parse: {e}"),
            )
        })?
        .graph;
    let (input, logits_id) = token_model(&graph).map_err(|m| Diagnostic::in_file(&shown, m))?;
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(Diagnostic::plain(
            "--temperature must be a finite number >= 0",
        ));
    }
    if let Some(other) = graph.inputs().find(|&id| id != input) {
        let name = &graph.value(other).name;
        return Err(Diagnostic::in_file(
            &shown,
            format!("the model needs input %{name} besides the tokens"),
        ));
    }
    let mut feeds: HashMap<String, Tensor> = HashMap::new();
    for id in graph.params() {
        let name = &graph.value(id).name;
        let t = ckpt.tensors.get(name).ok_or_else(|| {
            Diagnostic::in_file(&shown, format!("no tensor for parameter '{name}'"))
        })?;
        feeds.insert(name.clone(), t.clone());
    }
    let engine = Engine::new(&graph, Device::Cpu).map_err(|e| Diagnostic::plain(e.to_string()))?;
    let it = graph.ty(input);
    let len = it.dims()[1]
        .as_static()
        .ok_or_else(|| Diagnostic::in_file(&shown, "the token input needs a static length"))?
        as usize;
    let window = graph.ty(logits_id).dims()[1]
        .as_static()
        .unwrap_or(len as u64) as usize;
    let vocab = graph.ty(logits_id).dims()[2]
        .as_static()
        .unwrap_or(256)
        .min(256) as usize;
    let logits_pos = graph
        .outputs
        .iter()
        .position(|&o| o == logits_id)
        .expect("found among outputs");
    let mut text: Vec<u8> = args.prompt.clone().into_bytes();
    if text.is_empty() {
        text.push(b'\n');
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(args.prompt.as_bytes());
    for i in 0..args.tokens {
        let context = &text[text.len().saturating_sub(window)..];
        let mut tokens: Vec<i64> = context.iter().map(|&b| i64::from(b)).collect();
        tokens.resize(len, 0);
        feeds.insert(
            graph.value(input).name.clone(),
            Tensor::from_i64(it.dtype, vec![1, len], tokens),
        );
        let run = engine
            .run(&feeds)
            .map_err(|e| Diagnostic::plain(e.to_string()))?;
        let logits = run.outputs[logits_pos].to_f64_vec();
        let row = &logits[(context.len() - 1)
            * graph.ty(logits_id).dims()[2].as_static().unwrap_or(0) as usize..][..vocab];
        let next = sample(row, args.temperature, rng::uniform01(args.seed, i as u64));
        text.push(next as u8);
        let _ = out.write_all(&[next as u8]);
        let _ = out.flush();
    }
    let _ = out.write_all(b"\n");
    Ok(())
}

/// Draws an index from `softmax(logits / temperature)` with the uniform number `u`.
fn sample(logits: &[f64], temperature: f64, u: f64) -> usize {
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0);
    if temperature == 0.0 {
        return best;
    }
    let m = logits[best];
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l - m) / temperature).exp())
        .collect();
    let mut target = u * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return i;
        }
    }
    best
}
