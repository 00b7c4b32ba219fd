//! The request bodies of the OpenAI API as this server reads them, and their checks.
//! Fields the server does not use (`user`, and any other) are ignored, as OpenAI's
//! own clients send extras.

use crate::error::ApiError;
use serde::Deserialize;

/// One string, or a list of them (`stop`, and a completion's `prompt`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and length fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub model: String,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub min_p: Option<f64>,
    pub seed: Option<u64>,
    pub stop: Option<OneOrMany>,
    pub n: Option<u64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub repeat_penalty: Option<f64>,
    /// llama.cpp's extension: generate past end-of-sequence tokens (benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

/// A chat message; `content` is text (or a list of text parts).
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub common: Common,
    pub prompt: OneOrMany,
    /// The number of most likely tokens to report with each token (0–20).
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
}

/// The most `top_logprobs` OpenAI allows.
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// The most choices one request may ask for.
pub const MAX_CHOICES: u64 = 16;
/// The most stop strings, as OpenAI allows.
pub const MAX_STOPS: usize = 4;

/// What a request asks for, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub max_tokens: Option<usize>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub min_p: f64,
    pub repeat_penalty: f64,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub n: usize,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
}

fn in_range(param: &str, value: f64, lo: f64, hi: f64) -> Result<f64, ApiError> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(
            param,
            format!("'{param}' must lie in [{lo}, {hi}], found {value}"),
        ))
    }
}

impl Common {
    /// The fields checked against OpenAI's ranges.
    pub fn check(self) -> Result<Checked, ApiError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(0), _) | (None, Some(0)) => {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "'max_tokens' must be at least 1",
                ))
            }
            (Some(n), _) | (None, Some(n)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            (None, None) => None,
        };
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("'n' must lie in [1, {MAX_CHOICES}], found {n}"),
            ));
        }
        let stop = self.stop.map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                format!("'stop' takes up to {MAX_STOPS} non-empty strings"),
            ));
        }
        let top_k = self.top_k.unwrap_or(0);
        Ok(Checked {
            max_tokens,
            temperature: in_range("temperature", self.temperature.unwrap_or(1.0), 0.0, 2.0)?,
            top_p: match in_range("top_p", self.top_p.unwrap_or(1.0), 0.0, 1.0)? {
                0.0 => return Err(ApiError::invalid("top_p", "'top_p' must be above 0")),
                p => p,
            },
            top_k: usize::try_from(top_k).unwrap_or(usize::MAX),
            min_p: in_range("min_p", self.min_p.unwrap_or(0.0), 0.0, 1.0)?,
            repeat_penalty: match self.repeat_penalty {
                None => 1.0,
                Some(p) => in_range("repeat_penalty", p, 1e-3, 100.0)?,
            },
            seed: self.seed,
            stop,
            n: n as usize,
            presence_penalty: in_range(
                "presence_penalty",
                self.presence_penalty.unwrap_or(0.0),
                -2.0,
                2.0,
            )?,
            frequency_penalty: in_range(
                "frequency_penalty",
                self.frequency_penalty.unwrap_or(0.0),
                -2.0,
                2.0,
            )?,
            ignore_eos: self.ignore_eos,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// How many top tokens to report per token: `None` for no log-probabilities.
pub fn check_top_logprobs(param: &str, asked: Option<u64>) -> Result<Option<usize>, ApiError> {
    match asked {
        Some(n) if n > MAX_TOP_LOGPROBS => Err(ApiError::invalid(
            param,
            format!("'{param}' must lie in [0, {MAX_TOP_LOGPROBS}], found {n}"),
        )),
        other => Ok(other.map(|n| n as usize)),
    }
}

impl ChatMessage {
    /// The message's text (text parts joined).
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    _ => Err(ApiError::invalid(
                        "messages",
                        format!("only text content is supported, found a '{}' part", p.kind),
                    )),
                })
                .collect(),
        }
    }
}
