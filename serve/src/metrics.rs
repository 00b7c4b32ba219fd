//! What `GET /metrics` reports, in Prometheus's text format: counters, gauges and
//! latency histograms, updated by the handlers and the scheduler.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Bucket bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of seconds.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let mut h = self.inner.lock().expect("no panics while held");
        if h.0.is_empty() {
            h.0 = vec![0; BUCKETS.len()];
        }
        for (count, &bound) in h.0.iter_mut().zip(&BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.1 += seconds;
        h.2 += 1;
    }

    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.inner.lock().expect("no panics while held").2
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let h = self.inner.lock().expect("no panics while held");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let count = h.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.1, h.2);
    }
}

/// The server's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub prompt_tokens_cached: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub queued: AtomicU64,
    pub running: AtomicU64,
    pub batch_size: AtomicU64,
    pub decode_steps: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_reserved: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub kv_cache_bytes: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP smelt_{name} {help}\n# TYPE smelt_{name} {kind}\nsmelt_{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        metric(
            "requests_total",
            "counter",
            "Completion requests received.",
            &self.requests,
        );
        metric(
            "requests_failed_total",
            "counter",
            "Requests answered with an error.",
            &self.requests_failed,
        );
        metric(
            "requests_rejected_total",
            "counter",
            "Requests refused because the queue was full (HTTP 429).",
            &self.requests_rejected,
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens computed (not reused from the cache).",
            &self.prompt_tokens,
        );
        metric(
            "prompt_tokens_cached_total",
            "counter",
            "Prompt tokens whose keys and values were reused from the cache.",
            &self.prompt_tokens_cached,
        );
        metric(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            &self.generated_tokens,
        );
        metric(
            "queue_length",
            "gauge",
            "Requests waiting for a place in the batch.",
            &self.queued,
        );
        metric(
            "running_sequences",
            "gauge",
            "Sequences being prefilled or decoded.",
            &self.running,
        );
        metric(
            "batch_size",
            "gauge",
            "Sequences in the last decode step.",
            &self.batch_size,
        );
        metric(
            "decode_steps_total",
            "counter",
            "Batched decode steps run.",
            &self.decode_steps,
        );
        metric(
            "kv_cache_blocks_used",
            "gauge",
            "KV cache blocks holding running sequences' positions.",
            &self.kv_blocks_used,
        );
        metric(
            "kv_cache_blocks_reserved",
            "gauge",
            "KV cache blocks reserved by running requests (prompt and max_tokens).",
            &self.kv_blocks_reserved,
        );
        metric(
            "kv_cache_blocks_total",
            "gauge",
            "KV cache blocks in the budget (--ctx).",
            &self.kv_blocks_total,
        );
        metric(
            "kv_cache_bytes",
            "gauge",
            "Bytes of the KV cache pool allocated (it grows up to --ctx positions).",
            &self.kv_cache_bytes,
        );
        self.time_to_first_token.render(
            &mut out,
            "smelt_time_to_first_token_seconds",
            "From a request's arrival to its first generated token.",
        );
        self.inter_token_latency.render(
            &mut out,
            "smelt_inter_token_latency_seconds",
            "Between consecutive tokens of a sequence.",
        );
        out
    }
}

/// Adds to a counter or gauge.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge.
pub fn set(gauge: &AtomicU64, n: u64) {
    gauge.store(n, Ordering::Relaxed);
}
