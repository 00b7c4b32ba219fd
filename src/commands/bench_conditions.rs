//! The conditions of a `smelt bench` sitting, measured as the peers' harness measures
//! them (../shared/peers/common/lib.sh and harness.py): the CPU, a wait for a quiet
//! machine before each workload, and the share of the machine other processes used
//! while the steps were timed. Linux only (`/proc`); elsewhere the figures are absent.

use std::time::{Duration, Instant};

/// Busy and total ticks of the whole machine, and this process's ticks (all threads).
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuSample {
    /// Now, or `None` without `/proc`.
    pub fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
        let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let total = busy + field(3) + field(4);
        // utime and stime are fields 14 and 15 of /proc/self/stat, counted after the
        // command name (which may hold spaces, so split after its closing parenthesis).
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after_name = own_stat.rsplit_once(')')?.1;
        let f: Vec<u64> = after_name
            .split_whitespace()
            .map(|t| t.parse().unwrap_or(0))
            .collect();
        let own = f.get(11)? + f.get(12)?;
        Some(CpuSample { busy, total, own })
    }

    /// The share of the whole machine (all cores = 1) that other processes used since
    /// `earlier`.
    pub fn foreign_since(&self, earlier: &CpuSample) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let own = self.own.saturating_sub(earlier.own) as f64;
        ((busy - own) / total).max(0.0)
    }

    /// The share of the whole machine busy since `earlier`.
    fn busy_since(&self, earlier: &CpuSample) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        self.busy.saturating_sub(earlier.busy) as f64 / total
    }
}

/// Below this share of the machine busy, it counts as quiet (the peers' threshold).
pub const QUIET_BELOW: f64 = 0.10;

/// How the wait for a quiet machine ended.
#[derive(Clone, Copy, Debug)]
pub enum Quiet {
    /// Quiet after waiting this long.
    After(Duration),
    /// Still this busy when the wait ran out; measured anyway.
    Busy(f64),
    /// Not waited for (`--quiet-max 0`, or no `/proc`).
    Unchecked,
}

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quiet::After(d) => write!(f, "quiet after {:.0} s", d.as_secs_f64()),
            Quiet::Busy(b) => write!(f, "still {:.0}% busy", b * 100.0),
            Quiet::Unchecked => write!(f, "not checked"),
        }
    }
}

/// Waits, up to `max`, until less than [`QUIET_BELOW`] of the machine is busy over one
/// second, as the peers do before each bench.
pub fn wait_quiet(max: Duration) -> Quiet {
    if max.is_zero() {
        return Quiet::Unchecked;
    }
    let start = Instant::now();
    loop {
        let Some(a) = CpuSample::now() else {
            return Quiet::Unchecked;
        };
        std::thread::sleep(Duration::from_secs(1));
        let Some(b) = CpuSample::now() else {
            return Quiet::Unchecked;
        };
        let busy = b.busy_since(&a);
        if busy < QUIET_BELOW {
            return Quiet::After(start.elapsed());
        }
        if start.elapsed() >= max {
            eprintln!(
                "warning: the machine is still {:.0}% busy after {} s; measuring anyway",
                busy * 100.0,
                max.as_secs()
            );
            return Quiet::Busy(busy);
        }
        eprintln!(
            "waiting: other processes use {:.0}% of the machine",
            busy * 100.0
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The CPU's model name and logical core count, from `/proc/cpuinfo`.
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown CPU");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or("");
    let widest = if flags.contains(" avx512f") {
        "AVX-512"
    } else if flags.contains(" avx2") {
        "AVX2"
    } else {
        "no AVX2"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} logical cores, {widest}")
}
