//! Lowering a model for inference ([`Mode::Infer`]) and for cached decoding
//! ([`Mode::Prefill`] and [`Mode::Decode`]).
//!
//! The model is written once, for training (`attention(q, k, v, causal=true)` over the
//! whole sequence, `rope(x)` at positions `0..T`). For decoding, the same source is
//! lowered again with each causal attention call made to:
//! - **prefill**: return its keys and values (before grouped heads are repeated) as
//!   outputs `present.N.k` / `present.N.v`, `[B, KV heads, T, D]`, for the cache;
//! - **decode**: read the cached ones from a paged cache, as vLLM keeps it: inputs
//!   `cache.N.k` / `cache.N.v`, `[blocks, KV heads, BLOCK_POSITIONS, D]`, hold blocks of
//!   positions of every sequence, and row `b` of `block_table: i32[B, pages]` lists the
//!   blocks of sequence `b` in order. The new tokens attend to the cached positions
//!   and to each other. They sit at positions `past_len[b] + t` (input
//!   `past_len: i32[B]`), which both `rope` and the mask use, so sequences of different
//!   lengths share one batch: positions at or after a row's `past_len` (the rest of its
//!   last block, and padding entries of its table) are masked out. The caller writes
//!   the new keys and values (`present.N.k`/`v`) into the blocks after each run.
//!
//! The decode attention is the composite `paged_attention` (defined, like every
//! composite, by its decomposition in the compiler: a gather of each row's blocks and
//! one softmax over cached and new keys with one shared maximum); the query heads that
//! share a key/value head are stacked along its rows, so the cache is read once per
//! key/value head, never repeated. The CPU backend keeps it whole and reads the blocks
//! in place.

use super::error::{LangError, LangResult};
use super::lower::Lowerer;
use smelt_compiler::ir::ops::{BinaryOp, Composite};
use smelt_compiler::ir::text::Pos;
use smelt_compiler::ir::{DType, Dim, Op, Shape, TensorType, ValueId};

/// What a `.smelt` model is lowered for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The model as written: every output and the loss (training, plain inference).
    #[default]
    Full,
    /// Inference: every output, without the loss (and the inputs only it used).
    Infer,
    /// A whole prompt: the outputs without the loss, plus every causal attention's keys
    /// and values (`present.N.k`, `present.N.v`) to start a KV cache.
    Prefill,
    /// New tokens after cached ones: inputs `past_len: i32[B]` and `past.N.k`,
    /// `past.N.v`; outputs as in [`Mode::Prefill`], with only the new positions' keys
    /// and values.
    Decode,
    /// As [`Mode::Prefill`], with each output (`[B, T, ...]`) only at each row's last
    /// new token (`[B, 1, ...]`), named by the input `last_token: i32[B]`: what
    /// generating needs, without the head's products at every prompt position.
    PrefillLast,
    /// As [`Mode::Decode`], with outputs as in [`Mode::PrefillLast`].
    DecodeLast,
}

/// Positions per block of the paged cache of [`Mode::Decode`].
pub const BLOCK_POSITIONS: u64 = 16;

/// The symbolic axis of [`Mode::Decode`]'s cache blocks.
pub const BLOCKS_AXIS: &str = "blocks";
/// The symbolic axis of [`Mode::Decode`]'s block table: entries (pages) per sequence.
pub const PAGES_AXIS: &str = "pages";

impl Mode {
    /// True for the modes that read or write a KV cache.
    pub fn caches(self) -> bool {
        self.starts_cache() || self.reads_cache()
    }

    /// True for the modes that start a KV cache from a whole prompt.
    pub fn starts_cache(self) -> bool {
        matches!(self, Mode::Prefill | Mode::PrefillLast)
    }

    /// True for the modes that read a paged KV cache.
    pub fn reads_cache(self) -> bool {
        matches!(self, Mode::Decode | Mode::DecodeLast)
    }

    /// True for the modes whose outputs are taken at each row's last new token only.
    pub fn last_token_only(self) -> bool {
        matches!(self, Mode::PrefillLast | Mode::DecodeLast)
    }
}

impl Lowerer<'_> {
    /// `x [B, Hk, T, D]` with each head repeated to make `heads` heads (grouped-query
    /// attention: consecutive query heads share one key/value head).
    pub(super) fn repeat_heads(
        &mut self,
        x: ValueId,
        heads: &Dim,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let xt = self.ty(x);
        let r = xt.rank();
        let have = &xt.dims()[r - 3];
        if have == heads {
            return Ok(x);
        }
        let (Some(h), Some(g)) = (heads.as_static(), have.as_static()) else {
            return Err(LangError::new(pos, format!("attention: grouped heads need static head counts, found {heads} query and {have} key heads")));
        };
        if g == 0 || h % g != 0 {
            return Err(LangError::new(
                pos,
                format!("attention: {h} query heads cannot share {g} key/value heads evenly"),
            ));
        }
        let mut grouped = xt.dims().to_vec();
        grouped.insert(r - 2, Dim::fixed(1));
        let one = self.reshape(x, Shape(grouped.clone()), pos)?;
        grouped[r - 2] = Dim::fixed(h / g);
        let spread = self.broadcast_to(one, &Shape(grouped), pos)?;
        let mut out = xt.dims().to_vec();
        out[r - 3] = heads.clone();
        self.reshape(spread, Shape(out), pos)
    }

    /// `attention(q, k, v)` in a cache mode: records the keys and values for the cache
    /// and, when decoding, attends to the cached ones too.
    pub(super) fn cached_attention(
        &mut self,
        [q, k, v]: [ValueId; 3],
        causal: bool,
        scale: f64,
        pos: Pos,
    ) -> LangResult<ValueId> {
        if !causal {
            return Err(LangError::new(
                pos,
                "attention: decoding with a KV cache needs causal attention (causal=true)",
            ));
        }
        let (qt, kt) = (self.ty(q), self.ty(k));
        if qt.rank() != 4 || kt.rank() != 4 || self.ty(v).rank() != 4 {
            return Err(LangError::new(
                pos,
                format!("attention: decoding with a KV cache needs [B, heads, T, D] operands, found {qt}"),
            ));
        }
        let layer = self.cache_outputs.len() / 2;
        for (part, value) in [("k", k), ("v", v)] {
            let named = self.fresh_value(value, pos)?;
            self.cache_outputs
                .push((format!("present.{layer}.{part}"), named));
        }
        let heads = qt.dims()[1].clone();
        if self.mode.starts_cache() {
            let (kr, vr) = (
                self.repeat_heads(k, &heads, pos)?,
                self.repeat_heads(v, &heads, pos)?,
            );
            let attn = Composite::Attention { causal, scale };
            return self.node(Op::Composite(attn), &[q, kr, vr], None, pos);
        }
        let out = self.decode_attention([q, k, v], layer, scale, pos)?;
        self.reshape(out, qt.shape.clone(), pos)
    }

    /// Decode-mode attention of `q [B, H, T, D]` over the cached keys and values of
    /// attention `layer` and the new ones (`k`, `v`, `[B, G, T, D]`). The `H / G` query
    /// heads that share a key/value head are stacked along the rows (`[B, G, H/G·T, D]`),
    /// so the cache is read once per group and never repeated. Returns `[B, G, H/G·T, D]`.
    fn decode_attention(
        &mut self,
        [q, k, v]: [ValueId; 3],
        layer: usize,
        scale: f64,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let (qt, kt) = (self.ty(q), self.ty(k));
        let [batch, heads, t, d] = [0, 1, 2, 3].map(|i| qt.dims()[i].clone());
        let groups = kt.dims()[1].clone();
        let per_group = match (heads.as_static(), groups.as_static()) {
            (Some(h), Some(g)) if g > 0 && h % g == 0 => h / g,
            _ => {
                return Err(LangError::new(
                    pos,
                    format!(
                    "attention: {heads} query heads cannot share {groups} key/value heads evenly"
                ),
                ))
            }
        };
        let rows = t
            .mul(&Dim::fixed(per_group))
            .map_err(|e| LangError::new(pos, e.to_string()))?;
        let grouped = Shape(vec![batch.clone(), groups.clone(), rows, d]);
        let qg = self.reshape(q, grouped, pos)?;
        let past_len = self.past_len(&batch, pos)?;
        let table = self.block_table(&batch, pos)?;
        let mut caches = Vec::new();
        for (part, now) in [("k", k), ("v", v)] {
            let nt = self.ty(now);
            let block = Shape(vec![
                Dim::sym(BLOCKS_AXIS),
                groups.clone(),
                Dim::fixed(BLOCK_POSITIONS),
                nt.dims()[3].clone(),
            ]);
            let name = format!("cache.{layer}.{part}");
            let cache = self
                .b
                .input(&name, TensorType::new(nt.dtype, block))
                .map_err(|e| LangError::new(pos, e.to_string()))?;
            caches.push(cache);
        }
        let attention = Composite::PagedAttention { scale };
        self.node(
            Op::Composite(attention),
            &[qg, k, v, caches[0], caches[1], table, past_len],
            None,
            pos,
        )
    }

    /// Positions `past_len[b] + t` as floats `[B, 1, ..., 1, T, 1]` (rank of `x`), for
    /// RoPE when decoding.
    pub(super) fn decode_positions(&mut self, xt: &TensorType, pos: Pos) -> LangResult<ValueId> {
        let r = xt.rank();
        if r < 3 {
            return Err(LangError::new(
                pos,
                format!("rope: decoding with a KV cache needs [B, ..., T, D], found {xt}"),
            ));
        }
        let (batch, t) = (xt.dims()[0].clone(), xt.dims()[r - 2].clone());
        let past_len = self.past_len(&batch, pos)?;
        let bt = TensorType::new(DType::I32, Shape(vec![batch.clone(), t.clone()]));
        let offset = self.node(Op::Iota { axis: 1 }, &[], Some(bt.clone()), pos)?;
        let start = self.node(
            Op::Broadcast { dims: vec![0] },
            &[past_len],
            Some(bt.clone()),
            pos,
        )?;
        let at = self.node(Op::Binary(BinaryOp::Add), &[start, offset], None, pos)?;
        let at = self.node(Op::Cast, &[at], Some(bt.with_dtype(xt.dtype)), pos)?;
        let mut dims = vec![Dim::fixed(1); r];
        dims[0] = batch;
        dims[r - 2] = t;
        self.reshape(at, Shape(dims), pos)
    }

    /// The input `past_len: i32[B]`, declared on first use.
    fn past_len(&mut self, batch: &Dim, pos: Pos) -> LangResult<ValueId> {
        if let Some(id) = self.past_len {
            if &self.ty(id).dims()[0] != batch {
                return Err(LangError::new(
                    pos,
                    format!("decoding: batch axis {batch} differs from an earlier one"),
                ));
            }
            return Ok(id);
        }
        let ty = TensorType::new(DType::I32, Shape(vec![batch.clone()]));
        let id = self
            .b
            .input("past_len", ty)
            .map_err(|e| LangError::new(pos, e.to_string()))?;
        self.past_len = Some(id);
        Ok(id)
    }

    /// The input `block_table: i32[B, pages]`, declared on first use.
    fn block_table(&mut self, batch: &Dim, pos: Pos) -> LangResult<ValueId> {
        if let Some(id) = self.block_table {
            return Ok(id);
        }
        let ty = TensorType::new(DType::I32, Shape(vec![batch.clone(), Dim::sym(PAGES_AXIS)]));
        let id = self
            .b
            .input("block_table", ty)
            .map_err(|e| LangError::new(pos, e.to_string()))?;
        self.block_table = Some(id);
        Ok(id)
    }
}
