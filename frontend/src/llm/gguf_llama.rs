//! A Llama-family GGUF file as a [`Pretrained`] model.
//!
//! llama.cpp's converter stores matrices `[out, in]` and reorders the rows of each
//! query and key head so that RoPE rotates adjacent pairs `(2i, 2i+1)`; the model
//! language's `rope` rotates halves (`i` with `i + D/2`), as Hugging Face's Llama
//! does. Loading transposes every matrix and puts those rows back in the halves order.

use super::chat::ChatTemplate;
use super::tokenizer::Tokenizer;
use super::{
    transposed, BlockBytes, BlockLayout, Blocks, LlamaShape, LlmError, Pretrained, Storage, Weight,
};
use crate::gguf::{GgufFile, MetaValue, TensorInfo};
use std::path::Path;

/// Architectures whose GGUF tensors follow llama.cpp's `llama` layout.
const LLAMA_LIKE: [&str; 2] = ["llama", "mistral"];

pub(super) fn open(path: &Path, storage: Storage) -> Result<Pretrained, LlmError> {
    let file = GgufFile::open(path)?;
    let arch = string(&file, "general.architecture")?.to_string();
    if !LLAMA_LIKE.contains(&arch.as_str()) {
        return Err(LlmError::Architecture(arch));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let embedding = file
        .tensor("token_embd.weight")
        .ok_or_else(|| LlmError::Invalid("no tensor 'token_embd.weight'".into()))?;
    let shape = LlamaShape {
        vocab: embedding.shape[0] as usize,
        dim: count(&file, &key("embedding_length"))?,
        heads: count(&file, &key("attention.head_count"))?,
        kv_heads: match file.meta(&key("attention.head_count_kv")) {
            Some(_) => count(&file, &key("attention.head_count_kv"))?,
            None => count(&file, &key("attention.head_count"))?,
        },
        hidden: count(&file, &key("feed_forward_length"))?,
        layers: count(&file, &key("block_count"))?,
        eps: number(&file, &key("attention.layer_norm_rms_epsilon"))?,
        rope_base: match file.meta(&key("rope.freq_base")) {
            Some(_) => number(&file, &key("rope.freq_base"))?,
            None => 10000.0,
        },
    };
    let configs = shape.configs()?;
    let weights = weights(&file, &shape, storage)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let chat_template = match file.meta("tokenizer.chat_template") {
        Some(MetaValue::Str(t)) => {
            let text = |key: &str| {
                let id = file.meta(key).and_then(MetaValue::as_u64);
                id.and_then(|id| tokenizer.token(id as u32))
                    .unwrap_or_default()
            };
            let (bos, eos) = (
                text("tokenizer.ggml.bos_token_id"),
                text("tokenizer.ggml.eos_token_id"),
            );
            Some(ChatTemplate::new(t, bos, eos)?)
        }
        _ => None,
    };
    let context = match file.meta(&key("context_length")) {
        Some(_) => count(&file, &key("context_length"))?,
        None => 2048,
    };
    let stop_tokens = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .iter()
        .filter_map(|k| file.meta(k).and_then(MetaValue::as_u64))
        .map(|id| id as u32)
        .collect();
    Ok(Pretrained {
        path: path.display().to_string(),
        architecture: arch,
        configs,
        weights,
        tokenizer,
        chat_template,
        stop_tokens,
        context,
    })
}

/// Every parameter of `examples/llama.smelt`, from the file's tensors.
fn weights(file: &GgufFile, s: &LlamaShape, storage: Storage) -> Result<Vec<Weight>, LlmError> {
    let head_dim = s.dim / s.heads;
    let vector = |name: String, theirs: &str, len: usize| -> Result<Weight, LlmError> {
        Ok(Weight {
            name,
            shape: vec![len],
            data: tensor(file, theirs, &[len])?,
            blocks: None,
        })
    };
    // A matrix stored `[rows, cols]` becomes the parameter `[cols, rows]`; query and key
    // rows go back to RoPE-halves order for `rope_heads` heads.
    let matrix = |name: String,
                  theirs: &str,
                  rows: usize,
                  cols: usize,
                  rope_heads: Option<usize>|
     -> Result<Weight, LlmError> {
        let info = checked(file, theirs, &[rows, cols])?;
        let shape = vec![cols, rows];
        if storage == Storage::Blocks && info.ggml_type.block_elems() > 1 {
            let bytes = match rope_heads {
                Some(heads) => {
                    let raw = file.raw(info);
                    BlockBytes::Owned(rope_rows_to_halves(
                        raw,
                        heads,
                        rows / heads,
                        raw.len() / rows,
                    ))
                }
                None => BlockBytes::Mapped(file.raw_shared(info)),
            };
            let blocks = Some(Blocks {
                ggml_type: info.ggml_type,
                layout: BlockLayout::Columns,
                bytes,
            });
            return Ok(Weight {
                name,
                shape,
                data: Vec::new(),
                blocks,
            });
        }
        let mut data = file.dequantize(info)?;
        if let Some(heads) = rope_heads {
            data = rope_rows_to_halves(&data, heads, rows / heads, cols);
        }
        Ok(Weight {
            name,
            shape,
            data: transposed(&data, rows, cols),
            blocks: None,
        })
    };
    // A lookup table `[rows, cols]`, kept as its stored rows when quantised.
    let table =
        |name: String, theirs: &str, rows: usize, cols: usize| -> Result<Weight, LlmError> {
            let info = checked(file, theirs, &[rows, cols])?;
            let shape = vec![rows, cols];
            if storage == Storage::Blocks && info.ggml_type.block_elems() > 1 {
                let blocks = Some(Blocks {
                    ggml_type: info.ggml_type,
                    layout: BlockLayout::Rows,
                    bytes: BlockBytes::Mapped(file.raw_shared(info)),
                });
                return Ok(Weight {
                    name,
                    shape,
                    data: Vec::new(),
                    blocks,
                });
            }
            Ok(Weight {
                name,
                shape,
                data: file.dequantize(info)?,
                blocks: None,
            })
        };
    // Tied models use the embedding table as the head.
    let head = if file.tensor("output.weight").is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let mut out = vec![
        matrix("head".into(), head, s.vocab, s.dim, None)?,
        table("tok_emb".into(), "token_embd.weight", s.vocab, s.dim)?,
        vector("norm".into(), "output_norm.weight", s.dim)?,
    ];
    for l in 0..s.layers {
        let blk = |n: &str| format!("blk.{l}.{n}.weight");
        let ours = |n: &str| format!("layers.{l}.{n}");
        out.push(vector(ours("attn_norm"), &blk("attn_norm"), s.dim)?);
        out.push(vector(ours("mlp_norm"), &blk("ffn_norm"), s.dim)?);
        let kv = s.kv_heads * head_dim;
        let matrices = [
            ("attn_q", "attn.wq", s.dim, s.dim, Some(s.heads)),
            ("attn_k", "attn.wk", kv, s.dim, Some(s.kv_heads)),
            ("attn_v", "attn.wv", kv, s.dim, None),
            ("attn_output", "attn.wo", s.dim, s.dim, None),
            ("ffn_gate", "mlp.w_gate", s.hidden, s.dim, None),
            ("ffn_up", "mlp.w_up", s.hidden, s.dim, None),
            ("ffn_down", "mlp.w_down", s.dim, s.hidden, None),
        ];
        for (theirs, mine, rows, cols, rope_heads) in matrices {
            out.push(matrix(ours(mine), &blk(theirs), rows, cols, rope_heads)?);
        }
    }
    Ok(out)
}

/// Rows of each head reordered from adjacent-pair RoPE order (`2i + s`) to halves
/// order (`s * D/2 + i`); a row is `row_len` items (values or block bytes).
fn rope_rows_to_halves<T: Copy + Default>(
    data: &[T],
    heads: usize,
    head_dim: usize,
    row_len: usize,
) -> Vec<T> {
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for i in 0..half {
            for s in 0..2 {
                let from = (h * head_dim + 2 * i + s) * row_len;
                let to = (h * head_dim + s * half + i) * row_len;
                out[to..to + row_len].copy_from_slice(&data[from..from + row_len]);
            }
        }
    }
    out
}

/// A tensor's info, checked to have `shape`.
fn checked<'f>(
    file: &'f GgufFile,
    name: &str,
    shape: &[usize],
) -> Result<&'f TensorInfo, LlmError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| LlmError::Invalid(format!("no tensor '{name}'")))?;
    let want: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
    if info.shape != want {
        return Err(LlmError::Invalid(format!(
            "tensor '{name}' has shape {:?}, expected {want:?}",
            info.shape
        )));
    }
    Ok(info)
}

/// A tensor's values, checked to have `shape`.
fn tensor(file: &GgufFile, name: &str, shape: &[usize]) -> Result<Vec<f32>, LlmError> {
    Ok(file.dequantize(checked(file, name, shape)?)?)
}

fn string<'f>(file: &'f GgufFile, key: &str) -> Result<&'f str, LlmError> {
    file.meta(key)
        .and_then(MetaValue::as_str)
        .ok_or_else(|| LlmError::Invalid(format!("metadata '{key}' is missing or not a string")))
}

fn count(file: &GgufFile, key: &str) -> Result<usize, LlmError> {
    file.meta(key)
        .and_then(MetaValue::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| LlmError::Invalid(format!("metadata '{key}' is missing or not a count")))
}

fn number(file: &GgufFile, key: &str) -> Result<f64, LlmError> {
    file.meta(key)
        .and_then(MetaValue::as_f64)
        .ok_or_else(|| LlmError::Invalid(format!("metadata '{key}' is missing or not a number")))
}
