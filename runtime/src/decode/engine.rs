//! The decode engine: one model's programs and weights, and the paged KV cache of
//! every sequence it is generating.
//!
//! Every sequence owns a list of cache blocks ([`pool`](super::pool)). A run (one
//! sequence's prompt or chunk, or one token of many sequences at once) reads each
//! sequence's cached positions through its row of the block table, and its new keys
//! and values are then written into the sequences' blocks. Sequences join and leave a
//! batch without moving their caches.

use super::pool::{Geometry, Pool};
use super::{DecodeError, Outputs, WeightData, LAST_TOKEN};
use crate::cpu::quant::QuantMatrix;
use crate::cpu::{CpuProgram, QuantUse, Resident};
use crate::tensor::Tensor;
use smelt_compiler::ir::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// A sequence of an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u64);

#[derive(Debug, Default)]
struct Sequence {
    len: usize,
    /// Its cache blocks, positions in order.
    blocks: Vec<u32>,
    /// Its tokens.
    tokens: Vec<u32>,
    /// The prefix hash of each full block (of the tokens up to the block's end).
    hashes: Vec<u64>,
}

/// The prefix hash of a block holding `tokens` after blocks of prefix hash `before`.
fn chain(before: u64, tokens: &[u32]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (before, tokens).hash(&mut h);
    h.finish()
}

/// Generates many sequences of one model at once.
pub struct Engine {
    prefill: CpuProgram,
    step: CpuProgram,
    /// The weights (the pool's buffers are lent to it for each run as inputs
    /// `cache.N.k`, `cache.N.v`).
    held: Resident,
    prefill_out: Outputs,
    step_out: Outputs,
    tokens_input: String,
    /// The programs compute logits at each row's last new token only.
    last_only: bool,
    /// See [`Engine::set_batch_invariant`].
    batch_invariant: bool,
    geometry: Geometry,
    context: usize,
    pool: Pool,
    sequences: HashMap<SeqId, Sequence>,
    next_id: u64,
}

impl Engine {
    /// An engine from the compiled prefill and decode programs of one model, its
    /// weights `(name, shape, values)`, and the longest sequence allowed; its cache
    /// holds up to that many positions.
    pub fn new(
        prefill: CpuProgram,
        step: CpuProgram,
        weights: Vec<(String, Vec<usize>, WeightData)>,
        context: usize,
    ) -> Result<Engine, DecodeError> {
        Engine::with_cache(prefill, step, weights, context, context)
    }

    /// As [`Engine::new`], with a cache of `cache_positions` positions shared by all
    /// sequences (rounded up to whole blocks).
    pub fn with_cache(
        prefill: CpuProgram,
        step: CpuProgram,
        weights: Vec<(String, Vec<usize>, WeightData)>,
        context: usize,
        cache_positions: usize,
    ) -> Result<Engine, DecodeError> {
        let g = &step.schedule().graph;
        let attentions = g
            .inputs()
            .filter(|&id| {
                g.value(id).name.starts_with("cache.") && g.value(id).name.ends_with(".k")
            })
            .count();
        let missing = |what: &str| DecodeError::Interface {
            program: "decode",
            what: what.to_string(),
        };
        let first = g
            .find("cache.0.k")
            .ok_or_else(|| missing("input 'cache.0.k'"))?;
        g.find("block_table")
            .ok_or_else(|| missing("input 'block_table'"))?;
        let dims = g.ty(first).dims();
        let geometry = match (
            dims.len(),
            dims.get(1).and_then(|d| d.as_static()),
            dims.get(2).and_then(|d| d.as_static()),
            dims.get(3).and_then(|d| d.as_static()),
        ) {
            (4, Some(h), Some(b), Some(d)) if b > 0 => Geometry {
                heads: h as usize,
                block: b as usize,
                head_dim: d as usize,
                buffers: 2 * attentions,
            },
            _ => {
                return Err(missing(
                    "cache input of type f32[blocks, heads, block, head_dim]",
                ))
            }
        };
        let tokens_input = g
            .inputs()
            .find(|&id| {
                g.ty(id).dtype.is_int() && g.ty(id).rank() == 2 && g.value(id).name != "block_table"
            })
            .map(|id| g.value(id).name.clone())
            .ok_or_else(|| missing("integer token input [B, T]"))?;
        // Programs lowered for the last token only (the language's `PrefillLast` and
        // `DecodeLast` modes) take the input `last_token` and give one row of logits
        // per sequence; both programs must agree.
        let last_only = g.find(LAST_TOKEN).is_some();
        if prefill.schedule().graph.find(LAST_TOKEN).is_some() != last_only {
            return Err(DecodeError::Interface {
                program: "prefill",
                what: format!("input '{LAST_TOKEN}' exactly when the decode program has it"),
            });
        }
        let prefill_out = Outputs::find(&prefill.schedule().graph, "prefill", attentions)?;
        let step_out = Outputs::find(g, "decode", attentions)?;
        let held = hold_weights(&[&prefill, &step], weights)?;
        Ok(Engine {
            prefill,
            step,
            held,
            prefill_out,
            step_out,
            tokens_input,
            last_only,
            batch_invariant: false,
            pool: Pool::new(cache_positions.div_ceil(geometry.block)),
            geometry,
            context,
            sequences: HashMap::new(),
            next_id: 0,
        })
    }

    /// Bytes of the weights as held (quantised ones at their block size).
    pub fn weight_bytes(&self) -> usize {
        self.held.size_bytes()
    }

    /// Bytes of the cache pool (allocated blocks, free or not).
    pub fn cache_bytes(&self) -> usize {
        self.pool.size_bytes()
    }

    /// Positions per cache block.
    pub fn block_positions(&self) -> usize {
        self.geometry.block
    }

    /// Cache blocks held by sequences.
    pub fn blocks_used(&self) -> usize {
        self.pool.used()
    }

    /// Bytes one cached position takes (keys and values of every attention).
    pub fn bytes_per_position(&self) -> usize {
        self.geometry.buffers * self.geometry.heads * self.geometry.head_dim * 4
    }

    /// The longest sequence allowed.
    pub fn context(&self) -> usize {
        self.context
    }

    /// A new, empty sequence.
    pub fn start(&mut self) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.sequences.insert(id, Sequence::default());
        id
    }

    /// A new sequence that will start with `prompt`, holding the longest run of its
    /// leading tokens already in the cache (leaving at least one token to feed): whole
    /// blocks shared, then a copy of the start of one more. Returns how many tokens
    /// that covers: feed it the rest.
    pub fn start_with(&mut self, prompt: &[u32]) -> (SeqId, usize) {
        let size = self.geometry.block;
        let mut s = Sequence::default();
        let mut before = 0;
        for tokens in prompt[..prompt.len().saturating_sub(1)].chunks_exact(size) {
            let hash = chain(before, tokens);
            let Some(block) = self.pool.lookup(hash, tokens) else {
                break;
            };
            self.pool.share(block);
            s.blocks.push(block);
            s.hashes.push(hash);
            s.tokens.extend_from_slice(tokens);
            before = hash;
        }
        // The next block, shared only in part: a copy of the registered block with the
        // longest common start gives those positions (the rest of the copy is masked
        // until this sequence writes it).
        let rest = &prompt[s.tokens.len()..prompt.len().saturating_sub(1)];
        let next = &rest[..rest.len().min(size)];
        if let Some((from, common)) = self.pool.longest_start(before, next) {
            // Held while the copy's block is found, so it cannot be the one taken.
            self.pool.share(from);
            if let Ok(to) = self.pool.allocate(self.geometry, 1) {
                self.pool.copy(self.geometry, from, to[0]);
                s.blocks.push(to[0]);
                s.tokens.extend_from_slice(&next[..common]);
            }
            self.pool.release(&[from]);
        }
        s.len = s.tokens.len();
        let cached = s.len;
        let id = self.start();
        self.sequences.insert(id, s);
        (id, cached)
    }

    /// A new sequence with `id`'s tokens so far (choices that share a prompt): it
    /// shares `id`'s full blocks and copies the last, partly filled one.
    pub fn fork(&mut self, id: SeqId) -> Result<SeqId, DecodeError> {
        let s = self.sequences.get(&id).ok_or(DecodeError::Unknown)?;
        let full = s.len / self.geometry.block;
        let mut blocks = s.blocks[..full].to_vec();
        let (tokens, hashes, len) = (s.tokens.clone(), s.hashes.clone(), s.len);
        let partial = s
            .blocks
            .get(full)
            .copied()
            .filter(|_| len % self.geometry.block != 0);
        if let Some(from) = partial {
            let to = self
                .pool
                .allocate(self.geometry, 1)
                .map_err(|_| self.full())?[0];
            self.pool.copy(self.geometry, from, to);
            blocks.push(to);
        }
        for &b in &blocks[..full] {
            self.pool.share(b);
        }
        let copy = self.start();
        self.sequences.insert(
            copy,
            Sequence {
                len,
                blocks,
                tokens,
                hashes,
            },
        );
        Ok(copy)
    }

    /// The tokens of sequence `id` so far (none for an unknown one).
    pub fn tokens(&self, id: SeqId) -> &[u32] {
        self.sequences.get(&id).map_or(&[], |s| &s.tokens)
    }

    /// Tokens in sequence `id`'s cache (0 for an unknown one).
    pub fn len(&self, id: SeqId) -> usize {
        self.sequences.get(&id).map_or(0, |s| s.len)
    }

    /// Forgets sequence `id` and frees its cache blocks.
    pub fn remove(&mut self, id: SeqId) {
        if let Some(s) = self.sequences.remove(&id) {
            self.pool.release(&s.blocks);
        }
    }

    /// Appends `tokens` to sequence `id` (a whole prompt, a chunk of one, or tokens
    /// after it) and returns the logits of every new position, `[n, vocab]`, or of the
    /// last one only when the programs compute only that (`[1, vocab]`).
    pub fn feed(&mut self, id: SeqId, tokens: &[u32]) -> Result<Vec<Vec<f32>>, DecodeError> {
        Ok(self.run(&[(id, tokens)])?.pop().expect("one row"))
    }

    /// Appends tokens to several sequences in one batched run (prompts, or chunks of
    /// them, of any lengths: shorter rows are padded, and the padding is neither
    /// cached nor seen) and returns each one's logits for its last new position (none
    /// for no rows).
    pub fn feed_many(&mut self, rows: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>, DecodeError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .run(rows)?
            .into_iter()
            .map(|mut r| r.pop().expect("a token per row"))
            .collect())
    }

    /// Appends one token to each sequence of `next` in one batched run and returns each
    /// one's logits for its next position, in the same order.
    pub fn step(&mut self, next: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, DecodeError> {
        let rows: Vec<(SeqId, &[u32])> = next
            .iter()
            .map(|(id, t)| (*id, std::slice::from_ref(t)))
            .collect();
        self.feed_many(&rows)
    }

    /// With `on`, every run computes each row of activations on its own
    /// ([`Resident::set_rows_independent`]) and prompts run through the decode program
    /// too (whose attention takes each position's keys in order, cached or new), so a
    /// sequence's logits depend neither on what it is batched with nor on how much of
    /// its prompt came from the cache, at some cost for long prompts.
    pub fn set_batch_invariant(&mut self, on: bool) {
        self.held.set_rows_independent(on);
        self.batch_invariant = on;
    }

    fn full(&self) -> DecodeError {
        DecodeError::CacheFull {
            positions: self.pool.used() * self.geometry.block,
        }
    }

    /// Runs each row's tokens (padded to the longest) through the prefill program
    /// (no row has anything cached yet) or the decode program, writes their keys and
    /// values into the sequences' blocks, and returns each row's logits, one per token.
    fn run(&mut self, rows: &[(SeqId, &[u32])]) -> Result<Vec<Vec<Vec<f32>>>, DecodeError> {
        let n = rows.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
        if rows.iter().any(|(_, t)| t.is_empty()) || n == 0 {
            return Err(DecodeError::Empty);
        }
        let mut lens = Vec::with_capacity(rows.len());
        for (i, (id, tokens)) in rows.iter().enumerate() {
            let s = self.sequences.get(id).ok_or(DecodeError::Unknown)?;
            if rows[..i].iter().any(|(other, _)| other == id) {
                return Err(DecodeError::Unknown);
            }
            if s.len + tokens.len() > self.context {
                return Err(DecodeError::Context {
                    len: s.len + tokens.len(),
                    context: self.context,
                });
            }
            lens.push(s.len);
        }
        // Blocks for the new positions, all or none.
        let size = self.geometry.block;
        let wanted: Vec<usize> = rows
            .iter()
            .zip(&lens)
            .map(|((id, t), &len)| (len + t.len()).div_ceil(size) - self.sequences[id].blocks.len())
            .collect();
        let mut fresh = self
            .pool
            .allocate(self.geometry, wanted.iter().sum())
            .map_err(|_| self.full())?;
        for ((id, _), &w) in rows.iter().zip(&wanted) {
            let s = self.sequences.get_mut(id).expect("checked");
            s.blocks.extend(fresh.drain(fresh.len() - w..));
        }
        // Shorter rows are padded at the end with their last token: causal attention
        // keeps the padding out of the real positions.
        let padded: Vec<i64> = rows
            .iter()
            .flat_map(|(_, t)| (0..n).map(move |i| i64::from(t[i.min(t.len() - 1)])))
            .collect();
        let mut feeds = HashMap::from([(
            self.tokens_input.clone(),
            Tensor::from_i64(DType::I32, vec![rows.len(), n], padded),
        )]);
        if self.last_only {
            let last = rows.iter().map(|(_, t)| t.len() as i64 - 1).collect();
            feeds.insert(
                LAST_TOKEN.into(),
                Tensor::from_i64(DType::I32, vec![rows.len()], last),
            );
        }
        let first = lens.iter().all(|&l| l == 0) && !self.batch_invariant;
        let (program, outputs) = if first {
            (&self.prefill, &self.prefill_out)
        } else {
            let past = lens.iter().map(|&l| l as i64).collect();
            feeds.insert(
                "past_len".into(),
                Tensor::from_i64(DType::I32, vec![rows.len()], past),
            );
            // Each row lists the blocks of its cached positions, padded with its first
            // block (masked: at or past its length).
            let pages = lens
                .iter()
                .map(|l| l.div_ceil(size))
                .max()
                .unwrap_or(1)
                .max(1);
            let mut table = Vec::with_capacity(rows.len() * pages);
            for (id, _) in rows {
                let blocks = &self.sequences[id].blocks;
                table.extend((0..pages).map(|p| i64::from(*blocks.get(p).unwrap_or(&blocks[0]))));
            }
            feeds.insert(
                "block_table".into(),
                Tensor::from_i64(DType::I32, vec![rows.len(), pages], table),
            );
            (&self.step, &self.step_out)
        };
        // The pool's buffers are lent to the held values for the run, and always taken
        // back.
        let shape = self.pool.shape(self.geometry);
        if !first {
            for (i, buffer) in std::mem::take(&mut self.pool.buffers)
                .into_iter()
                .enumerate()
            {
                self.held.set_input(&cache_name(i), shape.clone(), buffer);
            }
        }
        // The steps run on a thread of rayon's pool, so its parallel loops use that
        // thread and one other while the caller sleeps; run from outside the pool,
        // the caller would share the cores with workers spinning between the many
        // small loops of a decode step (measured: 52 → 60 tok/s on 2 cores). Training
        // steps, with fewer and larger loops, did not gain, so only decoding does this.
        let held = &self.held;
        let ran = rayon::scope(|_| program.run_resident(&feeds, held));
        if !first {
            self.pool.buffers = (0..self.geometry.buffers)
                .map(|i| self.held.take_input(&cache_name(i)).unwrap_or_default())
                .collect();
        }
        let (out, _) = ran?;
        let new: Vec<&[f64]> = outputs
            .cache
            .iter()
            .flat_map(|&(k, v)| [out[k].floats(), out[v].floats()])
            .collect();
        let counts: Vec<usize> = rows.iter().map(|(_, t)| t.len()).collect();
        let tables: Vec<&[u32]> = rows
            .iter()
            .map(|(id, _)| &self.sequences[id].blocks[..])
            .collect();
        self.pool
            .write(self.geometry, &new, &tables, (&lens, &counts), n);
        for (id, tokens) in rows {
            let s = self.sequences.get_mut(id).expect("checked");
            s.len += tokens.len();
            s.tokens.extend_from_slice(tokens);
            // Blocks filled by this run become reusable prefixes.
            while (s.hashes.len() + 1) * size <= s.len {
                let i = s.hashes.len();
                let held = &s.tokens[i * size..(i + 1) * size];
                let parent = s.hashes.last().copied().unwrap_or(0);
                let hash = chain(parent, held);
                self.pool.register(s.blocks[i], (parent, hash), held);
                s.hashes.push(hash);
            }
        }
        let logits = out[outputs.logits].floats();
        let positions = if self.last_only { 1 } else { n };
        let vocab = logits.len() / (rows.len() * positions);
        Ok(counts
            .iter()
            .enumerate()
            .map(|(r, &count)| {
                // Row `r`'s logits: one per new token, or its last one's alone.
                let kept = if self.last_only { 1 } else { count };
                (0..kept)
                    .map(|t| {
                        let at = (r * positions + t) * vocab;
                        logits[at..at + vocab].iter().map(|&x| x as f32).collect()
                    })
                    .collect()
            })
            .collect())
    }
}

/// The decode program's input for cache buffer `i` (two per attention: keys, values).
fn cache_name(i: usize) -> String {
    let part = if i.is_multiple_of(2) { "k" } else { "v" };
    format!("cache.{}.{part}", i / 2)
}

/// The weights held for `programs`: quantised where every program reads them as its
/// kernels support, else dequantised; equal matrices (a tied head and its embedding
/// table) are held once.
fn hold_weights(
    programs: &[&CpuProgram],
    weights: Vec<(String, Vec<usize>, WeightData)>,
) -> Result<Resident, DecodeError> {
    let mut held = Resident::default();
    let mut shared: Vec<Arc<QuantMatrix>> = Vec::new();
    for (name, shape, data) in weights {
        let (matrix, usage) = match data {
            WeightData::F32(v) => {
                held.insert_f32(programs[0], name, shape, v)?;
                continue;
            }
            WeightData::Quantised(q) => (q, QuantUse::Weight),
            WeightData::QuantisedTable(q) => (q, QuantUse::Table),
        };
        let matrix = match shared.iter().find(|s| ***s == matrix) {
            Some(s) => s.clone(),
            None => {
                shared.push(Arc::new(matrix));
                shared[shared.len() - 1].clone()
            }
        };
        if held
            .quantise(programs, &name, matrix.clone(), usage)
            .is_err()
        {
            let values = match usage {
                QuantUse::Weight => matrix.dequantize(),
                QuantUse::Table => matrix.dequantize_rows(),
            };
            held.insert_f32(programs[0], name, shape, values)?;
        }
    }
    Ok(held)
}
