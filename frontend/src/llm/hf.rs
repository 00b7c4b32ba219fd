//! A Hugging Face model directory as a [`Pretrained`] model: `config.json`, the
//! weights in `model.safetensors` or shards listed by `model.safetensors.index.json`,
//! `tokenizer.json`, and `tokenizer_config.json` for the chat template.

use super::chat::ChatTemplate;
use super::tokenizer::Tokenizer;
use super::{transposed, LlamaShape, LlmError, Pretrained, Weight};
use crate::input;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// `model_type`s whose weights follow `LlamaForCausalLM`'s names.
const LLAMA_LIKE: [&str; 2] = ["llama", "mistral"];

pub(super) fn open(dir: &Path) -> Result<Pretrained, LlmError> {
    let config = json(&dir.join("config.json"))?;
    let arch = config["model_type"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    if !LLAMA_LIKE.contains(&arch.as_str()) {
        return Err(LlmError::Architecture(arch));
    }
    let count = |key: &str| -> Result<usize, LlmError> {
        config[key].as_u64().map(|n| n as usize).ok_or_else(|| {
            LlmError::Invalid(format!("config.json: '{key}' is missing or not a count"))
        })
    };
    let heads = count("num_attention_heads")?;
    let shape = LlamaShape {
        vocab: count("vocab_size")?,
        dim: count("hidden_size")?,
        heads,
        kv_heads: config["num_key_value_heads"]
            .as_u64()
            .map_or(heads, |n| n as usize),
        hidden: count("intermediate_size")?,
        layers: count("num_hidden_layers")?,
        eps: config["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        rope_base: config["rope_theta"].as_f64().unwrap_or(10000.0),
    };
    let configs = shape.configs()?;
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let mut tensors = read_weights(dir)?;
    let weights = weights(&mut tensors, &shape, tied)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let settings_path = dir.join("tokenizer_config.json");
    let settings = if settings_path.is_file() {
        json(&settings_path)?
    } else {
        Value::Null
    };
    let token_text = |key: &str| match &settings[key] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    };
    let chat_template = match settings["chat_template"].as_str() {
        Some(t) => Some(ChatTemplate::new(
            t,
            token_text("bos_token"),
            token_text("eos_token"),
        )?),
        None => None,
    };
    let mut stop_tokens: BTreeSet<u32> = BTreeSet::new();
    match &config["eos_token_id"] {
        Value::Number(n) => stop_tokens.extend(n.as_u64().map(|n| n as u32)),
        Value::Array(ids) => {
            stop_tokens.extend(ids.iter().filter_map(Value::as_u64).map(|n| n as u32))
        }
        _ => {}
    }
    stop_tokens.extend(tokenizer.token_id(&token_text("eos_token")));
    Ok(Pretrained {
        path: dir.display().to_string(),
        architecture: arch,
        configs,
        weights,
        tokenizer,
        chat_template,
        stop_tokens: stop_tokens.into_iter().collect(),
        context: config["max_position_embeddings"]
            .as_u64()
            .map_or(2048, |n| n as usize),
    })
}

fn json(path: &Path) -> Result<Value, LlmError> {
    let fail = |why: String| LlmError::File {
        path: path.display().to_string(),
        why,
    };
    let text = input::read_limited_text(path, input::JSON_LIMIT, "JSON file")
        .map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// A checkpoint tensor: its shape and values as `f32`.
type Loaded = (Vec<usize>, Vec<f32>);

/// Every tensor of the directory's safetensors files, by name.
fn read_weights(dir: &Path) -> Result<HashMap<String, Loaded>, LlmError> {
    let index = dir.join("model.safetensors.index.json");
    let files: BTreeSet<String> = if index.is_file() {
        let map = json(&index)?;
        let map = map["weight_map"]
            .as_object()
            .ok_or_else(|| LlmError::File {
                path: index.display().to_string(),
                why: "no 'weight_map' object".into(),
            })?;
        map.values()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    } else {
        ["model.safetensors".to_string()].into()
    };
    let mut out = HashMap::new();
    for file in files {
        if file.contains('/') || file.contains('\\') {
            return Err(LlmError::Invalid(format!(
                "shard name '{file}' is not a file name"
            )));
        }
        let path = dir.join(&file);
        let fail = |why: String| LlmError::File {
            path: path.display().to_string(),
            why,
        };
        // Mapped, not read: a shard is converted to f32 tensor by tensor.
        let file = std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
        // SAFETY: read-only, and smelt does not write model files while reading them
        // (as for GGUF files); another process truncating it is outside what it guards.
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| fail(e.to_string()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| fail(e.to_string()))?;
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(fail(format!(
                        "tensor '{name}' has dtype {other:?} (F32, F16 and BF16 are read)"
                    )))
                }
            };
            out.insert(name, (view.shape().to_vec(), values));
        }
    }
    Ok(out)
}

/// The model's parameters from `LlamaForCausalLM` tensor names.
fn weights(
    t: &mut HashMap<String, Loaded>,
    s: &LlamaShape,
    tied: bool,
) -> Result<Vec<Weight>, LlmError> {
    let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, LlmError> {
        let (have, data) = t
            .remove(name)
            .ok_or_else(|| LlmError::Invalid(format!("no tensor '{name}'")))?;
        if have != shape {
            return Err(LlmError::Invalid(format!(
                "tensor '{name}' has shape {have:?}, expected {shape:?}"
            )));
        }
        Ok(data)
    };
    let embedding = take("model.embed_tokens.weight", &[s.vocab, s.dim])?;
    let head = if tied {
        embedding.clone()
    } else {
        take("lm_head.weight", &[s.vocab, s.dim])?
    };
    let mut out = vec![
        Weight {
            name: "head".into(),
            shape: vec![s.dim, s.vocab],
            data: transposed(&head, s.vocab, s.dim),
            blocks: None,
        },
        Weight {
            name: "tok_emb".into(),
            shape: vec![s.vocab, s.dim],
            data: embedding,
            blocks: None,
        },
        Weight {
            name: "norm".into(),
            shape: vec![s.dim],
            data: take("model.norm.weight", &[s.dim])?,
            blocks: None,
        },
    ];
    let kv = s.kv_heads * (s.dim / s.heads);
    for l in 0..s.layers {
        let theirs = |n: &str| format!("model.layers.{l}.{n}.weight");
        let ours = |n: &str| format!("layers.{l}.{n}");
        for (from, to) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "mlp_norm"),
        ] {
            out.push(Weight {
                name: ours(to),
                shape: vec![s.dim],
                data: take(&theirs(from), &[s.dim])?,
                blocks: None,
            });
        }
        let matrices = [
            ("self_attn.q_proj", "attn.wq", s.dim, s.dim),
            ("self_attn.k_proj", "attn.wk", kv, s.dim),
            ("self_attn.v_proj", "attn.wv", kv, s.dim),
            ("self_attn.o_proj", "attn.wo", s.dim, s.dim),
            ("mlp.gate_proj", "mlp.w_gate", s.hidden, s.dim),
            ("mlp.up_proj", "mlp.w_up", s.hidden, s.dim),
            ("mlp.down_proj", "mlp.w_down", s.dim, s.hidden),
        ];
        for (from, to, rows, cols) in matrices {
            let data = take(&theirs(from), &[rows, cols])?;
            out.push(Weight {
                name: ours(to),
                shape: vec![cols, rows],
                data: transposed(&data, rows, cols),
                blocks: None,
            });
        }
    }
    Ok(out)
}
