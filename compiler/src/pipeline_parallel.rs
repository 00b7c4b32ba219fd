//! Pipeline-parallel schedules as data: for each rank, the ordered list of passes it
//! runs over the micro-batches of one training step.
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
//! - [`dual_pipe`]: DualPipe (DeepSeek-V3 technical report, §3.2.1; the order of
//!   `dualpipe/dualpipe.py` in `deepseek-ai/DualPipe`). Each of the `P` ranks holds two
//!   model chunks: chunk 0 is stage `r` of the pipeline fed at rank 0, chunk 1 stage
//!   `P - 1 - r` of a second copy fed at rank `P - 1`. Half the micro-batches go each
//!   way. In the steady state a rank runs a forward of one chunk together with a
//!   backward of the other ([`Task::Overlapped`], DeepSeek's `F&B`), so that each
//!   hides the other's communication; near the end some backwards are split and their
//!   weight passes deferred into what would be bubbles.
//! - [`dual_pipe_v`]: DualPipeV, DualPipe "cut in half" (`dualpipe/dualpipev.py`).
//!   `P` ranks run a `2P`-stage pipeline fed at rank 0: rank `r` holds stage `r`
//!   (chunk 0, on the way down) and stage `2P - 1 - r` (chunk 1, on the way back).
//!
//! The lists carry no times. The order within each rank is fixed here; when each pass
//! runs follows from the passes it depends on ([`Plan::dependencies`]), which is what a
//! simulator or a real run plays out.

use std::collections::VecDeque;
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

/// One pass of one micro-batch through one of the rank's model chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Step {
    /// What runs.
    pub pass: Pass,
    /// Through which of the rank's chunks: always 0 for 1F1B and ZB1P; 0 or 1 for
    /// DualPipe (the direction the micro-batch travels) and DualPipeV (down or back).
    pub chunk: usize,
    /// On which micro-batch (from 0; in DualPipe, from 0 in each direction).
    pub micro_batch: usize,
}

impl Step {
    /// `pass` of `micro_batch` through chunk 0.
    pub fn new(pass: Pass, micro_batch: usize) -> Step {
        Step {
            pass,
            chunk: 0,
            micro_batch,
        }
    }

    /// `pass` of `micro_batch` through `chunk`.
    pub fn in_chunk(pass: Pass, chunk: usize, micro_batch: usize) -> Step {
        Step {
            pass,
            chunk,
            micro_batch,
        }
    }
}

/// `F3` for chunk 0, `F3'` for chunk 1.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.pass.letter(), self.micro_batch)?;
        for _ in 0..self.chunk {
            f.write_str("'")?;
        }
        Ok(())
    }
}

/// One entry of a rank's list: what the rank runs at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// One pass on its own.
    Single(Step),
    /// A forward and a backward (of other micro-batches, usually of the other chunk)
    /// run together so that each one's communication hides behind the other's compute:
    /// DualPipe's `F&B`, with a cost of its own. It finishes when both have.
    Overlapped {
        /// The forward ([`Pass::Forward`]).
        forward: Step,
        /// The backward ([`Pass::Backward`]).
        backward: Step,
    },
}

impl Task {
    /// The passes it runs: one, or the forward then the backward.
    pub fn steps(&self) -> impl Iterator<Item = Step> {
        let (first, second) = match *self {
            Task::Single(step) => (step, None),
            Task::Overlapped { forward, backward } => (forward, Some(backward)),
        };
        std::iter::once(first).chain(second)
    }
}

impl From<Step> for Task {
    fn from(step: Step) -> Task {
        Task::Single(step)
    }
}

/// `F3`, or `F3&B1'` for an overlapped pair.
impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Single(step) => write!(f, "{step}"),
            Task::Overlapped { forward, backward } => write!(f, "{forward}&{backward}"),
        }
    }
}

/// The schedules this module generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// 1F1B.
    OneFOneB,
    /// Zero-bubble ZB-H1.
    ZeroBubble,
    /// DualPipe: two chunks per rank, micro-batches fed from both ends.
    DualPipe,
    /// DualPipeV: two chunks per rank of a V-shaped pipeline fed from rank 0.
    DualPipeV,
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScheduleKind::OneFOneB => "1F1B",
            ScheduleKind::ZeroBubble => "ZB1P",
            ScheduleKind::DualPipe => "DualPipe",
            ScheduleKind::DualPipeV => "DualPipeV",
        })
    }
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
    /// DualPipe pairs rank `r` with rank `P - 1 - r`, so it needs an even rank count.
    #[error("DualPipe needs an even number of ranks (got {ranks})")]
    OddRanks {
        /// Ranks asked for.
        ranks: usize,
    },
    /// DualPipe feeds half the micro-batches from each end.
    #[error("DualPipe feeds half the micro-batches from each end, so it needs an even number of them (got {micro_batches})")]
    OddMicroBatches {
        /// Micro-batches asked for.
        micro_batches: usize,
    },
    /// DualPipe and DualPipeV fill their pipeline with twice as many micro-batches as
    /// ranks before the steady state (the reference implementation asserts the same).
    #[error("{kind} on {ranks} ranks needs at least {} micro-batches (got {micro_batches})", 2 * ranks)]
    TooFewMicroBatches {
        /// The schedule.
        kind: ScheduleKind,
        /// Ranks asked for.
        ranks: usize,
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

/// A result that one pass hands to others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// A micro-batch's activations out of a chunk (made by its forward).
    Activation,
    /// The gradient of a chunk's input for a micro-batch (made by its backward, whole or
    /// input part).
    InputGradient,
}

/// A product of one micro-batch on one chunk of one rank, that some pass waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dependency {
    /// The rank that makes it.
    pub rank: usize,
    /// Its chunk there.
    pub chunk: usize,
    /// The micro-batch.
    pub micro_batch: usize,
    /// What it is.
    pub product: Product,
}

impl Dependency {
    /// What `step` on `rank` makes for others, once it finishes: weight passes make
    /// nothing another pass waits for.
    pub fn made_by(rank: usize, step: Step) -> Option<Dependency> {
        let product = match step.pass {
            Pass::Forward => Product::Activation,
            Pass::Backward | Pass::BackwardInput => Product::InputGradient,
            Pass::BackwardWeight => return None,
        };
        Some(Dependency {
            rank,
            chunk: step.chunk,
            micro_batch: step.micro_batch,
            product,
        })
    }
}

/// Per-rank pass lists of one training step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Which schedule made it.
    pub kind: ScheduleKind,
    /// Micro-batches per step (in DualPipe, both directions together).
    pub micro_batches: usize,
    /// Rank `r` runs `ranks[r]` in order.
    pub ranks: Vec<Vec<Task>>,
}

impl Plan {
    /// The number of ranks.
    pub fn rank_count(&self) -> usize {
        self.ranks.len()
    }

    /// The number of stages a micro-batch passes through: the ranks, except in
    /// DualPipeV where the pipeline goes down the ranks and back.
    pub fn stages(&self) -> usize {
        match self.kind {
            ScheduleKind::DualPipeV => 2 * self.rank_count(),
            _ => self.rank_count(),
        }
    }

    /// The (rank, chunk) that runs the stage before `chunk` on `rank`, for its
    /// micro-batches; `None` at the pipeline's first stage.
    pub fn upstream(&self, rank: usize, chunk: usize) -> Option<(usize, usize)> {
        let last = self.rank_count() - 1;
        match (self.kind, chunk) {
            (ScheduleKind::DualPipe, 1) => (rank < last).then(|| (rank + 1, 1)),
            (ScheduleKind::DualPipeV, 1) if rank == last => Some((last, 0)),
            (ScheduleKind::DualPipeV, 1) => Some((rank + 1, 1)),
            _ => rank.checked_sub(1).map(|r| (r, chunk)),
        }
    }

    /// The (rank, chunk) that runs the stage after `chunk` on `rank`; `None` at the
    /// pipeline's last stage, where the loss is.
    pub fn downstream(&self, rank: usize, chunk: usize) -> Option<(usize, usize)> {
        let last = self.rank_count() - 1;
        match (self.kind, chunk) {
            (ScheduleKind::DualPipe | ScheduleKind::DualPipeV, 1) => {
                rank.checked_sub(1).map(|r| (r, 1))
            }
            (ScheduleKind::DualPipeV, _) if rank == last => Some((last, 1)),
            _ => (rank < last).then(|| (rank + 1, chunk)),
        }
    }

    /// What must finish before `step` runs on `rank`, besides the tasks listed before
    /// it on the same rank. A forward needs the previous stage's activations of its
    /// micro-batch; a backward (whole or input part) needs the next stage's input
    /// gradient, or at the last stage its own forward (the loss); a weight pass needs
    /// its own input backward.
    pub fn dependencies(&self, rank: usize, step: Step) -> Vec<Dependency> {
        let at = |(rank, chunk), product| Dependency {
            rank,
            chunk,
            micro_batch: step.micro_batch,
            product,
        };
        let here = (rank, step.chunk);
        let needed = match step.pass {
            Pass::Forward => self
                .upstream(rank, step.chunk)
                .map(|up| at(up, Product::Activation)),
            Pass::Backward | Pass::BackwardInput => Some(match self.downstream(rank, step.chunk) {
                Some(down) => at(down, Product::InputGradient),
                None => at(here, Product::Activation),
            }),
            Pass::BackwardWeight => Some(at(here, Product::InputGradient)),
        };
        needed.into_iter().collect()
    }

    /// Each rank's list as text, one rank per line (`F0 F1 B0 ...`; chunk 1 primed,
    /// overlapped pairs joined by `&`).
    pub fn to_text(&self) -> String {
        self.ranks
            .iter()
            .map(|tasks| {
                let items: Vec<String> = tasks.iter().map(ToString::to_string).collect();
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

/// The schedule `kind` for `ranks` ranks and `micro_batches` micro-batches.
pub fn generate(
    kind: ScheduleKind,
    ranks: usize,
    micro_batches: usize,
) -> Result<Plan, ScheduleError> {
    match kind {
        ScheduleKind::OneFOneB => one_f_one_b(ranks, micro_batches),
        ScheduleKind::ZeroBubble => zb1p(ranks, micro_batches),
        ScheduleKind::DualPipe => dual_pipe(ranks, micro_batches),
        ScheduleKind::DualPipeV => dual_pipe_v(ranks, micro_batches),
    }
}

/// 1F1B over `stages` ranks.
pub fn one_f_one_b(stages: usize, micro_batches: usize) -> Result<Plan, ScheduleError> {
    check(stages, micro_batches)?;
    let step = |pass, micro_batch| Task::Single(Step::new(pass, micro_batch));
    let ranks = (0..stages)
        .map(|rank| {
            let warm_up = (stages - 1 - rank).min(micro_batches);
            let mut steps: Vec<Task> = (0..warm_up).map(|m| step(Pass::Forward, m)).collect();
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
    let mut ranks: Vec<Vec<Task>> = vec![Vec::new(); p];
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
            let oldest_weight = pending_weights[r]
                .front()
                .map(|&w| Step::new(Pass::BackwardWeight, w));
            // At most P - 1 weight passes wait, so memory stays bounded whatever M is.
            let weight_due = pending_weights[r].len() >= p;
            picks[r] = if input_ready {
                Some(Step::new(Pass::BackwardInput, b))
            } else if weight_due {
                oldest_weight
            } else if forward_ready {
                Some(Step::new(Pass::Forward, f))
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
            ranks[r].push(step.into());
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

/// DualPipe over `ranks` ranks (even), `micro_batches` of them (even, at least twice
/// the ranks), half fed at each end. Each rank runs the eight phases of `dualpipe.py`.
pub fn dual_pipe(ranks: usize, micro_batches: usize) -> Result<Plan, ScheduleError> {
    check(ranks, micro_batches)?;
    if ranks % 2 == 1 {
        return Err(ScheduleError::OddRanks { ranks });
    }
    if micro_batches % 2 == 1 {
        return Err(ScheduleError::OddMicroBatches { micro_batches });
    }
    enough_micro_batches(ScheduleKind::DualPipe, ranks, micro_batches)?;
    let half_ranks = ranks / 2;
    let plan = (0..ranks)
        .map(|rank| {
            // A rank in the second half is among the first stages of chunk 1's
            // pipeline, so it plays the first half's part with the chunks swapped.
            let (half_rank, leading_chunk) = if rank < half_ranks {
                (rank, 0)
            } else {
                (ranks - 1 - rank, 1)
            };
            dual_rank(half_rank, half_ranks, micro_batches / 2, leading_chunk)
        })
        .collect();
    Ok(Plan {
        kind: ScheduleKind::DualPipe,
        micro_batches,
        ranks: plan,
    })
}

/// DualPipeV over `ranks` ranks (`2 × ranks` stages) and `micro_batches` of them (at
/// least twice the ranks). Each rank runs the order of a first-half DualPipe rank of a
/// pipeline twice as deep, with all micro-batches in one direction: chunk 0 on the way
/// down plays DualPipe's forward direction, chunk 1 on the way back its reverse one.
pub fn dual_pipe_v(ranks: usize, micro_batches: usize) -> Result<Plan, ScheduleError> {
    check(ranks.saturating_mul(2), micro_batches)?;
    enough_micro_batches(ScheduleKind::DualPipeV, ranks, micro_batches)?;
    let plan = (0..ranks)
        .map(|rank| dual_rank(rank, ranks, micro_batches, 0))
        .collect();
    Ok(Plan {
        kind: ScheduleKind::DualPipeV,
        micro_batches,
        ranks: plan,
    })
}

fn enough_micro_batches(
    kind: ScheduleKind,
    ranks: usize,
    micro_batches: usize,
) -> Result<(), ScheduleError> {
    if micro_batches < 2 * ranks {
        return Err(ScheduleError::TooFewMicroBatches {
            kind,
            ranks,
            micro_batches,
        });
    }
    Ok(())
}

/// One rank's order in DualPipe's eight phases (`dualpipe.py`'s `step`). The rank is
/// `half_rank` ranks from its end of the pipeline, of `half_ranks`; `leading_chunk` is
/// the chunk whose micro-batches enter from that end (the one it runs among the first
/// stages), the other is the trailing chunk; each chunk carries `per_chunk`
/// micro-batches. In the comments, 0 is the leading chunk and 1 the trailing one.
fn dual_rank(
    half_rank: usize,
    half_ranks: usize,
    per_chunk: usize,
    leading_chunk: usize,
) -> Vec<Task> {
    let mut rank = RankOrder::new([leading_chunk, 1 - leading_chunk]);
    let (lead, trail) = (0, 1);
    let outer = half_ranks - half_rank - 1;
    // 1. nF0: warm-up forwards of chunk 0, two per rank between this one and the middle.
    for _ in 0..2 * outer {
        rank.single_forward(lead);
    }
    // 2. nF0F1: forwards of both chunks.
    for _ in 0..half_rank + 1 {
        rank.single_forward(lead);
        rank.single_forward(trail);
    }
    // 3. nB1W1F1: the first backwards of chunk 1, split, each weight pass run at once.
    for _ in 0..outer {
        rank.single_backward(trail, true);
        rank.weight();
        rank.single_forward(trail);
    }
    // 4. The steady state: F0&B1, F1&B0. The middle ranks run their first pair apart
    //    (dualpipe.py does, to shrink the bubble): the forward's input is there before
    //    the backward's gradient, which has come back from the far end.
    let middle = half_rank + 1 == half_ranks;
    for i in 0..per_chunk + half_rank + 1 - 2 * half_ranks {
        if i == 0 && middle {
            rank.single_forward(lead);
            rank.single_backward(trail, false);
        } else {
            rank.overlapped(lead, trail);
        }
        rank.overlapped(trail, lead);
    }
    // 5. nB1F1B0: the last forwards of chunk 1.
    for _ in 0..outer {
        rank.single_backward(trail, false);
        rank.overlapped(trail, lead);
    }
    // 6. nB1B0: the remaining backwards of chunk 1, alternating with chunk 0's; from
    //    half-way on they are split and their weight passes deferred.
    let pairs = half_rank + 1;
    let split_from = pairs / 2;
    for i in 0..pairs {
        let odd = half_rank % 2 == 1;
        rank.single_backward(trail, i > split_from || (i == split_from && odd));
        rank.single_backward(lead, i >= split_from);
    }
    // 7. nWB0: one deferred weight pass, one split backward of chunk 0.
    for _ in 0..outer {
        rank.weight();
        rank.single_backward(lead, true);
    }
    // 8. nW: the weight passes still deferred.
    while !rank.deferred.is_empty() {
        rank.weight();
    }
    rank.tasks
}

/// A rank's list as [`dual_rank`] builds it: each chunk's forwards and backwards go in
/// micro-batch order; deferred weight passes run oldest first.
struct RankOrder {
    /// The rank's chunk index of DualPipe's leading (0) and trailing (1) chunk.
    chunks: [usize; 2],
    next_forward: [usize; 2],
    next_backward: [usize; 2],
    deferred: VecDeque<Step>,
    tasks: Vec<Task>,
}

impl RankOrder {
    fn new(chunks: [usize; 2]) -> RankOrder {
        RankOrder {
            chunks,
            next_forward: [0; 2],
            next_backward: [0; 2],
            deferred: VecDeque::new(),
            tasks: Vec::new(),
        }
    }

    fn forward(&mut self, role: usize) -> Step {
        let micro_batch = self.next_forward[role];
        self.next_forward[role] += 1;
        Step::in_chunk(Pass::Forward, self.chunks[role], micro_batch)
    }

    /// The next backward of `role`'s chunk; `split` runs its input part only and
    /// defers the weight pass.
    fn backward(&mut self, role: usize, split: bool) -> Step {
        let (chunk, micro_batch) = (self.chunks[role], self.next_backward[role]);
        self.next_backward[role] += 1;
        if !split {
            return Step::in_chunk(Pass::Backward, chunk, micro_batch);
        }
        self.deferred
            .push_back(Step::in_chunk(Pass::BackwardWeight, chunk, micro_batch));
        Step::in_chunk(Pass::BackwardInput, chunk, micro_batch)
    }

    fn single_forward(&mut self, role: usize) {
        let step = self.forward(role);
        self.tasks.push(step.into());
    }

    fn single_backward(&mut self, role: usize, split: bool) {
        let step = self.backward(role, split);
        self.tasks.push(step.into());
    }

    fn overlapped(&mut self, forward_role: usize, backward_role: usize) {
        let forward = self.forward(forward_role);
        let backward = self.backward(backward_role, false);
        self.tasks.push(Task::Overlapped { forward, backward });
    }

    fn weight(&mut self) {
        if let Some(step) = self.deferred.pop_front() {
            self.tasks.push(step.into());
        }
    }
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
                for step in steps.iter().flat_map(Task::steps) {
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

    /// Each rank runs, for every micro-batch on each of its chunks, one forward and one
    /// backward (whole, or input part followed later by its weight pass), and an
    /// overlapped pair is a forward and a whole backward.
    #[test]
    fn every_rank_runs_every_pass_once() {
        let mut cases = Vec::new();
        for stages in 1..6 {
            for micro_batches in 1..10 {
                cases.push((ScheduleKind::OneFOneB, stages, micro_batches));
                cases.push((ScheduleKind::ZeroBubble, stages, micro_batches));
            }
        }
        for ranks in [2, 4, 6, 8] {
            for micro_batches in (2 * ranks..4 * ranks + 2).step_by(2) {
                cases.push((ScheduleKind::DualPipe, ranks, micro_batches));
            }
        }
        for ranks in 1..6 {
            for micro_batches in 2 * ranks..4 * ranks + 2 {
                cases.push((ScheduleKind::DualPipeV, ranks, micro_batches));
            }
        }
        for (kind, ranks, micro_batches) in cases {
            let plan = generate(kind, ranks, micro_batches).unwrap();
            let carried: Vec<(usize, usize)> = match kind {
                ScheduleKind::OneFOneB | ScheduleKind::ZeroBubble => {
                    (0..micro_batches).map(|m| (0, m)).collect()
                }
                ScheduleKind::DualPipe => (0..2)
                    .flat_map(|c| (0..micro_batches / 2).map(move |m| (c, m)))
                    .collect(),
                ScheduleKind::DualPipeV => (0..2)
                    .flat_map(|c| (0..micro_batches).map(move |m| (c, m)))
                    .collect(),
            };
            for (rank, tasks) in plan.ranks.iter().enumerate() {
                let what = format!("{kind} {ranks}×{micro_batches} rank {rank}");
                for task in tasks {
                    if let Task::Overlapped { forward, backward } = task {
                        assert_eq!(forward.pass, Pass::Forward, "{what}");
                        assert_eq!(backward.pass, Pass::Backward, "{what}");
                    }
                }
                let steps: Vec<Step> = tasks.iter().flat_map(Task::steps).collect();
                let position = |pass, (chunk, micro_batch)| {
                    let want = Step::in_chunk(pass, chunk, micro_batch);
                    let found: Vec<usize> =
                        (0..steps.len()).filter(|&i| steps[i] == want).collect();
                    assert!(found.len() <= 1, "{what}: {want} twice");
                    found.first().copied()
                };
                let mut count = 0;
                for &at in &carried {
                    let forward = position(Pass::Forward, at);
                    let whole = position(Pass::Backward, at);
                    let input = position(Pass::BackwardInput, at);
                    let weight = position(Pass::BackwardWeight, at);
                    assert!(forward.is_some(), "{what}: no forward of {at:?}");
                    assert!(
                        whole.is_some() != input.is_some(),
                        "{what}: backward of {at:?}"
                    );
                    assert_eq!(
                        input.is_some(),
                        weight.is_some(),
                        "{what}: weight of {at:?}"
                    );
                    assert!(forward < whole.or(input), "{what}: {at:?}");
                    assert!(input < weight || weight.is_none(), "{what}: {at:?}");
                    count += 2 + usize::from(weight.is_some());
                }
                assert_eq!(count, steps.len(), "{what}: passes of no micro-batch");
            }
        }
    }

    #[test]
    fn dual_pipe_refuses_what_dualpipe_py_asserts_against() {
        assert_eq!(dual_pipe(3, 12), Err(ScheduleError::OddRanks { ranks: 3 }));
        assert_eq!(
            dual_pipe(4, 9),
            Err(ScheduleError::OddMicroBatches { micro_batches: 9 })
        );
        let too_few = |kind, ranks, micro_batches| {
            Err(ScheduleError::TooFewMicroBatches {
                kind,
                ranks,
                micro_batches,
            })
        };
        assert_eq!(dual_pipe(4, 6), too_few(ScheduleKind::DualPipe, 4, 6));
        assert_eq!(dual_pipe_v(4, 7), too_few(ScheduleKind::DualPipeV, 4, 7));
        assert!(dual_pipe(4, 8).is_ok() && dual_pipe_v(4, 8).is_ok());
    }
}
