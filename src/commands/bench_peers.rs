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
    let home = std::env::var_os("PEERS_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("smelt-peers"))
        })?;
    let results = home.join("results");
    results.is_dir().then_some(results)
}

/// The last record of `cell` in `dir`, and when its file was last written.
pub fn latest(dir: &Path, cell: &PeerCell) -> Option<(Value, SystemTime)> {
    let path = dir.join(format!("{}.jsonl", cell.file));
    let text = std::fs::read_to_string(&path).ok()?;
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|r| r["workload"] == cell.workload && r["variant"] == cell.variant)
        .map(|r| (r, written))
}

/// Minutes since `t`, for "written N min ago".
pub fn minutes_ago(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0.0, |d| d.as_secs_f64() / 60.0)
}
