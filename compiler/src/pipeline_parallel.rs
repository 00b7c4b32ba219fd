//! Pipeline-parallel schedules as data: for each rank (one pipeline stage each), the
//! ordered list of passes it runs over the micro-batches of one training step.
//!
//! - [`one_f_one_b`]: 1F1B. Rank `r` of `P` runs `P - 1 - r` warm-up forwards, then
//!   alternates one forward and one full backward, then drains its backwards. Each rank
//!   holds at most `P - r` micro-batches' activations.
//! - [`zb1p`]: a zero-bubble schedule in the manner of ZB-H1 (Qi et al., "Zero Bubble
//!   Pipeline Parallelism", 2023). The backward is split into the part that gives the
//!   input's gradient ([`Pass::BackwardInput`], on the critical path) and the weights'
//!   gradient ([`Pass::BackwardWeight`], needed by nothing downstream), and the weight
//!   passes run where the rank would otherwise wait, or when `P - 1` of them are already
//!   waiting. Rank `r` starts a forward only while fewer than `P - r` micro-batches await
//!   their input backward, as in 1F1B. The bubble is ZB-H1's, `(P - 1)(F + B - 2W)`
//!   (tested in `sim/tests/bubbles.rs`), but the order is not yet ZB-H1's own: a rank
//!   may hold up to `P - 1` micro-batches more for their weight passes, where ZB-H1
//!   keeps 1F1B's peak of `P`.
//!
//! The lists carry no times. The order within each rank is fixed here; when each pass
//! runs follows from the passes it depends on ([`Plan::dependencies`]), which is what a
//! simulator or a real run plays out.

use std::fmt;
use thiserror::Error;

/// One pass over one micro-batch on one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pass {
    /// The forward pass (`F`).
    Forward,
    /// The whole backward pass: input and weight gradients together (1F1B's `B`).
    Backward,
    /// The backward pass for the stage's input gradient only (the zero-bubble `B`).
    BackwardInput,
    /// The backward pass for the stage's weight gradients only (`W`).
    BackwardWeight,
}

impl Pass {
    /// The letter schedules are drawn with.
    pub fn letter(self) -> &'static str {
        match self {
            Pass::Forward => "F",
            Pass::Backward => "B",
            Pass::BackwardInput => "B",
            Pass::BackwardWeight => "W",
        }
    }
}

/// One entry of a rank's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    /// What runs.
    pub pass: Pass,
    /// On which micro-batch (from 0).
    pub micro_batch: usize,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.pass.letter(), self.micro_batch)
    }
}

/// The schedules this module generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// 1F1B.
    OneFOneB,
    /// Zero-bubble ZB-H1.
    ZeroBubble,
}

/// A schedule that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    /// No stages or no micro-batches.
    #[error("a pipeline needs at least one stage and one micro-batch (got {stages} stages, {micro_batches} micro-batches)")]
    Empty {
        /// Stages asked for.
        stages: usize,
        /// Micro-batches asked for.
        micro_batches: usize,
    },
    /// More passes than a list (and a simulation of it) is made for.
    #[error("{stages} stages × {micro_batches} micro-batches: at most {MAX_STAGES} stages and {MAX_STAGE_PASSES} stage passes")]
    TooLarge {
        /// Stages asked for.
        stages: usize,
        /// Micro-batches asked for.
        micro_batches: usize,
    },
}

/// The most `stages × micro_batches` a schedule is generated for: lists, generators and
/// simulations take memory in proportion (DeepSeek-V3 ran 16 stages; a million leaves
/// room for any real pipeline).
pub const MAX_STAGE_PASSES: usize = 1 << 20;

/// The most stages: the zero-bubble generator's time grows with the square of the
/// stage count.
pub const MAX_STAGES: usize = 4096;

/// Per-rank pass lists of one training step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Which schedule made it.
    pub kind: ScheduleKind,
    /// Micro-batches per step.
    pub micro_batches: usize,
    /// Rank `r` runs `ranks[r]` in order; rank `r` is stage `r`.
    pub ranks: Vec<Vec<Step>>,
}

impl Plan {
    /// The number of stages (and ranks).
    pub fn stages(&self) -> usize {
        self.ranks.len()
    }

    /// The passes (rank, step) that must finish before `step` runs on `rank`, besides
    /// the passes listed before it on the same rank. A forward needs the previous
    /// stage's forward of its micro-batch; a backward (whole or input part) needs the
    /// next stage's input gradient, or on the last stage its own forward; a weight pass
    /// needs its own stage's input backward.
    pub fn dependencies(&self, rank: usize, step: Step) -> Vec<(usize, Step)> {
        let last = self.stages() - 1;
        let at = |pass| Step {
            pass,
            micro_batch: step.micro_batch,
        };
        let backward = match self.kind {
            ScheduleKind::OneFOneB => Pass::Backward,
            ScheduleKind::ZeroBubble => Pass::BackwardInput,
        };
        match step.pass {
            Pass::Forward if rank > 0 => vec![(rank - 1, at(Pass::Forward))],
            Pass::Forward => vec![],
            Pass::Backward | Pass::BackwardInput if rank < last => vec![(rank + 1, at(backward))],
            Pass::Backward | Pass::BackwardInput => vec![(rank, at(Pass::Forward))],
            Pass::BackwardWeight => vec![(rank, at(Pass::BackwardInput))],
        }
    }

    /// Each rank's list as text, one rank per line (`F0 F1 B0 ...`).
    pub fn to_text(&self) -> String {
        self.ranks
            .iter()
            .map(|steps| {
                let items: Vec<String> = steps.iter().map(ToString::to_string).collect();
                items.join(" ") + "\n"
            })
            .collect()
    }
}

/// Checks the sizes before anything is allocated for them.
fn check(stages: usize, micro_batches: usize) -> Result<(), ScheduleError> {
    if stages == 0 || micro_batches == 0 {
        return Err(ScheduleError::Empty {
            stages,
            micro_batches,
        });
    }
    if stages > MAX_STAGES
        || stages
            .checked_mul(micro_batches)
            .is_none_or(|n| n > MAX_STAGE_PASSES)
    {
        return Err(ScheduleError::TooLarge {
            stages,
            micro_batches,
        });
    }
    Ok(())
}

/// The schedule `kind` for `stages` ranks and `micro_batches` micro-batches.
pub fn generate(
    kind: ScheduleKind,
    stages: usize,
    micro_batches: usize,
) -> Result<Plan, ScheduleError> {
    match kind {
        ScheduleKind::OneFOneB => one_f_one_b(stages, micro_batches),
        ScheduleKind::ZeroBubble => zb1p(stages, micro_batches),
    }
}

/// 1F1B over `stages` ranks.
pub fn one_f_one_b(stages: usize, micro_batches: usize) -> Result<Plan, ScheduleError> {
    check(stages, micro_batches)?;
    let step = |pass, micro_batch| Step { pass, micro_batch };
    let ranks = (0..stages)
        .map(|rank| {
            let warm_up = (stages - 1 - rank).min(micro_batches);
            let mut steps: Vec<Step> = (0..warm_up).map(|m| step(Pass::Forward, m)).collect();
            for m in warm_up..micro_batches {
                steps.push(step(Pass::Forward, m));
                steps.push(step(Pass::Backward, m - warm_up));
            }
            steps.extend((micro_batches - warm_up..micro_batches).map(|m| step(Pass::Backward, m)));
            steps
        })
        .collect();
    Ok(Plan {
        kind: ScheduleKind::OneFOneB,
        micro_batches,
        ranks,
    })
}

/// The zero-bubble schedule over `stages` ranks (see the module doc for how it differs
/// from ZB-H1). The order is that of a greedy rule played out with every pass taking
/// one unit of time: an idle rank runs the next input backward if its gradient has
/// arrived, else the oldest weight pass if `P - 1` wait, else the next forward if its
/// input has arrived and the memory bound allows, else the oldest waiting weight pass.
pub fn zb1p(stages: usize, micro_batches: usize) -> Result<Plan, ScheduleError> {
    check(stages, micro_batches)?;
    let (p, m) = (stages, micro_batches);
    // When each pass finished (in unit steps), by rank and micro-batch.
    let mut forward_done: Vec<Vec<Option<usize>>> = vec![vec![None; m]; p];
    let mut input_done: Vec<Vec<Option<usize>>> = vec![vec![None; m]; p];
    let mut next_forward = vec![0; p];
    let mut next_input = vec![0; p];
    let mut pending_weights: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); p];
    let mut ranks: Vec<Vec<Step>> = vec![Vec::new(); p];
    let total = 3 * p * m;
    let mut scheduled = 0;
    let mut time = 0;
    while scheduled < total {
        // Every rank picks at the start of unit step `time`, seeing what finished by then.
        let arrived = |done: &Option<usize>| done.is_some_and(|t| t <= time);
        let mut picks: Vec<Option<Step>> = vec![None; p];
        for r in 0..p {
            let b = next_input[r];
            let input_ready = b < m
                && b < next_forward[r]
                && if r + 1 < p {
                    arrived(&input_done[r + 1][b])
                } else {
                    arrived(&forward_done[r][b])
                };
            let f = next_forward[r];
            let in_flight = next_forward[r] - next_input[r];
            let forward_ready =
                f < m && in_flight < p - r && (r == 0 || arrived(&forward_done[r - 1][f]));
            let oldest_weight = pending_weights[r].front().map(|&w| Step {
                pass: Pass::BackwardWeight,
                micro_batch: w,
            });
            // At most P - 1 weight passes wait, so memory stays bounded whatever M is.
            let weight_due = pending_weights[r].len() >= p;
            picks[r] = if input_ready {
                Some(Step {
                    pass: Pass::BackwardInput,
                    micro_batch: b,
                })
            } else if weight_due {
                oldest_weight
            } else if forward_ready {
                Some(Step {
                    pass: Pass::Forward,
                    micro_batch: f,
                })
            } else {
                oldest_weight
            };
        }
        for (r, pick) in picks.into_iter().enumerate() {
            let Some(step) = pick else { continue };
            match step.pass {
                Pass::Forward => {
                    forward_done[r][step.micro_batch] = Some(time + 1);
                    next_forward[r] += 1;
                }
                Pass::BackwardInput => {
                    input_done[r][step.micro_batch] = Some(time + 1);
                    next_input[r] += 1;
                    pending_weights[r].push_back(step.micro_batch);
                }
                _ => {
                    pending_weights[r].pop_front();
                }
            }
            ranks[r].push(step);
            scheduled += 1;
        }
        time += 1;
    }
    Ok(Plan {
        kind: ScheduleKind::ZeroBubble,
        micro_batches,
        ranks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_f_one_b_for_four_stages() {
        let plan = one_f_one_b(4, 6).unwrap();
        assert_eq!(
            plan.to_text(),
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5\n\
             F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5\n\
             F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5\n\
             F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5\n"
        );
    }

    /// Whatever the number of micro-batches, rank `r` holds at most `P - r` awaiting
    /// their input backward plus `P - 1` awaiting their weight pass.
    #[test]
    fn zero_bubble_memory_does_not_grow_with_micro_batches() {
        for stages in [2, 4, 8] {
            let plan = zb1p(stages, 5 * stages).unwrap();
            for (rank, steps) in plan.ranks.iter().enumerate() {
                let mut held: usize = 0;
                let mut peak = 0;
                for step in steps {
                    match step.pass {
                        Pass::Forward => held += 1,
                        Pass::BackwardWeight => held -= 1,
                        _ => {}
                    }
                    peak = peak.max(held);
                }
                assert!(
                    peak <= 2 * stages - 1 - rank,
                    "rank {rank} of {stages}: {peak}"
                );
            }
        }
    }

    #[test]
    fn every_rank_runs_every_pass_once() {
        for stages in 1..6 {
            for micro_batches in 1..10 {
                for kind in [ScheduleKind::OneFOneB, ScheduleKind::ZeroBubble] {
                    let plan = generate(kind, stages, micro_batches).unwrap();
                    let per_micro_batch = if kind == ScheduleKind::OneFOneB { 2 } else { 3 };
                    for steps in &plan.ranks {
                        let mut sorted = steps.clone();
                        sorted.sort();
                        sorted.dedup();
                        assert_eq!(sorted.len(), steps.len());
                        assert_eq!(steps.len(), per_micro_batch * micro_batches);
                    }
                }
            }
        }
    }
}
