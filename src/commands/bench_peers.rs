//! The peers' side of `smelt bench`: their latest records from
//! `$PEERS_HOME/results/*.jsonl` (written by ../shared/peers/run_one.sh and run_all.sh),
//! set beside smelt's numbers as ratios. The peers must be timed in the same sitting
//! for the ratio to mean anything, so the table says when each results file was written.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A peer's record to compare one workload with.
pub struct PeerCell {
    /// Which peer and variant, e.g. "JAX jit".
    pub label: &'static str,
    /// File stem under the results folder.
    pub file: &'static str,
    /// The record's `workload` and `variant`.
    pub workload: &'static str,
    pub variant: &'static str,
}

/// The peers' results folder: `$PEERS_HOME/results`, else the peers' default.
pub fn default_results() -> Option<PathBuf> {
    let results = peers_home()?.join("results");
    results.is_dir().then_some(results)
}

/// `$PEERS_HOME`, else `$XDG_CACHE_HOME/smelt-peers` or `~/.cache/smelt-peers`.
fn peers_home() -> Option<PathBuf> {
    std::env::var_os("PEERS_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("smelt-peers"))
        })
}

/// The last record of `cell` in `dir`.
pub fn latest(dir: &Path, cell: &PeerCell) -> Option<Value> {
    latest_where(dir, cell.file, |r| {
        r["workload"] == cell.workload && r["variant"] == cell.variant
    })
}

/// The last record in `dir/FILE.jsonl` that `wanted` accepts.
pub fn latest_where(dir: &Path, file: &str, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{file}.jsonl"))).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|r| wanted(r))
}

/// When `record` (from `dir/FILE.jsonl`) was measured: its own time where it carries
/// one; otherwise only when its file was last written, which a later record of another
/// workload also moves, so the table says which it is.
pub fn record_age(record: &Value, dir: &Path, file: &str) -> String {
    for key in ["time", "timestamp", "ts", "date", "utc"] {
        match &record[key] {
            Value::String(t) => return format!("at {t}"),
            Value::Number(n) => {
                if let Some(unix) = n.as_f64() {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    return format!("{:.0} min ago", (now - unix).max(0.0) / 60.0);
                }
            }
            _ => {}
        }
    }
    let written = std::fs::metadata(dir.join(format!("{file}.jsonl")))
        .and_then(|m| m.modified())
        .ok();
    match written {
        Some(t) => format!(
            "no time in the record; its file was written {:.0} min ago",
            minutes_ago(t)
        ),
        None => "unknown".to_string(),
    }
}

/// The peers' fixed data (`$PEERS_HOME/data`, default `~/.cache/smelt-peers/data`),
/// when `gen_data.py` has written it.
pub fn peers_data() -> Option<PathBuf> {
    let data = peers_home()?.join("data");
    data.join("reference.json").is_file().then_some(data)
}

/// Minutes since `t`, for "written N min ago".
pub fn minutes_ago(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0.0, |d| d.as_secs_f64() / 60.0)
}
