//! Continuous batching: one thread owns the decode engine and, step after step, reads
//! the next chunk of every prompt being read in one batched run, then runs every
//! running sequence's next token in one batched decode step. Requests join when a
//! place and KV cache blocks are free, and leave when they finish; the rest wait in a
//! bounded queue.
//!
//! Each request's tokens are sent back on its own channel as they are chosen; a closed
//! channel (the client went away) or a raised stop flag (the handler saw a stop string)
//! frees the sequence before the next step.

use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use smelt_runtime::decode::sample::{Sampler, Sampling};
use smelt_runtime::decode::{Engine, SeqId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// The scheduler's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The most sequences decoded at once.
    pub parallel: usize,
    /// KV cache positions shared by all running sequences (in the engine's blocks).
    pub cache_tokens: usize,
    /// The most requests waiting for a place; more are refused (HTTP 429).
    pub queue: usize,
    /// The most prompt tokens read between two decode steps (over all prompts).
    pub chunk: usize,
}

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-sequence token (or, decided by the handler, a stop string).
    Stop,
    /// `max_tokens`, or the context, was reached.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// A token's log-probability and the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct Logprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// What the scheduler tells a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Choice `choice` generated `token`.
    Token {
        choice: usize,
        token: u32,
        logprobs: Option<Logprobs>,
    },
    /// Choice `choice` ended.
    Done { choice: usize, finish: Finish },
    /// The request failed.
    Failed(String),
}

/// A request for the scheduler.
pub struct Job {
    pub prompt: Vec<u32>,
    /// One sampling per choice.
    pub choices: Vec<Sampling>,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    /// The most tokens per choice.
    pub max_tokens: usize,
    /// With `Some(n)`, each token comes with its log-probability and the `n` most
    /// likely alternatives.
    pub top_logprobs: Option<usize>,
    /// End-of-sequence tokens do not end the choices.
    pub ignore_eos: bool,
    pub events: UnboundedSender<Event>,
    /// Raised by the handler to end a choice (a stop string was seen).
    pub stop: Arc<Vec<AtomicBool>>,
    pub arrived: Instant,
}

impl Job {
    /// KV cache blocks of `block` positions the job reserves while it runs.
    pub fn blocks(&self, block: usize) -> usize {
        self.choices.len() * (self.prompt.len() + self.max_tokens).div_ceil(block)
    }
}

/// Sends jobs to the scheduler thread.
#[derive(Clone)]
pub struct Scheduler {
    jobs: mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
    limits: Limits,
    block: usize,
}

impl Scheduler {
    /// Starts the scheduler thread over `engine`; it ends when every [`Scheduler`] is
    /// dropped and the running requests are finished.
    pub fn spawn(
        engine: Engine,
        limits: Limits,
        stop_tokens: Vec<u32>,
        metrics: Arc<Metrics>,
    ) -> (Scheduler, std::thread::JoinHandle<()>) {
        let (jobs, inbox) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let block = engine.block_positions();
        metrics::set(
            &metrics.kv_blocks_total,
            limits.cache_tokens.div_ceil(block) as u64,
        );
        let mut state = Batcher {
            engine,
            limits: limits.clone(),
            stop_tokens,
            metrics,
            waiting: waiting.clone(),
            queue: VecDeque::new(),
            running: Vec::new(),
            blocks_reserved: 0,
            block,
        };
        let thread = std::thread::Builder::new()
            .name("smelt-scheduler".into())
            .spawn(move || state.run(inbox))
            .expect("a thread can be started");
        (
            Scheduler {
                jobs,
                waiting,
                limits,
                block,
            },
            thread,
        )
    }

    /// The scheduler's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Positions per KV cache block.
    pub fn block_positions(&self) -> usize {
        self.block
    }

    /// Queues `job`, or refuses it when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        if before >= self.limits.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::busy(before));
        }
        self.jobs.send(job).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            ApiError::unavailable("the server is shutting down")
        })
    }
}

/// One choice of a running request.
struct Choice {
    sequence: SeqId,
    sampler: Sampler,
    /// Generated tokens by id (presence and frequency penalties).
    counts: HashMap<u32, u32>,
    generated: usize,
    /// The token to feed at the next step.
    next: Option<u32>,
    last_token_at: Instant,
    done: bool,
}

/// A request that holds a place.
struct Running {
    job: Job,
    blocks: usize,
    /// While the prompt is read: the sequence and how many tokens were fed.
    prefill: Option<(SeqId, usize)>,
    choices: Vec<Choice>,
}

struct Batcher {
    engine: Engine,
    limits: Limits,
    stop_tokens: Vec<u32>,
    metrics: Arc<Metrics>,
    waiting: Arc<AtomicUsize>,
    queue: VecDeque<Job>,
    running: Vec<Running>,
    /// Blocks reserved by running requests (for their prompts and `max_tokens`).
    blocks_reserved: usize,
    block: usize,
}

impl Batcher {
    fn run(&mut self, inbox: mpsc::Receiver<Job>) {
        loop {
            if self.running.is_empty() && self.queue.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.queue.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = inbox.try_recv() {
                self.queue.push_back(job);
            }
            self.drop_abandoned();
            self.admit();
            self.prefill_chunk();
            self.decode_step();
            self.retire();
            self.report();
        }
    }

    /// Forgets queued requests whose clients left, and ends choices whose client
    /// left or whose handler saw a stop string.
    fn drop_abandoned(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|job| !job.events.is_closed());
        self.waiting
            .fetch_sub(before - self.queue.len(), Ordering::SeqCst);
        for r in &mut self.running {
            let gone = r.job.events.is_closed();
            for (i, c) in r.choices.iter_mut().enumerate() {
                if gone || r.job.stop[i].load(Ordering::SeqCst) {
                    c.done = true;
                }
            }
            if let (true, Some((sequence, _))) = (gone, r.prefill) {
                r.prefill = None;
                self.engine.remove(sequence);
            }
        }
    }

    /// Gives waiting requests places, oldest first, while places and blocks last.
    fn admit(&mut self) {
        while let Some(job) = self.queue.front() {
            let places: usize = self.running.iter().map(|r| r.job.choices.len()).sum();
            let blocks = job.blocks(self.block);
            if places + job.choices.len() > self.limits.parallel
                || self.blocks_reserved + blocks > self.limits.cache_tokens.div_ceil(self.block)
            {
                break;
            }
            let job = self.queue.pop_front().expect("looked at");
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.blocks_reserved += blocks;
            // Leading blocks of the prompt already cached are not computed again.
            let (sequence, cached) = self.engine.start_with(&job.prompt);
            metrics::add(&self.metrics.prompt_tokens_cached, cached as u64);
            self.running.push(Running {
                job,
                blocks,
                prefill: Some((sequence, cached)),
                choices: Vec::new(),
            });
        }
    }

    /// Feeds the next tokens of the prompts still being read, in one batched run; a
    /// prompt read to its end gets its choices, and each draws its first token.
    fn prefill_chunk(&mut self) {
        // Oldest first, up to `chunk` prompt tokens in all: the first prompts get their
        // first tokens sooner than if all were read at once, and running streams wait
        // for at most one chunk between tokens.
        let mut budget = self.limits.chunk;
        let mut reading = Vec::new();
        let mut rows: Vec<(SeqId, &[u32])> = Vec::new();
        for (i, r) in self.running.iter().enumerate() {
            let Some((sequence, fed)) = r.prefill else {
                continue;
            };
            if budget == 0 {
                break;
            }
            let end = (fed + budget).min(r.job.prompt.len());
            budget -= end - fed;
            reading.push(i);
            rows.push((sequence, &r.job.prompt[fed..end]));
        }
        if reading.is_empty() {
            return;
        }
        let fed: usize = rows.iter().map(|(_, t)| t.len()).sum();
        let ran = self.engine.feed_many(&rows);
        let ends: Vec<usize> = reading
            .iter()
            .zip(&rows)
            .map(|(&i, (_, t))| self.running[i].prefill.expect("reading").1 + t.len())
            .collect();
        let logits = match ran {
            Ok(logits) => logits,
            Err(e) => {
                for &i in &reading {
                    let r = &mut self.running[i];
                    let _ = r.job.events.send(Event::Failed(e.to_string()));
                    if let Some((sequence, _)) = r.prefill.take() {
                        self.engine.remove(sequence);
                    }
                }
                return;
            }
        };
        metrics::add(&self.metrics.prompt_tokens, fed as u64);
        for ((&i, end), last) in reading.iter().zip(ends).zip(&logits) {
            let r = &mut self.running[i];
            let (sequence, _) = r.prefill.expect("reading");
            if end < r.job.prompt.len() {
                r.prefill = Some((sequence, end));
            } else {
                r.prefill = None;
                self.start_choices(i, sequence, last);
            }
        }
    }

    /// Request `i`'s prompt is read into `sequence`: its choices (forks of it) start,
    /// and each draws its first token from `last`.
    fn start_choices(&mut self, i: usize, sequence: SeqId, last: &[f32]) {
        let r = &mut self.running[i];
        let now = Instant::now();
        for (c, sampling) in r.job.choices.iter().enumerate() {
            let sequence = if c == 0 {
                sequence
            } else {
                match self.engine.fork(sequence) {
                    Ok(copy) => copy,
                    Err(e) => {
                        // Cannot happen within the reserved blocks; said, not hidden.
                        let _ = r.job.events.send(Event::Failed(e.to_string()));
                        r.choices
                            .iter()
                            .for_each(|c| self.engine.remove(c.sequence));
                        r.choices.clear();
                        return;
                    }
                }
            };
            r.choices.push(Choice {
                sequence,
                sampler: Sampler::new(sampling.clone()),
                counts: HashMap::new(),
                generated: 0,
                next: None,
                last_token_at: now,
                done: false,
            });
        }
        self.metrics
            .time_to_first_token
            .observe(r.job.arrived.elapsed().as_secs_f64());
        for c in 0..r.choices.len() {
            choose(
                &mut self.engine,
                &self.stop_tokens,
                &self.metrics,
                r,
                c,
                last,
            );
        }
    }

    /// Runs one batched decode step over every choice with a token to feed.
    fn decode_step(&mut self) {
        let mut who = Vec::new();
        let mut next = Vec::new();
        for (ri, r) in self.running.iter().enumerate() {
            for (ci, c) in r.choices.iter().enumerate() {
                if let (false, Some(t)) = (c.done, c.next) {
                    who.push((ri, ci));
                    next.push((c.sequence, t));
                }
            }
        }
        if next.is_empty() {
            return;
        }
        metrics::set(&self.metrics.batch_size, next.len() as u64);
        metrics::add(&self.metrics.decode_steps, 1);
        match self.engine.step(&next) {
            Ok(logits) => {
                for ((ri, ci), row) in who.into_iter().zip(&logits) {
                    let r = &mut self.running[ri];
                    r.choices[ci].next = None;
                    choose(
                        &mut self.engine,
                        &self.stop_tokens,
                        &self.metrics,
                        r,
                        ci,
                        row,
                    );
                }
            }
            Err(e) => {
                for (ri, _) in who {
                    let r = &mut self.running[ri];
                    let _ = r.job.events.send(Event::Failed(e.to_string()));
                    r.choices.iter_mut().for_each(|c| c.done = true);
                }
            }
        }
    }

    /// Frees finished choices' sequences and finished requests' places and blocks.
    fn retire(&mut self) {
        for r in &mut self.running {
            for c in &r.choices {
                if c.done {
                    self.engine.remove(c.sequence);
                }
            }
        }
        let mut freed = 0;
        self.running.retain(|r| {
            let finished = r.prefill.is_none() && r.choices.iter().all(|c| c.done);
            if finished {
                freed += r.blocks;
            }
            !finished
        });
        self.blocks_reserved -= freed;
    }

    fn report(&self) {
        let m = &self.metrics;
        metrics::set(&m.queued, self.queue.len() as u64);
        let running: usize = self.running.iter().map(|r| r.job.choices.len()).sum();
        metrics::set(&m.running, running as u64);
        metrics::set(&m.kv_blocks_reserved, self.blocks_reserved as u64);
        metrics::set(&m.kv_blocks_used, self.engine.blocks_used() as u64);
        metrics::set(&m.kv_cache_bytes, self.engine.cache_bytes() as u64);
        if running == 0 {
            metrics::set(&m.batch_size, 0);
        }
    }
}

/// Choice `i` of `r` draws its next token from `logits` and sends it, or ends.
fn choose(
    engine: &mut Engine,
    stop_tokens: &[u32],
    metrics: &Metrics,
    r: &mut Running,
    i: usize,
    logits: &[f32],
) {
    let job = &r.job;
    let c = &mut r.choices[i];
    if c.done {
        return;
    }
    let penalised;
    let scores = if (job.presence_penalty, job.frequency_penalty) != (0.0, 0.0) {
        let mut l = logits.to_vec();
        for (&t, &n) in &c.counts {
            if let Some(x) = l.get_mut(t as usize) {
                *x -= (job.presence_penalty + job.frequency_penalty * f64::from(n)) as f32;
            }
        }
        penalised = l;
        &penalised[..]
    } else {
        logits
    };
    // The sequence holds the prompt and every token generated so far (each is fed
    // before the next is drawn): the repetition penalty's history.
    let token = c.sampler.pick(scores, engine.tokens(c.sequence));
    let now = Instant::now();
    let finish = |c: &mut Choice, finish| {
        c.done = true;
        let _ = job.events.send(Event::Done { choice: i, finish });
    };
    if !job.ignore_eos && stop_tokens.contains(&token) {
        return finish(c, Finish::Stop);
    }
    let logprobs = job.top_logprobs.map(|n| logprobs_of(logits, token, n));
    if c.generated > 0 {
        metrics
            .inter_token_latency
            .observe((now - c.last_token_at).as_secs_f64());
    }
    c.last_token_at = now;
    c.generated += 1;
    *c.counts.entry(token).or_default() += 1;
    metrics::add(&metrics.generated_tokens, 1);
    let _ = job.events.send(Event::Token {
        choice: i,
        token,
        logprobs,
    });
    if c.generated >= job.max_tokens || engine.len(c.sequence) + 1 > engine.context() {
        return finish(c, Finish::Length);
    }
    c.next = Some(token);
}

/// The log-probability of `token` under `logits` and the `n` most likely tokens'.
pub fn logprobs_of(logits: &[f32], token: u32, n: usize) -> Logprobs {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from(x - top).exp()).sum();
    let log_z = f64::from(top) + sum.ln();
    let lp = |t: usize| (f64::from(logits[t]) - log_z) as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if n > 0 && n < order.len() {
        order.select_nth_unstable_by(n - 1, by_logit);
    }
    order.truncate(n);
    order.sort_by(by_logit);
    Logprobs {
        logprob: lp(token as usize),
        top: order.into_iter().map(|t| (t as u32, lp(t))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::logprobs_of;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        let l = logprobs_of(&[0.0, 2.0, 1.0], 2, 2);
        let z = (1.0f64 + 2f64.exp() + 1f64.exp()).ln();
        assert!((f64::from(l.logprob) - (1.0 - z)).abs() < 1e-6);
        assert_eq!(l.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
