//! The decode engine: one model's programs and weights, and the caches of every
//! sequence it is generating.
//!
//! Sequences being decoded together share one batched cache (rows in the order of the
//! last step); a sequence fed on its own (a prompt, or a chunk of one) has a cache of
//! its own until it joins a step. Moving a sequence between the two copies its cache,
//! which happens when sequences join or leave a batch, not at every step.

use super::cache::{Caches, Geometry};
use super::{DecodeError, Outputs, WeightData};
use crate::cpu::quant::QuantMatrix;
use crate::cpu::{CpuProgram, QuantUse, Resident};
use crate::tensor::Tensor;
use smelt_compiler::ir::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// A sequence of an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(u64);

/// Where a sequence's cache is.
#[derive(Debug)]
enum Place {
    /// Row `usize` of the batch.
    Batched(usize),
    /// A cache of its own (empty before the first tokens).
    Alone(Caches),
}

#[derive(Debug)]
struct Sequence {
    len: usize,
    place: Place,
}

/// Generates many sequences of one model at once.
pub struct Engine {
    prefill: CpuProgram,
    step: CpuProgram,
    /// The weights (the caches are lent to it for each run as inputs `past.N.k`,
    /// `past.N.v`).
    held: Resident,
    prefill_out: Outputs,
    step_out: Outputs,
    tokens_input: String,
    geometry: Geometry,
    context: usize,
    sequences: HashMap<SeqId, Sequence>,
    /// The shared cache of the last step and which sequence each row holds (`None`
    /// for a row whose sequence left).
    batch: Caches,
    rows: Vec<Option<SeqId>>,
    next_id: u64,
}

impl Engine {
    /// An engine from the compiled prefill and decode programs of one model, its
    /// weights `(name, shape, values)`, and the longest sequence allowed.
    pub fn new(
        prefill: CpuProgram,
        step: CpuProgram,
        weights: Vec<(String, Vec<usize>, WeightData)>,
        context: usize,
    ) -> Result<Engine, DecodeError> {
        let g = &step.schedule().graph;
        let attentions = g
            .inputs()
            .filter(|&id| g.value(id).name.starts_with("past.") && g.value(id).name.ends_with(".k"))
            .count();
        let missing = |what: &str| DecodeError::Interface {
            program: "decode",
            what: what.to_string(),
        };
        let first = g
            .find("past.0.k")
            .ok_or_else(|| missing("input 'past.0.k'"))?;
        let dims = g.ty(first).dims();
        let (heads, head_dim) = match (
            dims.len(),
            dims.get(1).and_then(|d| d.as_static()),
            dims.get(3).and_then(|d| d.as_static()),
        ) {
            (4, Some(h), Some(d)) => (h as usize, d as usize),
            _ => return Err(missing("cache input of type f32[B, heads, past, head_dim]")),
        };
        let tokens_input = g
            .inputs()
            .find(|&id| g.ty(id).dtype.is_int() && g.ty(id).rank() == 2)
            .map(|id| g.value(id).name.clone())
            .ok_or_else(|| missing("integer token input [B, T]"))?;
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
            geometry: Geometry {
                heads,
                head_dim,
                buffers: 2 * attentions,
            },
            context,
            sequences: HashMap::new(),
            batch: Caches::default(),
            rows: Vec::new(),
            next_id: 0,
        })
    }

    /// Bytes of the weights as held (quantised ones at their block size).
    pub fn weight_bytes(&self) -> usize {
        self.held.size_bytes()
    }

    /// Bytes of every cache held, allocated but unfilled positions included.
    pub fn cache_bytes(&self) -> usize {
        let alone: usize = self
            .sequences
            .values()
            .map(|s| match &s.place {
                Place::Alone(c) => c.size_bytes(),
                Place::Batched(_) => 0,
            })
            .sum();
        alone + self.batch.size_bytes()
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
        self.sequences.insert(
            id,
            Sequence {
                len: 0,
                place: Place::Alone(Caches::default()),
            },
        );
        id
    }

    /// A new sequence with a copy of `id`'s tokens so far (choices that share a prompt).
    pub fn fork(&mut self, id: SeqId) -> SeqId {
        let (len, cache) = match self.sequences.get(&id) {
            Some(s) => (s.len, self.cache_of(s)),
            None => (0, Caches::default()),
        };
        let copy = self.start();
        let s = self.sequences.get_mut(&copy).expect("just started");
        s.len = len;
        s.place = Place::Alone(cache);
        copy
    }

    /// Tokens in sequence `id`'s cache (0 for an unknown one).
    pub fn len(&self, id: SeqId) -> usize {
        self.sequences.get(&id).map_or(0, |s| s.len)
    }

    /// Forgets sequence `id` and frees its cache.
    pub fn remove(&mut self, id: SeqId) {
        if let Some(Sequence {
            place: Place::Batched(row),
            ..
        }) = self.sequences.remove(&id)
        {
            self.rows[row] = None;
        }
        if self.rows.iter().all(Option::is_none) {
            self.rows.clear();
            self.batch = Caches::default();
        }
    }

    /// Appends `tokens` to sequence `id` (a whole prompt, a chunk of one, or tokens
    /// after it) and returns the logits of every new position, `[n, vocab]`.
    pub fn feed(&mut self, id: SeqId, tokens: &[u32]) -> Result<Vec<Vec<f32>>, DecodeError> {
        let len = self.check(id, tokens.len())?;
        let mut cache = self.take_alone(id);
        let ran = self.run(&mut cache, &[len], tokens);
        let s = self.sequences.get_mut(&id).expect("checked");
        s.place = Place::Alone(cache);
        let logits = ran?;
        s.len += tokens.len();
        Ok(logits)
    }

    /// Appends one token to each sequence of `next` in one batched run and returns each
    /// one's logits for its next position, in the same order.
    pub fn step(&mut self, next: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, DecodeError> {
        if next.is_empty() {
            return Ok(Vec::new());
        }
        let mut lens = Vec::with_capacity(next.len());
        for &(id, _) in next {
            lens.push(self.check(id, 1)?);
        }
        let order: Vec<Option<SeqId>> = next.iter().map(|&(id, _)| Some(id)).collect();
        if order != self.rows {
            self.regroup(&order);
        }
        let tokens: Vec<u32> = next.iter().map(|&(_, t)| t).collect();
        let mut batch = std::mem::take(&mut self.batch);
        let ran = self.run(&mut batch, &lens, &tokens);
        self.batch = batch;
        let logits = ran?;
        for &(id, _) in next {
            self.sequences.get_mut(&id).expect("checked").len += 1;
        }
        Ok(logits)
    }

    /// The length of sequence `id` before `n` more tokens, if they fit.
    fn check(&self, id: SeqId, n: usize) -> Result<usize, DecodeError> {
        if n == 0 {
            return Err(DecodeError::Empty);
        }
        let len = self.sequences.get(&id).ok_or(DecodeError::Unknown)?.len;
        if len + n > self.context {
            return Err(DecodeError::Context {
                len: len + n,
                context: self.context,
            });
        }
        Ok(len)
    }

    /// A copy of sequence `s`'s cache as a one-row cache.
    fn cache_of(&self, s: &Sequence) -> Caches {
        match &s.place {
            Place::Alone(c) => c.clone(),
            Place::Batched(row) => {
                Caches::gather(self.geometry, [(&self.batch, *row, s.len)].into_iter(), 0)
            }
        }
    }

    /// Sequence `id`'s cache as its own, taken out of the batch if it is there.
    fn take_alone(&mut self, id: SeqId) -> Caches {
        let s = self.sequences.get(&id).expect("checked");
        if let Place::Batched(row) = s.place {
            let cache = self.cache_of(s);
            self.rows[row] = None;
            return cache;
        }
        match &mut self.sequences.get_mut(&id).expect("checked").place {
            Place::Alone(c) => std::mem::take(c),
            Place::Batched(_) => unreachable!("handled above"),
        }
    }

    /// Makes the batch hold the sequences `order` in that order: rows of sequences
    /// that stay are copied, those of sequences not in `order` move to caches of
    /// their own, and sequences that join bring theirs.
    fn regroup(&mut self, order: &[Option<SeqId>]) {
        let old = std::mem::take(&mut self.batch);
        let old_rows = std::mem::take(&mut self.rows);
        for (row, id) in old_rows.iter().enumerate() {
            let Some(id) = id else { continue };
            if order.contains(&Some(*id)) {
                continue;
            }
            let s = self
                .sequences
                .get_mut(id)
                .expect("rows hold live sequences");
            let alone = Caches::gather(self.geometry, [(&old, row, s.len)].into_iter(), 0);
            s.place = Place::Alone(alone);
        }
        let empty = Caches::default();
        let sources: Vec<(&Caches, usize, usize)> = order
            .iter()
            .map(|id| {
                let s = &self.sequences[&id.expect("steps name live sequences")];
                match &s.place {
                    Place::Batched(row) => (&old, *row, s.len),
                    Place::Alone(c) => (c, 0, s.len),
                }
            })
            .map(|(c, row, len)| {
                if len == 0 {
                    (&empty, 0, 0)
                } else {
                    (c, row, len)
                }
            })
            .collect();
        self.batch = Caches::gather(self.geometry, sources.into_iter(), 0);
        for (row, id) in order.iter().enumerate() {
            let s = self.sequences.get_mut(&id.expect("checked")).expect("live");
            s.place = Place::Batched(row);
        }
        self.rows = order.to_vec();
    }

    /// Runs `tokens` (`n` per row, rows of lengths `lens`) through the prefill program
    /// (a cache with nothing yet) or the decode program, and appends their keys and
    /// values to `cache`. Returns the logits, one row per token.
    fn run(
        &mut self,
        cache: &mut Caches,
        lens: &[usize],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, DecodeError> {
        let rows = lens.len();
        let n = tokens.len() / rows;
        let ids = tokens.iter().map(|&t| i64::from(t)).collect();
        let mut feeds = HashMap::from([(
            self.tokens_input.clone(),
            Tensor::from_i64(DType::I32, vec![rows, n], ids),
        )]);
        let first = lens.iter().all(|&l| l == 0);
        let (program, outputs) = if first {
            (&self.prefill, &self.prefill_out)
        } else {
            let past = lens.iter().map(|&l| l as i64).collect();
            feeds.insert(
                "past_len".into(),
                Tensor::from_i64(DType::I32, vec![rows], past),
            );
            (&self.step, &self.step_out)
        };
        // The caches are lent to the held values for the run, and always taken back.
        let shape = cache.shape(self.geometry);
        let lent = !first;
        if lent {
            for (i, buffer) in std::mem::take(&mut cache.buffers).into_iter().enumerate() {
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
        if lent {
            cache.buffers = (0..self.geometry.buffers)
                .map(|i| self.held.take_input(&cache_name(i)).unwrap_or_default())
                .collect();
        }
        let (out, _) = ran?;
        let new: Vec<&[f64]> = outputs
            .cache
            .iter()
            .flat_map(|&(k, v)| [out[k].floats(), out[v].floats()])
            .collect();
        cache.append(self.geometry, &new, lens, n);
        let logits = out[outputs.logits].floats();
        let vocab = logits.len() / (rows * n);
        Ok(logits
            .chunks(vocab)
            .map(|row| row.iter().map(|&x| x as f32).collect())
            .collect())
    }
}

/// The decode program's input for cache buffer `i` (two per attention: keys, values).
fn cache_name(i: usize) -> String {
    let part = if i % 2 == 0 { "k" } else { "v" };
    format!("past.{}.{part}", i / 2)
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
