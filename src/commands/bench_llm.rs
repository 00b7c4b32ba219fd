//! `smelt bench --workload llm`: W5 of `../shared/peers` as llama-bench measures it —
//! prefill tok/s (a 128-token prompt in one batch) and decode tok/s (128 tokens at
//! batch 1 from an empty context), medians over the repetitions, on SmolLM2-135M's
//! Q4_1 GGUF; the process's peak memory; ratios to llama.cpp's latest W5 record.

use super::generate_llm::decoder;
use super::{bench_peers, CacheArgs, OptArgs};
use smelt_frontend::llm::{Pretrained, Storage};
use smelt_frontend::Diagnostic;
use smelt_runtime::rng;
use std::path::{Path, PathBuf};
use std::time::Instant;

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Tokens per prefill and per decode run, as llama-bench's `-p 128 -n 128`.
const TOKENS: usize = 128;

/// The W5 model: `--model`, else the peers' copy, else the test data's.
fn model_path(given: Option<&Path>) -> Result<PathBuf, Diagnostic> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let peers = bench_peers::default_results().map(|r| r.with_file_name("models").join(GGUF));
    let testdata = PathBuf::from("target/llm-testdata").join(GGUF);
    peers
        .into_iter()
        .chain([testdata])
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Diagnostic::plain(format!(
            "no {GGUF}: pass --model, or run python3 scripts/llm-testdata.py target/llm-testdata"
        ))
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process in MiB (Linux), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Times W5 and prints its table.
pub fn llm_workload(
    given: Option<&Path>,
    iters: usize,
    storage: Storage,
    peers: Option<&Path>,
) -> Result<(), Diagnostic> {
    let path = model_path(given)?;
    let shown = path.display().to_string();
    let mut model = Pretrained::open_with(&path, storage)
        .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    let vocab = model.tokenizer.vocab_size() as u64;
    let opt = OptArgs::defaults();
    let mut decoder = decoder(&mut model, &opt, &CacheArgs::default(), 2 * TOKENS)?;
    let weights_mib = decoder.weight_bytes() as f64 / (1 << 20) as f64;
    let tokens: Vec<u32> = (0..TOKENS as u64)
        .map(|i| (rng::uniform01(42, i) * vocab as f64) as u32)
        .collect();
    let run = |decoder: &mut smelt_runtime::decode::Decoder,
               chunks: &[&[u32]]|
     -> Result<f64, Diagnostic> {
        decoder.reset();
        let start = Instant::now();
        for chunk in chunks {
            decoder
                .feed(chunk)
                .map_err(|e| Diagnostic::plain(e.to_string()))?;
        }
        Ok(TOKENS as f64 / start.elapsed().as_secs_f64())
    };
    let one_by_one: Vec<&[u32]> = tokens.chunks(1).collect();
    // One untimed round of each, so the programs' arenas are warm.
    run(&mut decoder, &[&tokens])?;
    run(&mut decoder, &one_by_one)?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..iters.max(1) {
        prefill.push(run(&mut decoder, &[&tokens])?);
        decode.push(run(&mut decoder, &one_by_one)?);
    }
    let (prefill, decode) = (median(prefill), median(decode));
    let rss = peak_rss_mib().map_or("?".to_string(), |m| format!("{m:.0}"));
    println!(
        "W5 llm: {} ({}), {} threads, {iters} repetitions",
        path.file_name().and_then(|n| n.to_str()).unwrap_or(GGUF),
        match storage {
            Storage::Blocks => "weights quantised",
            Storage::F32 => "weights as f32",
        },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| | smelt | llama.cpp | smelt ÷ llama.cpp |");
    println!("|---|---:|---:|---:|");
    let peer = peers
        .map(Path::to_path_buf)
        .or_else(bench_peers::default_results)
        .and_then(|dir| llama_cpp_record(&dir));
    let cell = |ours: f64, key: &str| match peer.as_ref().and_then(|(r, _)| r[key].as_f64()) {
        Some(theirs) => format!("{theirs:.1} | {:.2}", ours / theirs),
        None => "— | —".to_string(),
    };
    println!(
        "| prefill tok/s (128-token prompt) | {prefill:.1} | {} |",
        cell(prefill, "prefill_tok_s")
    );
    println!(
        "| decode tok/s (128 tokens, batch 1) | {decode:.1} | {} |",
        cell(decode, "decode_tok_s")
    );
    println!(
        "| peak RSS MiB (weights held: {weights_mib:.0} MiB) | {rss} | {} | |",
        peer.as_ref()
            .and_then(|(r, _)| r["peak_rss_mib"].as_f64())
            .map_or("—".into(), |m| format!("{m:.0}"))
    );
    match &peer {
        Some((_, age)) => println!("llama.cpp's record: {age}; compare only within one sitting."),
        None => println!("No llama.cpp W5 record: bash ../shared/peers/setup.sh llamacpp && bash ../shared/peers/run_one.sh llamacpp llm, in the same sitting."),
    }
    Ok(())
}

/// llama.cpp's latest W5 record and when it was measured.
fn llama_cpp_record(dir: &Path) -> Option<(serde_json::Value, String)> {
    let record = bench_peers::latest_where(dir, "llamacpp", |r| r["workload"] == "llm")?;
    let age = bench_peers::record_age(&record, dir, "llamacpp");
    Some((record, age))
}
