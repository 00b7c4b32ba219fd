//! The paged KV cache, as vLLM keeps it: for each cached attention and part (keys,
//! values) one buffer of blocks `[blocks, heads, block, head_dim]`, shared by every
//! sequence. A sequence owns a list of blocks, its positions in order; the decode
//! program reads them through its row of the block table. The pool grows on demand
//! up to its limit, so memory follows the positions held, not the longest sequence.
//!
//! Full blocks are shared: a block is counted by every sequence that holds it (choices
//! forked from one prompt), and a full block is registered under the hash of the tokens
//! up to its end, so a later prompt that starts with the same tokens reuses it instead
//! of computing it again (vLLM's prefix caching). A prompt that shares only the start
//! of the next block copies the registered block with the longest common start and
//! reuses those positions, so reuse goes to the token, not to the block. Registered
//! blocks nobody holds stay cached until the pool needs them, taken in the order they
//! were first let go.

use std::collections::{HashMap, VecDeque};

/// The sizes every buffer shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    /// Key/value heads.
    pub heads: usize,
    /// Values per head and position.
    pub head_dim: usize,
    /// Positions per block.
    pub block: usize,
    /// Buffers: two per cached attention (keys, then values).
    pub buffers: usize,
}

impl Geometry {
    /// Floats of one block in one buffer.
    fn block_floats(&self) -> usize {
        self.heads * self.block * self.head_dim
    }
}

/// What a registered block holds.
#[derive(Clone, Debug)]
struct Registered {
    /// The prefix hash of the blocks before it (0 for a first block).
    parent: u64,
    /// The prefix hash up to its end.
    hash: u64,
    tokens: Vec<u32>,
}

/// The pool is full: no block is free and it may not grow.
#[derive(Debug)]
pub(crate) struct Full;

/// Blocks of cached keys and values.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// One buffer per attention and part, in [`Geometry::buffers`] order.
    pub buffers: Vec<Vec<f32>>,
    /// Blocks allocated in every buffer.
    pub blocks: usize,
    /// The most blocks allowed.
    limit: usize,
    /// Unheld, unregistered blocks.
    free: Vec<u32>,
    /// Holders of each block.
    refs: Vec<u32>,
    /// Blocks with at least one holder.
    held: usize,
    /// Registered full blocks by prefix hash, and what each holds.
    by_prefix: HashMap<u64, u32>,
    prefix_of: Vec<Option<Registered>>,
    /// Registered blocks by the prefix hash of the blocks before them: the candidates
    /// for a prompt that shares only the start of a block.
    by_parent: HashMap<u64, Vec<u32>>,
    /// Registered blocks nobody holds, in the order they were queued (entries may be
    /// stale: checked when taken); each block at most once (`queued`), so the queue
    /// never outgrows the pool however often a block is held and let go.
    idle: VecDeque<u32>,
    queued: Vec<bool>,
}

/// Blocks the pool starts with, and the least it grows by.
const FIRST_BLOCKS: usize = 16;

impl Pool {
    /// An empty pool of at most `limit` blocks (at least one).
    pub fn new(limit: usize) -> Pool {
        Pool {
            limit: limit.max(1),
            ..Pool::default()
        }
    }

    /// The shape of each buffer.
    pub fn shape(&self, geo: Geometry) -> Vec<usize> {
        vec![self.blocks, geo.heads, geo.block, geo.head_dim]
    }

    /// Blocks held by sequences.
    pub fn used(&self) -> usize {
        self.held
    }

    /// Bytes allocated.
    pub fn size_bytes(&self) -> usize {
        self.buffers.iter().map(|b| b.len() * 4).sum()
    }

    /// `n` blocks, each held once: free ones first, then new ones while the pool may
    /// grow, then the oldest cached ones nobody holds.
    pub fn allocate(&mut self, geo: Geometry, n: usize) -> Result<Vec<u32>, Full> {
        if self.free.len() < n && self.blocks < self.limit {
            let wanted = self.blocks + n - self.free.len();
            let grown = wanted
                .max(2 * self.blocks)
                .max(FIRST_BLOCKS)
                .min(self.limit);
            self.buffers.resize_with(geo.buffers, Vec::new);
            for b in &mut self.buffers {
                b.resize(grown * geo.block_floats(), 0.0);
            }
            self.refs.resize(grown, 0);
            self.prefix_of.resize(grown, None);
            self.queued.resize(grown, false);
            self.free.extend((self.blocks as u32..grown as u32).rev());
            self.blocks = grown;
        }
        while self.free.len() < n {
            let Some(b) = self.idle.pop_front() else {
                return Err(Full);
            };
            self.queued[b as usize] = false;
            if self.refs[b as usize] == 0 {
                if let Some(gone) = self.prefix_of[b as usize].take() {
                    self.by_prefix.remove(&gone.hash);
                    if let Some(siblings) = self.by_parent.get_mut(&gone.parent) {
                        siblings.retain(|&s| s != b);
                        if siblings.is_empty() {
                            self.by_parent.remove(&gone.parent);
                        }
                    }
                    self.free.push(b);
                }
            }
        }
        let taken = self.free.split_off(self.free.len() - n);
        for &b in &taken {
            self.refs[b as usize] = 1;
        }
        self.held += n;
        Ok(taken)
    }

    /// One more holder of `block`.
    pub fn share(&mut self, block: u32) {
        let r = &mut self.refs[block as usize];
        if *r == 0 {
            self.held += 1;
        }
        *r += 1;
    }

    /// One holder fewer of each of `blocks`; a block nobody holds is free again, or
    /// stays cached if registered.
    pub fn release(&mut self, blocks: &[u32]) {
        for &b in blocks {
            let r = &mut self.refs[b as usize];
            *r -= 1;
            if *r == 0 {
                self.held -= 1;
                if self.prefix_of[b as usize].is_some() {
                    if !self.queued[b as usize] {
                        self.queued[b as usize] = true;
                        self.idle.push_back(b);
                    }
                } else {
                    self.free.push(b);
                }
            }
        }
    }

    /// Registers full block `block`, holding `tokens`, under `hash` (the hash of every
    /// token up to its end; `parent` is that of the blocks before it), unless a block
    /// is registered under it already.
    pub fn register(&mut self, block: u32, (parent, hash): (u64, u64), tokens: &[u32]) {
        if self.prefix_of[block as usize].is_none() && !self.by_prefix.contains_key(&hash) {
            self.by_prefix.insert(hash, block);
            self.by_parent.entry(parent).or_default().push(block);
            self.prefix_of[block as usize] = Some(Registered {
                parent,
                hash,
                tokens: tokens.to_vec(),
            });
        }
    }

    /// Of the registered blocks that follow prefix hash `parent`, the one whose tokens
    /// start with the longest run of `tokens`, and that run's length (at least 1).
    pub fn longest_start(&self, parent: u64, tokens: &[u32]) -> Option<(u32, usize)> {
        self.by_parent
            .get(&parent)?
            .iter()
            .filter_map(|&b| {
                let held = &self.prefix_of[b as usize].as_ref()?.tokens;
                let common = held.iter().zip(tokens).take_while(|(a, b)| a == b).count();
                (common > 0).then_some((b, common))
            })
            .max_by_key(|&(b, common)| (common, std::cmp::Reverse(b)))
    }

    /// The registered block of prefix hash `hash`, if it holds `tokens`.
    pub fn lookup(&self, hash: u64, tokens: &[u32]) -> Option<u32> {
        let &b = self.by_prefix.get(&hash)?;
        match &self.prefix_of[b as usize] {
            Some(r) if r.tokens == tokens => Some(b),
            _ => None,
        }
    }

    /// Copies the contents of block `from` into block `to`.
    pub fn copy(&mut self, geo: Geometry, from: u32, to: u32) {
        let n = geo.block_floats();
        for b in &mut self.buffers {
            b.copy_within(from as usize * n..(from as usize + 1) * n, to as usize * n);
        }
    }

    /// Writes new positions of each sequence: `new[i]` holds buffer `i`'s values
    /// `[rows, heads, n, head_dim]`; the first `counts[r]` of row `r` go to positions
    /// `lens[r]..` of the blocks `tables[r]` (the rest is padding).
    pub fn write(
        &mut self,
        geo: Geometry,
        new: &[&[f64]],
        tables: &[&[u32]],
        (lens, counts): (&[usize], &[usize]),
        n: usize,
    ) {
        let (heads, d, size) = (geo.heads, geo.head_dim, geo.block);
        for (buffer, new) in self.buffers.iter_mut().zip(new) {
            for (r, (table, &len)) in tables.iter().zip(lens).enumerate() {
                for t in 0..counts[r] {
                    let p = len + t;
                    let block = table[p / size] as usize;
                    for h in 0..heads {
                        let at = ((block * heads + h) * size + p % size) * d;
                        let from = ((r * heads + h) * n + t) * d;
                        for (c, &x) in buffer[at..at + d].iter_mut().zip(&new[from..from + d]) {
                            *c = x as f32;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: Geometry = Geometry {
        heads: 2,
        head_dim: 3,
        block: 4,
        buffers: 2,
    };

    #[test]
    fn blocks_grow_to_the_limit_are_reused_and_hold_their_rows() {
        let mut pool = Pool::new(20);
        let a = pool.allocate(GEO, 3).unwrap();
        assert_eq!((pool.blocks, pool.used()), (FIRST_BLOCKS, 3));
        // Two rows: a at 0..6, b at 0..2 then 2..3.
        let b = pool.allocate(GEO, 1).unwrap();
        let rows = |lens: &[usize], n: usize| -> Vec<Vec<f64>> {
            (0..2)
                .map(|buf| {
                    let mut v = Vec::new();
                    for (r, &len) in lens.iter().enumerate() {
                        for h in 0..2 {
                            for p in len..len + n {
                                v.extend((0..3).map(|i| {
                                    (buf * 1000 + r * 100 + h * 10 + p) as f64 + i as f64 / 10.0
                                }));
                            }
                        }
                    }
                    v
                })
                .collect()
        };
        let new = rows(&[0, 0], 2);
        pool.write(GEO, &[&new[0], &new[1]], &[&a, &b], (&[0, 0], &[2, 2]), 2);
        let at = |block: u32, h: usize, slot: usize| ((block as usize * 2 + h) * 4 + slot) * 3;
        assert_eq!(pool.buffers[1][at(b[0], 1, 1)], 1000.0 + 100.0 + 10.0 + 1.0);
        let new = rows(&[2], 4);
        pool.write(GEO, &[&new[0], &new[1]], &[&a], (&[2], &[4]), 4);
        // Position 5 of row 0 is in its second block, slot 1.
        assert_eq!(pool.buffers[0][at(a[1], 0, 1) + 2], 5.2);
        pool.copy(GEO, a[1], b[0]);
        assert_eq!(pool.buffers[0][at(b[0], 0, 1) + 2], 5.2);
        pool.release(&a);
        assert_eq!(pool.used(), 1);
        // Past the limit of 20 blocks: refused.
        assert!(pool.allocate(GEO, 20).is_err());
        assert_eq!(pool.allocate(GEO, 19).unwrap().len(), 19);
        assert_eq!(pool.blocks, 20);
    }

    #[test]
    fn shared_blocks_live_while_held_and_cached_ones_are_taken_last() {
        let mut pool = Pool::new(3);
        let a = pool.allocate(GEO, 2).unwrap();
        pool.register(a[0], (0, 7), &[1, 2, 3, 4]);
        pool.share(a[0]);
        pool.release(&a);
        assert_eq!(pool.used(), 1, "a[0] still has a holder");
        assert_eq!(pool.lookup(7, &[1, 2, 3, 4]), Some(a[0]));
        assert_eq!(pool.lookup(7, &[1, 2, 3, 5]), None, "tokens are checked");
        pool.release(&a[..1]);
        assert_eq!(pool.used(), 0);
        for _ in 0..100 {
            pool.share(a[0]);
            pool.release(&a[..1]);
        }
        assert_eq!(pool.idle.len(), 1);
        // The cached block survives while free ones last, then is taken.
        let b = pool.allocate(GEO, 2).unwrap();
        assert!(!b.contains(&a[0]) && pool.lookup(7, &[1, 2, 3, 4]).is_some());
        let c = pool.allocate(GEO, 1).unwrap();
        assert_eq!(c, vec![a[0]]);
        assert_eq!(pool.lookup(7, &[1, 2, 3, 4]), None);
        assert_eq!(pool.longest_start(0, &[1, 2]), None, "gone with its block");
        assert!(pool.allocate(GEO, 1).is_err());
    }

    /// A prompt that shares only the start of a block finds the registered block after
    /// the same prefix with the longest common start.
    #[test]
    fn the_longest_common_start_among_a_prefix_s_next_blocks() {
        let mut pool = Pool::new(8);
        let a = pool.allocate(GEO, 3).unwrap();
        pool.register(a[0], (5, 11), &[1, 2, 3, 4]);
        pool.register(a[1], (5, 12), &[1, 2, 9, 9]);
        pool.register(a[2], (6, 13), &[1, 2, 3, 4]);
        assert_eq!(pool.longest_start(5, &[1, 2, 3, 7]), Some((a[0], 3)));
        assert_eq!(pool.longest_start(5, &[1, 2, 9]), Some((a[1], 3)));
        assert_eq!(pool.longest_start(5, &[1, 8]), Some((a[0].min(a[1]), 1)));
        assert_eq!(pool.longest_start(5, &[2]), None);
        assert_eq!(pool.longest_start(7, &[1]), None, "another prefix");
    }
}
