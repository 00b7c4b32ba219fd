//! The HTTP routes: OpenAI's completions and chat completions (whole or streamed as
//! server-sent events), the model list, health and metrics.

use crate::api::{check_top_logprobs, ChatRequest, Checked, CompletionRequest};
use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::scheduler::{Event, Job, Logprobs, Scheduler};
use crate::text::ChoiceText;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use smelt_frontend::llm::{ChatTemplate, Message, Tokenizer};
use smelt_runtime::decode::sample::Sampling;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What every handler shares.
pub struct App {
    pub scheduler: Scheduler,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// The model's id in requests and `/v1/models`.
    pub model: String,
    pub api_key: Option<String>,
    /// The longest sequence (prompt and completion).
    pub context: usize,
    pub metrics: Arc<Metrics>,
    pub started: u64,
    pub ids: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl App {
    fn authorise(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if g.trim() == key => Ok(()),
            _ => Err(ApiError::unauthorized()),
        }
    }

    fn check_model(&self, asked: &str) -> Result<(), ApiError> {
        if asked == self.model {
            Ok(())
        } else {
            Err(ApiError::unknown_model(asked, &self.model))
        }
    }

    /// A fresh response id.
    fn id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.started)
    }

    fn token_text(&self, token: u32) -> String {
        self.tokenizer.decode(&[token]).unwrap_or_default()
    }
}

impl App {
    /// A completion request: the key checked, then the body read (an OpenAI-style
    /// error if it is too large, unreadable, or not JSON of the expected shape), then
    /// its model checked.
    fn read<T: serde::de::DeserializeOwned>(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
        common: fn(&T) -> &crate::api::Common,
    ) -> Result<T, ApiError> {
        self.authorise(headers)?;
        let body = body.map_err(|r| ApiError {
            status: r.status(),
            ..ApiError::body(r.body_text())
        })?;
        let req: T = serde_json::from_slice(&body)
            .map_err(|e| ApiError::body(format!("invalid request body: {e}")))?;
        self.check_model(&common(&req).model)?;
        Ok(req)
    }
}

/// Which endpoint a response is for.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// A request ready for the scheduler.
struct Prepared {
    kind: Kind,
    prompt: Vec<u32>,
    /// Text put before the completion (`echo`).
    echo: Option<String>,
    checked: Checked,
    top_logprobs: Option<usize>,
}

pub async fn chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let req: ChatRequest = app.read(&headers, body, |r: &ChatRequest| &r.common)?;
        let template = app.chat_template.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "messages",
                "the model has no chat template; use /v1/completions",
            )
        })?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid("messages", "'messages' is empty"));
        }
        let messages = req
            .messages
            .iter()
            .map(|m| {
                Ok(Message {
                    role: m.role.clone(),
                    content: m.text()?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let text = template
            .render(&messages)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let top_logprobs = match (req.logprobs, req.top_logprobs) {
            (false, Some(_)) => {
                return Err(ApiError::invalid(
                    "top_logprobs",
                    "'top_logprobs' needs 'logprobs': true",
                ))
            }
            (false, None) => None,
            (true, n) => Some(check_top_logprobs("top_logprobs", n)?.unwrap_or(0)),
        };
        Ok(Prepared {
            kind: Kind::Chat,
            prompt: app.encode(&text)?,
            echo: None,
            checked: req.common.check()?,
            top_logprobs,
        })
    })();
    respond(app, prepared).await
}

pub async fn completions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let req = app.read(&headers, body, |r: &CompletionRequest| &r.common)?;
        let mut prompts = req.prompt.into_vec();
        if prompts.len() != 1 {
            return Err(ApiError::invalid(
                "prompt",
                "'prompt' must be one string (a list of one is also accepted)",
            ));
        }
        let text = prompts.remove(0);
        Ok(Prepared {
            kind: Kind::Completion,
            prompt: app.encode(&text)?,
            echo: req.echo.then_some(text),
            checked: req.common.check()?,
            top_logprobs: check_top_logprobs("logprobs", req.logprobs)?,
        })
    })();
    respond(app, prepared).await
}

impl App {
    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        let ids = self
            .tokenizer
            .encode(text)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        Ok(ids)
    }
}

/// Checks the lengths, queues the request and answers it.
async fn respond(app: Arc<App>, prepared: Result<Prepared, ApiError>) -> Response {
    metrics::add(&app.metrics.requests, 1);
    let answer = match prepared.and_then(|p| submit(&app, p)) {
        Ok((p, events, stop)) if p.checked.stream => Ok(stream(app.clone(), p, events, stop)),
        Ok((p, events, stop)) => whole(&app, p, events, stop).await,
        Err(e) => Err(e),
    };
    answer.unwrap_or_else(|e| {
        let counter = if e.status == StatusCode::TOO_MANY_REQUESTS {
            &app.metrics.requests_rejected
        } else {
            &app.metrics.requests_failed
        };
        metrics::add(counter, 1);
        e.into_response()
    })
}

type Submitted = (
    Prepared,
    mpsc::UnboundedReceiver<Event>,
    Arc<Vec<AtomicBool>>,
);

fn submit(app: &App, p: Prepared) -> Result<Submitted, ApiError> {
    let prompt = p.prompt.len();
    if prompt >= app.context {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {prompt} tokens; this server's context is {} tokens",
                app.context
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let room = app.context - prompt;
    let max_tokens = match p.checked.max_tokens {
        Some(n) if n > room => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                "the prompt ({prompt} tokens) and max_tokens ({n}) exceed the context of {} tokens",
                app.context
            ),
            )
            .with_code("context_length_exceeded"))
        }
        Some(n) => n,
        None => room,
    };
    let limits = app.scheduler.limits();
    let block = app.scheduler.block_positions();
    let blocks_wanted = p.checked.n * (prompt + max_tokens).div_ceil(block);
    if blocks_wanted > limits.cache_tokens.div_ceil(block) || p.checked.n > limits.parallel {
        return Err(ApiError::invalid(
            "n",
            format!(
                "{} choices of up to {} tokens need more KV cache ({} positions) or places ({}) than the server has",
                p.checked.n,
                prompt + max_tokens,
                limits.cache_tokens,
                limits.parallel
            ),
        ));
    }
    let seed = p.checked.seed.unwrap_or_else(random_seed);
    let choices = (0..p.checked.n as u64)
        .map(|i| Sampling {
            temperature: p.checked.temperature,
            top_k: p.checked.top_k,
            top_p: p.checked.top_p,
            min_p: p.checked.min_p,
            repetition_penalty: p.checked.repeat_penalty,
            seed: seed.wrapping_add(i),
        })
        .collect();
    let (events, receiver) = mpsc::unbounded_channel();
    let stop: Arc<Vec<AtomicBool>> =
        Arc::new((0..p.checked.n).map(|_| AtomicBool::new(false)).collect());
    app.scheduler.submit(Job {
        prompt: p.prompt.clone(),
        choices,
        presence_penalty: p.checked.presence_penalty,
        frequency_penalty: p.checked.frequency_penalty,
        max_tokens,
        top_logprobs: p.top_logprobs,
        ignore_eos: p.checked.ignore_eos,
        events,
        stop: stop.clone(),
        arrived: Instant::now(),
    })?;
    Ok((p, receiver, stop))
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Turns scheduler events into choice texts, ending choices at stop strings.
struct Assembler {
    choices: Vec<ChoiceText>,
    stop: Arc<Vec<AtomicBool>>,
    stops: Vec<String>,
}

/// What one event changed: the choice, its new text, its token's log-probabilities,
/// and whether it ended.
struct Delta {
    choice: usize,
    text: String,
    token: Option<(u32, Logprobs)>,
    finish: Option<&'static str>,
}

impl Assembler {
    fn apply(&mut self, tokenizer: &Tokenizer, event: Event) -> Result<Option<Delta>, ApiError> {
        match event {
            Event::Failed(e) => Err(ApiError::internal(e)),
            Event::Token {
                choice,
                token,
                logprobs,
            } => {
                let c = &mut self.choices[choice];
                if c.finish.is_some() {
                    return Ok(None);
                }
                let text = c.push(tokenizer, token, &self.stops);
                if c.finish.is_some() {
                    self.stop[choice].store(true, Ordering::SeqCst);
                }
                Ok(Some(Delta {
                    choice,
                    text,
                    token: logprobs.map(|l| (token, l)),
                    finish: c.finish,
                }))
            }
            Event::Done { choice, finish } => {
                let c = &mut self.choices[choice];
                if c.finish.is_some() {
                    return Ok(None);
                }
                let text = c.end(finish.as_str());
                Ok(Some(Delta {
                    choice,
                    text,
                    token: None,
                    finish: c.finish,
                }))
            }
        }
    }

    fn finished(&self) -> bool {
        self.choices.iter().all(|c| c.finish.is_some())
    }

    fn usage(&self, prompt: usize) -> Value {
        let completion: usize = self.choices.iter().map(|c| c.tokens).sum();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }
}

fn assembler(p: &Prepared, stop: Arc<Vec<AtomicBool>>) -> Assembler {
    Assembler {
        choices: (0..p.checked.n).map(|_| ChoiceText::default()).collect(),
        stop,
        stops: p.checked.stop.clone(),
    }
}

/// Chat-style log-probabilities of one token.
fn chat_logprob(app: &App, token: u32, l: &Logprobs) -> Value {
    let entry = |t: u32, lp: f32| {
        let text = app.token_text(t);
        json!({"token": text, "logprob": lp, "bytes": text.as_bytes()})
    };
    let mut e = entry(token, l.logprob);
    e["top_logprobs"] = l.top.iter().map(|&(t, lp)| entry(t, lp)).collect();
    e
}

/// Completion-style (legacy) log-probabilities of some tokens, `text_offset` counted
/// from `offset`.
fn completion_logprobs(app: &App, tokens: &[(u32, Logprobs)], mut offset: usize) -> Value {
    let mut out =
        json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []});
    for (t, l) in tokens {
        let text = app.token_text(*t);
        let top: serde_json::Map<String, Value> = l
            .top
            .iter()
            .map(|&(t, lp)| (app.token_text(t), json!(lp)))
            .collect();
        for (field, value) in [
            ("tokens", json!(text)),
            ("token_logprobs", json!(l.logprob)),
            ("top_logprobs", Value::Object(top)),
            ("text_offset", json!(offset)),
        ] {
            out[field]
                .as_array_mut()
                .expect("made as arrays")
                .push(value);
        }
        offset += text.len();
    }
    out
}

/// Waits for every choice and answers with one JSON body.
async fn whole(
    app: &App,
    p: Prepared,
    mut events: mpsc::UnboundedReceiver<Event>,
    stop: Arc<Vec<AtomicBool>>,
) -> Result<Response, ApiError> {
    let mut a = assembler(&p, stop);
    let mut tokens: Vec<Vec<(u32, Logprobs)>> = vec![Vec::new(); p.checked.n];
    while !a.finished() {
        let event = events
            .recv()
            .await
            .ok_or_else(|| ApiError::unavailable("the scheduler stopped"))?;
        if let Some(d) = a.apply(&app.tokenizer, event)? {
            tokens[d.choice].extend(d.token);
        }
    }
    let echo = p.echo.clone().unwrap_or_default();
    let choices: Vec<Value> = a
        .choices
        .iter()
        .zip(&tokens)
        .enumerate()
        .map(|(i, (c, toks))| match p.kind {
            Kind::Chat => json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": p.top_logprobs.map(|_| json!({
                    "content": toks.iter().map(|(t, l)| chat_logprob(app, *t, l)).collect::<Vec<_>>()
                })),
                "finish_reason": c.finish,
            }),
            Kind::Completion => json!({
                "index": i,
                "text": format!("{echo}{}", c.text),
                "logprobs": p.top_logprobs.map(|_| completion_logprobs(app, toks, echo.len())),
                "finish_reason": c.finish,
            }),
        })
        .collect();
    let (prefix, object) = match p.kind {
        Kind::Chat => ("chatcmpl", "chat.completion"),
        Kind::Completion => ("cmpl", "text_completion"),
    };
    Ok(Json(json!({
        "id": app.id(prefix),
        "object": object,
        "created": unix_now(),
        "model": app.model,
        "choices": choices,
        "usage": a.usage(p.prompt.len()),
    }))
    .into_response())
}

/// Answers with server-sent events as the tokens come.
fn stream(
    app: Arc<App>,
    p: Prepared,
    mut events: mpsc::UnboundedReceiver<Event>,
    stop: Arc<Vec<AtomicBool>>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let (prefix, object) = match p.kind {
        Kind::Chat => ("chatcmpl", "chat.completion.chunk"),
        Kind::Completion => ("cmpl", "text_completion"),
    };
    let id = app.id(prefix);
    let created = unix_now();
    tokio::spawn(async move {
        let chunk = |choices: Value| json!({"id": id, "object": object, "created": created, "model": app.model, "choices": choices});
        let send = |v: Value| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(SseEvent::default().data(v.to_string())))
                    .await
                    .is_ok()
            }
        };
        let mut a = assembler(&p, stop);
        if p.kind == Kind::Chat {
            let first: Vec<Value> = (0..p.checked.n)
                .map(|i| json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}))
                .collect();
            if !send(chunk(json!(first))).await {
                return;
            }
        }
        let mut echo = p.echo.clone();
        while !a.finished() {
            // A closed sender means the scheduler stopped; a failed send, that the
            // client left (dropping `events` tells the scheduler).
            let Some(event) = events.recv().await else {
                let e = ApiError::unavailable("the scheduler stopped");
                let _ = send(e.body_json()).await;
                return;
            };
            let d = match a.apply(&app.tokenizer, event) {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(e) => {
                    let _ = send(e.body_json()).await;
                    return;
                }
            };
            let tokens: Vec<(u32, Logprobs)> = d.token.into_iter().collect();
            let choice = match p.kind {
                Kind::Chat => json!({
                    "index": d.choice,
                    "delta": if d.text.is_empty() && d.finish.is_some() { json!({}) } else { json!({"content": d.text}) },
                    "logprobs": p.top_logprobs.map(|_| json!({
                        "content": tokens.iter().map(|(t, l)| chat_logprob(&app, *t, l)).collect::<Vec<_>>()
                    })),
                    "finish_reason": d.finish,
                }),
                Kind::Completion => {
                    let text = format!("{}{}", echo.take().unwrap_or_default(), d.text);
                    json!({
                        "index": d.choice,
                        "text": text,
                        "logprobs": p.top_logprobs.map(|_| completion_logprobs(&app, &tokens, 0)),
                        "finish_reason": d.finish,
                    })
                }
            };
            if !send(chunk(json!([choice]))).await {
                return;
            }
        }
        if p.checked.include_usage {
            let mut last = chunk(json!([]));
            last["usage"] = a.usage(p.prompt.len());
            if !send(last).await {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = app.authorise(&headers) {
        return e.into_response();
    }
    Json(json!({
        "object": "list",
        "data": [{"id": app.model, "object": "model", "created": app.started, "owned_by": "smelt"}],
    }))
    .into_response()
}

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::no_route(StatusCode::NOT_FOUND, format!("no route {uri}")).into_response()
}
