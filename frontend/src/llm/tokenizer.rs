//! Text to token ids and back, through the `tokenizers` crate: read from a Hugging Face
//! `tokenizer.json`, or built from a GGUF file's `tokenizer.ggml.*` metadata.

use super::LlmError;
use crate::gguf::{GgufFile, MetaValue};
use std::path::Path;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, DecoderWrapper, PreTokenizerWrapper};

/// GGUF token type of control tokens (`<|im_start|>`): matched whole, never split.
const CONTROL: u64 = 3;

/// A model's tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Reads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, LlmError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| LlmError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(Tokenizer { inner })
    }

    /// Builds the tokenizer a GGUF file describes. Byte-level BPE (`gpt2`) models
    /// are supported, with the pre-tokenizers of `gpt2`-style and SmolLM vocabularies.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, LlmError> {
        let text = |key: &str| file.meta(key).and_then(MetaValue::as_str);
        match text("tokenizer.ggml.model") {
            Some("gpt2") => {}
            Some(other) => {
                return Err(LlmError::Tokenizer(format!(
                    "GGUF tokenizer model '{other}' is not supported (byte-level BPE 'gpt2' is)"
                )))
            }
            None => return Err(LlmError::Tokenizer("the GGUF file has no tokenizer".into())),
        }
        let strings = |key: &str| -> Result<Vec<&str>, LlmError> {
            match file.meta(key) {
                Some(MetaValue::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().ok_or_else(|| {
                            LlmError::Tokenizer(format!("'{key}' holds a non-string"))
                        })
                    })
                    .collect(),
                _ => Err(LlmError::Tokenizer(format!(
                    "'{key}' is missing or not an array"
                ))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = strings("tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| LlmError::Tokenizer(format!("merge '{m}' is not two tokens")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let byte_level = ByteLevel::new(false, true, true);
        let pre: PreTokenizerWrapper = match text("tokenizer.ggml.pre").unwrap_or("default") {
            "default" | "gpt2" => byte_level.into(),
            // SmolLM splits every digit on its own before the GPT-2 pattern.
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            other => {
                return Err(LlmError::Tokenizer(format!(
                    "GGUF pre-tokenizer '{other}' is not supported (gpt2, default and smollm are)"
                )))
            }
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        if let Some(MetaValue::Array(types)) = file.meta("tokenizer.ggml.token_type") {
            let special: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(t, _)| t.as_u64() == Some(CONTROL))
                .map(|(_, tok)| AddedToken::from(tok.to_string(), true))
                .collect();
            inner
                .add_special_tokens(special)
                .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        }
        Ok(Tokenizer { inner })
    }

    /// The ids of `text`; special tokens written in it (`<|im_start|>`) are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// The token written `text`, if the vocabulary has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// The text of token `id` as stored in the vocabulary.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Decodes ids one at a time into text that is safe to print: bytes of a character
/// split across tokens wait until the character is whole. Each token decodes only the
/// ids since the last text given out (and the one before, for context), so a long
/// stream costs the same per token as a short one.
pub struct TextStream {
    ids: Vec<u32>,
    /// Ids before this one are behind us; `ids[prefix..read]` decode to text already
    /// given out, which is decoded again so the next token joins it as it would in
    /// the whole sequence.
    prefix: usize,
    read: usize,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> TextStream {
        TextStream {
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds `id` and returns the text that became complete.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, LlmError> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let text = tokenizer.decode(&self.ids[self.prefix..])?;
        if text.len() <= before.len() || text.ends_with('\u{fffd}') || !text.starts_with(&before) {
            return Ok(String::new());
        }
        let new = text[before.len()..].to_string();
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(new)
    }
}

impl Default for TextStream {
    fn default() -> Self {
        TextStream::new()
    }
}

/// The length of the longest end of `text` that is the start of a stop string: text a
/// stream holds back until it is known whether a stop string follows.
pub fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    // Only ends shorter than the longest stop string can start one.
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    (1..=text.len().min(longest.saturating_sub(1)))
        .rev()
        .filter(|&n| text.is_char_boundary(text.len() - n))
        .find(|&n| {
            stops
                .iter()
                .any(|s| s.len() > n && s.starts_with(&text[text.len() - n..]))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::stop_prefix_len;

    #[test]
    fn only_a_possible_start_of_a_stop_string_is_held() {
        let stops = ["\nUser:".to_string()];
        assert_eq!(stop_prefix_len("Paris.\nUs", &stops), 3);
        assert_eq!(stop_prefix_len("Paris.", &stops), 0);
        assert_eq!(stop_prefix_len("é", &stops), 0);
    }
}
