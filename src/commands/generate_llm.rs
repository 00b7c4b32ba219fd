//! `smelt generate MODEL.gguf|HF_DIR`: text from a pretrained model, streamed as it is
//! made, with a KV cache (a prefill program for the prompt, a decode program per token).

use super::generate::Args;
use super::generate::WeightPrecision;
use super::{compile_cpu, CacheArgs, OptArgs};
use smelt_frontend::lang::Mode;
use smelt_frontend::llm::{
    stop_prefix_len, BlockLayout, Message, Pretrained, Storage, TextStream, Weight,
};
use smelt_frontend::Diagnostic;
use smelt_runtime::compiled::Purpose;
use smelt_runtime::decode::sample::{Sampler, Sampling};
use smelt_runtime::decode::{Decoder, Engine, WeightData};
use std::io::Write;
use std::time::Instant;

/// Context positions allocated when the model allows more and nothing else is asked.
const DEFAULT_CONTEXT: usize = 4096;

pub fn main(args: Args) -> Result<(), Diagnostic> {
    let shown = args.model.display().to_string();
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repeat_penalty,
        seed: args.seed,
    };
    sampling
        .check()
        .map_err(|m| Diagnostic::plain(format!("--{m}")))?;
    let storage = match args.precision {
        WeightPrecision::Quantised => Storage::Blocks,
        WeightPrecision::F32 => Storage::F32,
    };
    let mut model = Pretrained::open_with(&args.model, storage)
        .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    let prompt = if args.chat {
        let template = model.chat_template.as_ref().ok_or_else(|| {
            Diagnostic::in_file(&shown, "the model has no chat template; leave out --chat")
        })?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        template
            .render(&messages)
            .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?
    } else {
        args.prompt.clone()
    };
    let context = model.context.min(DEFAULT_CONTEXT);
    let mut decoder = decoder(&mut model, &args.opt, &args.cache, context)?;
    let tokenizer = &model.tokenizer;
    let prompt_ids = tokenizer
        .encode(&prompt)
        .map_err(|e| Diagnostic::plain(e.to_string()))?;
    if prompt_ids.is_empty() {
        return Err(Diagnostic::plain(
            "--prompt is empty: give some text to continue",
        ));
    }
    let mut sampler = Sampler::new(sampling);
    let mut out = std::io::stdout().lock();
    if !args.chat {
        let _ = out.write_all(prompt.as_bytes());
    }
    let mut history = prompt_ids.clone();
    let mut stream = TextStream::new();
    let mut text = String::new();
    let mut printed = 0;
    let started = Instant::now();
    let mut logits = decoder
        .feed(&prompt_ids)
        .map_err(|e| Diagnostic::plain(e.to_string()))?;
    let prefilled = started.elapsed();
    let mut generated = 0usize;
    for _ in 0..args.tokens {
        let next = sampler.pick(logits.last().expect("one row per fed token"), &history);
        if model.stop_tokens.contains(&next) {
            break;
        }
        history.push(next);
        generated += 1;
        text += &stream
            .push(tokenizer, next)
            .map_err(|e| Diagnostic::plain(e.to_string()))?;
        if let Some(cut) = args.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            let _ = out.write_all(&text.as_bytes()[printed.min(cut)..cut]);
            printed = text.len();
            break;
        }
        // Text that may begin a stop string waits until it is known not to.
        let safe = text.len() - stop_prefix_len(&text, &args.stop);
        let _ = out.write_all(&text.as_bytes()[printed..safe]);
        let _ = out.flush();
        printed = safe;
        if decoder.len() >= context {
            eprintln!("\nstopped: the context of {context} tokens is full");
            break;
        }
        logits = decoder
            .feed(&[next])
            .map_err(|e| Diagnostic::plain(e.to_string()))?;
    }
    if printed < text.len() && args.stop.iter().all(|s| !text.contains(s.as_str())) {
        let _ = out.write_all(&text.as_bytes()[printed..]);
    }
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    let decoding = started.elapsed() - prefilled;
    let rate = |n: usize, t: std::time::Duration| n as f64 / t.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.1} tok/s); generated: {generated} tokens in {:.2} s ({:.1} tok/s)",
        prompt_ids.len(),
        prefilled.as_secs_f64(),
        rate(prompt_ids.len(), prefilled),
        decoding.as_secs_f64(),
        rate(generated, decoding),
    );
    Ok(())
}

/// Compiles `model`'s prefill and decode programs (through the compile cache) and
/// moves its weights into a decoder for sequences of up to `context` tokens.
pub(crate) fn decoder(
    model: &mut Pretrained,
    opt: &OptArgs,
    cache: &CacheArgs,
    context: usize,
) -> Result<Decoder, Diagnostic> {
    engine(model, opt, cache, context, context).map(Decoder::with_engine)
}

/// As [`decoder`], an engine for many sequences whose KV cache holds up to
/// `cache_positions` positions in all.
pub(crate) fn engine(
    model: &mut Pretrained,
    opt: &OptArgs,
    cache: &CacheArgs,
    context: usize,
    cache_positions: usize,
) -> Result<Engine, Diagnostic> {
    let shown = model.path.clone();
    let compile = |mode| -> Result<_, Diagnostic> {
        let graph = model
            .lower(mode)
            .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?
            .graph;
        Ok(compile_cpu(&graph, Purpose::Run, opt, cache)?.program)
    };
    let (prefill, step) = (compile(Mode::PrefillLast)?, compile(Mode::DecodeLast)?);
    let weights = std::mem::take(&mut model.weights)
        .into_iter()
        .map(weight_data)
        .collect();
    Engine::with_cache(prefill, step, weights, context, cache_positions)
        .map_err(|e| Diagnostic::plain(e.to_string()))
}

/// A loaded weight for the decoder: blocks the CPU backend's products read directly
/// stay quantised; other formats are dequantised.
fn weight_data(w: Weight) -> (String, Vec<usize>, WeightData) {
    let data = match &w.blocks {
        Some(b) => WeightData::quantised(
            b.ggml_type.id(),
            [w.shape[0], w.shape[1]],
            &b.bytes,
            b.layout == BlockLayout::Rows,
        )
        .unwrap_or_else(|| WeightData::F32(w.values())),
        None => WeightData::F32(w.data),
    };
    (w.name, w.shape, data)
}
