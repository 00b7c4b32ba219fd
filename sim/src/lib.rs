//! A discrete-event simulator of pipeline-parallel training steps.
//!
//! Each rank runs its schedule's task list ([`smelt_compiler::pipeline_parallel::Plan`])
//! in order; a task (one pass, or DualPipe's overlapped forward-and-backward pair)
//! starts when its rank is free and what its passes depend on has finished, and takes
//! the time [`Costs`] gives it. Sends between stages are free here, and so is the
//! communication an overlapped pair hides; only data dependencies order the ranks. The
//! result is a [`Timeline`]: when every task ran. From it come the step time, and each
//! rank's *bubble*, the step time minus the time the rank computed (the quantity whose
//! closed forms DeepSeek-V3's report gives per schedule; `sim/tests/bubbles.rs` checks
//! them for 1F1B, ZB1P, DualPipe and DualPipeV).

use smelt_compiler::pipeline_parallel::{Dependency, Pass, Plan, Task};
use std::collections::HashMap;
use thiserror::Error;

/// How long each pass takes, in any one unit of time. `backward` is the whole backward
/// pass and `weight` its weight-gradient part, as in DeepSeek-V3's report, so a
/// zero-bubble schedule's input backward takes `backward - weight`. `forward_backward`
/// is DualPipe's `F&B`, a forward and a whole backward run overlapped ([`Costs::new`]
/// sets it to `F + B`, no gain from overlapping).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Costs {
    /// A forward pass (`F`).
    pub forward: f64,
    /// A whole backward pass (`B`).
    pub backward: f64,
    /// The weight-gradient part of a backward pass (`W`).
    pub weight: f64,
    /// A forward and a whole backward run overlapped (`F&B`).
    pub forward_backward: f64,
}

/// Costs that cannot describe passes.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SimError {
    /// A cost is negative or not finite, or the weight part is not less than the
    /// whole backward.
    #[error("invalid costs: {0}")]
    Costs(String),
    /// Some rank's next pass waits for a pass that can never run: the lists contradict
    /// their dependencies.
    #[error("the schedule deadlocks: rank {rank} waits at {task} forever")]
    Deadlock {
        /// The waiting rank.
        rank: usize,
        /// The task it waits to run.
        task: String,
    },
}

impl Costs {
    /// `F`, `B` and `W`, with `F&B` taken as `F + B`.
    pub fn new(forward: f64, backward: f64, weight: f64) -> Costs {
        Costs {
            forward,
            backward,
            weight,
            forward_backward: forward + backward,
        }
    }

    /// Checks that every cost is a finite non-negative time and `weight < backward`.
    pub fn check(&self) -> Result<(), SimError> {
        for (name, v) in [
            ("F", self.forward),
            ("B", self.backward),
            ("W", self.weight),
            ("FB", self.forward_backward),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(SimError::Costs(format!("{name}={v} is not a time")));
            }
        }
        if self.weight >= self.backward && self.weight > 0.0 {
            return Err(SimError::Costs(format!(
                "W={} must be less than the whole backward B={}",
                self.weight, self.backward
            )));
        }
        Ok(())
    }

    /// The time of `pass`.
    pub fn of(&self, pass: Pass) -> f64 {
        match pass {
            Pass::Forward => self.forward,
            Pass::Backward => self.backward,
            Pass::BackwardInput => self.backward - self.weight,
            Pass::BackwardWeight => self.weight,
        }
    }

    /// The time of `task`.
    pub fn of_task(&self, task: &Task) -> f64 {
        match task {
            Task::Single(step) => self.of(step.pass),
            Task::Overlapped { .. } => self.forward_backward,
        }
    }
}

/// One task as it ran.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// The task.
    pub task: Task,
    /// When it started.
    pub start: f64,
    /// When it finished.
    pub end: f64,
}

/// When every task of a step ran, by rank, in each rank's list order.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Rank `r`'s tasks.
    pub ranks: Vec<Vec<Span>>,
}

/// What a simulated step comes to.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// From the first pass's start to the last pass's end.
    pub step_time: f64,
    /// Per rank: the step time minus the time the rank computed.
    pub bubble_per_rank: Vec<f64>,
    /// The largest per-rank bubble.
    pub bubble: f64,
}

/// Plays `plan` out under `costs`.
pub fn simulate(plan: &Plan, costs: &Costs) -> Result<Timeline, SimError> {
    costs.check()?;
    let ranks = plan.rank_count();
    let mut done: HashMap<Dependency, f64> = HashMap::new();
    let mut next = vec![0usize; ranks];
    let mut free = vec![0.0f64; ranks];
    let mut spans: Vec<Vec<Span>> = vec![Vec::new(); ranks];
    let total: usize = plan.ranks.iter().map(Vec::len).sum();
    let mut placed = 0;
    while placed < total {
        let mut progressed = false;
        for r in 0..ranks {
            while let Some(&task) = plan.ranks[r].get(next[r]) {
                let ready = task
                    .steps()
                    .flat_map(|step| plan.dependencies(r, step))
                    .map(|dep| done.get(&dep).copied())
                    .try_fold(free[r], |t, d| d.map(|d| t.max(d)));
                let Some(start) = ready else { break };
                let end = start + costs.of_task(&task);
                for made in task.steps().filter_map(|step| Dependency::made_by(r, step)) {
                    done.insert(made, end);
                }
                spans[r].push(Span { task, start, end });
                free[r] = end;
                next[r] += 1;
                placed += 1;
                progressed = true;
            }
        }
        if !progressed {
            let rank = (0..ranks)
                .find(|&r| next[r] < plan.ranks[r].len())
                .unwrap_or(0);
            return Err(SimError::Deadlock {
                rank,
                task: plan.ranks[rank][next[rank]].to_string(),
            });
        }
    }
    Ok(Timeline { ranks: spans })
}

impl Timeline {
    /// Step time and bubbles.
    pub fn report(&self) -> Report {
        let spans = || self.ranks.iter().flatten();
        let start = spans().map(|s| s.start).fold(f64::INFINITY, f64::min);
        let end = spans().map(|s| s.end).fold(f64::NEG_INFINITY, f64::max);
        let step_time = if spans().next().is_some() {
            end - start
        } else {
            0.0
        };
        let bubble_per_rank: Vec<f64> = self
            .ranks
            .iter()
            .map(|r| step_time - r.iter().map(|s| s.end - s.start).sum::<f64>())
            .collect();
        let bubble = bubble_per_rank.iter().copied().fold(0.0, f64::max);
        Report {
            step_time,
            bubble_per_rank,
            bubble,
        }
    }

    /// The timeline in Chrome's trace format (opens in Perfetto): one track per rank,
    /// one slice per task, times in the costs' unit read as microseconds.
    pub fn chrome_trace(&self) -> serde_json::Value {
        let mut events = Vec::new();
        for (rank, spans) in self.ranks.iter().enumerate() {
            events.push(serde_json::json!({
                "name": "thread_name", "ph": "M", "pid": 0, "tid": rank,
                "args": {"name": format!("rank {rank}")},
            }));
            for s in spans {
                events.push(serde_json::json!({
                    "name": s.task.to_string(),
                    "cat": match s.task {
                        Task::Single(step) => step.pass.letter(),
                        Task::Overlapped { .. } => "F&B",
                    },
                    "ph": "X",
                    "pid": 0,
                    "tid": rank,
                    "ts": s.start,
                    "dur": s.end - s.start,
                }));
            }
        }
        serde_json::json!({ "traceEvents": events })
    }
}
