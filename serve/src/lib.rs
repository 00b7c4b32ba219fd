//! `smelt serve`: an OpenAI-compatible HTTP server (axum on tokio) over the decode
//! engine of `smelt-runtime`.
//!
//! - [`routes`]: `POST /v1/chat/completions`, `POST /v1/completions` (whole, or
//!   streamed as server-sent events), `GET /v1/models`, `GET /health`, `GET /metrics`;
//! - [`scheduler`]: continuous batching on a thread of its own that owns the engine;
//! - [`api`] and [`error`]: request bodies, their checks, and OpenAI-style errors;
//! - [`text`]: tokens to text, with stop strings; [`metrics`]: Prometheus counters.
//!
//! The server depends on the runtime, never the reverse: the engine generates without
//! it (`smelt generate`).

pub mod api;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod scheduler;
pub mod text;

pub use scheduler::Limits;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use smelt_frontend::llm::{ChatTemplate, Tokenizer};
use smelt_runtime::decode::Engine;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The model a server serves.
pub struct Served {
    /// Its id in requests and in `/v1/models`.
    pub name: String,
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Tokens that end a sequence.
    pub stop_tokens: Vec<u32>,
}

/// How the server runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub address: SocketAddr,
    pub limits: Limits,
    /// Requests must carry `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Stop by itself after this long, as on SIGTERM (bounded test servers).
    pub exit_after: Option<Duration>,
    /// After SIGTERM, how long running streams may take to finish.
    pub grace: Duration,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Serves `model` until SIGTERM or SIGINT (or `exit_after`), then stops accepting,
/// lets running streams finish within the grace period, and returns.
pub fn serve(model: Served, config: Config) -> Result<(), ServeError> {
    let metrics = Arc::new(metrics::Metrics::default());
    let context = model.engine.context();
    // A request's tokens must not depend on what it is batched with.
    let mut engine = model.engine;
    engine.set_batch_invariant(true);
    let (scheduler, worker) = scheduler::Scheduler::spawn(
        engine,
        config.limits.clone(),
        model.stop_tokens,
        metrics.clone(),
    );
    let app = Arc::new(routes::App {
        scheduler,
        tokenizer: model.tokenizer,
        chat_template: model.chat_template,
        model: model.name,
        api_key: config.api_key.clone(),
        context,
        metrics,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ids: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(config.max_body))
        .with_state(app);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|source| ServeError::Bind {
                address: config.address,
                source,
            })?;
        let bound = listener.local_addr().map_err(ServeError::Serve)?;
        eprintln!("smelt serve: listening on http://{bound}");
        let (stopping, mut stopped) = tokio::sync::watch::channel(false);
        let exit_after = config.exit_after;
        tokio::spawn(async move {
            let reason = shutdown_signal(exit_after).await;
            eprintln!("smelt serve: {reason}; finishing running requests");
            let _ = stopping.send(true);
        });
        let mut graceful = stopped.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|&s| s).await;
        });
        let grace = config.grace;
        tokio::select! {
            done = server => done.map_err(ServeError::Serve)?,
            _ = async {
                let _ = stopped.wait_for(|&s| s).await;
                tokio::time::sleep(grace).await;
            } => eprintln!("smelt serve: {} s grace period over; closing the remaining streams", grace.as_secs()),
        }
        Ok::<(), ServeError>(())
    })?;
    // Dropping the router's state (with the last scheduler handle) lets the scheduler
    // thread end; it is not waited for past the grace period.
    drop(runtime);
    if worker.is_finished() {
        let _ = worker.join();
    }
    eprintln!("smelt serve: stopped");
    Ok(())
}

/// Waits for SIGTERM, SIGINT or the deadline, and says which came.
async fn shutdown_signal(exit_after: Option<Duration>) -> &'static str {
    let deadline = async {
        match exit_after {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = terminate => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = deadline => "--exit-after reached",
    }
}
