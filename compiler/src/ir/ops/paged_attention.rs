//! `paged_attention`: causal attention of new tokens over a paged KV cache and over
//! themselves, as a decode step (or a chunk of a prompt after cached tokens) needs it.
//!
//! Operands, with `G` key/value heads, `T` new tokens and the `H/G` query heads that
//! share a key/value head stacked along the rows (`R = H/G · T`, row `h·T + t` is
//! query head `h` at new token `t`):
//!
//! | operand | type | |
//! |---|---|---|
//! | `q` | `[B, G, R, D]` | the new tokens' queries |
//! | `k`, `v` | `[B, G, T, D]`, `[B, G, T, Dv]` | their keys and values |
//! | `cache_k`, `cache_v` | `[N, G, P, D]`, `[N, G, P, Dv]` | `N` blocks of `P` positions |
//! | `block_table` | integer `[B, pages]` | row `b`'s blocks, in order |
//! | `past_len` | integer `[B]` | row `b`'s cached positions |
//!
//! Result `[B, G, R, Dv]`. Row `b` sees its cached positions `0..past_len[b]` (read
//! through its block table; later positions of its last block and padding entries
//! of the table are masked out) and new tokens up to its own. One softmax runs over
//! both, with one shared maximum.
//!
//! The decomposition gathers every row's blocks into a contiguous copy and computes
//! the scores of both parts in full; a backend that keeps the op whole reads the
//! blocks in place, once per key/value head.

use super::{expect_arity, BinaryOp, CompareOp, Op, ReduceOp, ShapeResult, UnaryOp};
use crate::ir::{Builder, Shape, TensorType, ValueId};

/// The type rule (see the module docs for the operands).
pub(super) fn infer(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 7)?;
    let [q, k, v, ck, cv, table, past] = [x[0], x[1], x[2], x[3], x[4], x[5], x[6]];
    let fail = || {
        Err(format!(
            "'paged_attention' needs q [B, G, R, D], k [B, G, T, D], v [B, G, T, Dv], caches [N, G, P, D] and [N, G, P, Dv] of one float dtype, an integer block table [B, pages] and integer lengths [B]; found {q}, {k}, {v}, {ck}, {cv}, {table}, {past}"
        ))
    };
    let ranks =
        [q, k, v, ck, cv].iter().all(|t| t.rank() == 4) && table.rank() == 2 && past.rank() == 1;
    if !ranks
        || !q.dtype.is_float()
        || [k, v, ck, cv].iter().any(|t| t.dtype != q.dtype)
        || !table.dtype.is_int()
        || !past.dtype.is_int()
    {
        return fail();
    }
    let d = |t: &TensorType, i: usize| t.dims()[i].clone();
    let batch = d(q, 0);
    let same_batch = [k, v, table, past].iter().all(|t| d(t, 0) == batch);
    let same_heads = [k, v, ck, cv].iter().all(|t| d(t, 1) == d(q, 1));
    let same_width = d(k, 3) == d(q, 3) && d(ck, 3) == d(q, 3) && d(cv, 3) == d(v, 3);
    let same_tokens = d(v, 2) == d(k, 2) && d(ck, 0) == d(cv, 0) && d(ck, 2) == d(cv, 2);
    let stacked = d(q, 2)
        .div_exact(&d(k, 2))
        .is_some_and(|g| g.as_static().is_some());
    if !(same_batch && same_heads && same_width && same_tokens && stacked)
        || d(ck, 2).as_static().is_none()
    {
        return fail();
    }
    let mut out = q.clone();
    out.shape.0[3] = d(v, 3);
    Ok(out)
}

/// The definition, in primitives (operands as in the module docs).
pub(super) fn decompose(b: &mut Builder, x: &[ValueId], scale: f64) -> ValueId {
    let [q, k, v, cache_k, cache_v, table, past_len] = [x[0], x[1], x[2], x[3], x[4], x[5], x[6]];
    let qt = b.ty(q).clone();
    let [batch, groups, rows, _] = [0, 1, 2, 3].map(|i| qt.dims()[i].clone());
    let t = b.ty(k).dims()[2].clone();
    let per_group = rows.div_exact(&t).expect("checked by infer");
    // Each row's cached positions in order: [B, pages, G, P, D] → [B, G, pages·P, D].
    let mut past = Vec::new();
    for cache in [cache_k, cache_v] {
        let ct = b.ty(cache).clone();
        let pages = b.add(Op::Gather { axis: 0 }, &[cache, table]);
        let heads_first = b.add(
            Op::Permute {
                perm: vec![0, 2, 1, 3, 4],
            },
            &[pages],
        );
        let positions = b.ty(table).dims()[1]
            .mul(&ct.dims()[2])
            .expect("a block table's positions fit");
        let flat = Shape(vec![
            batch.clone(),
            groups.clone(),
            positions,
            ct.dims()[3].clone(),
        ]);
        past.push(b.add_typed(Op::Reshape, &[heads_first], ct.with_shape(flat)));
    }
    // Scores of the cached keys, masked where a row's cache ends.
    let s_past = scores(b, q, past[0], scale);
    let at_key = b.ty(s_past).with_dtype(b.ty(past_len).dtype);
    let key = b.add_typed(Op::Iota { axis: 3 }, &[], at_key.clone());
    let limit = b.broadcast(past_len, vec![0], at_key);
    let valid = b.compare(CompareOp::Lt, key, limit);
    let s_past = masked(b, valid, s_past);
    // Scores of the new keys, causal among themselves: row `h·T + i` is token `i`.
    let s_new = scores(b, q, k, scale);
    let pairs = TensorType::new(
        crate::ir::DType::I32,
        Shape(vec![batch, groups, per_group, t.clone(), t]),
    );
    let query_at = b.add_typed(Op::Iota { axis: 3 }, &[], pairs.clone());
    let key_at = b.add_typed(Op::Iota { axis: 4 }, &[], pairs);
    let seen = b.compare(CompareOp::Ge, query_at, key_at);
    let seen_ty = b.ty(seen).with_shape(b.ty(s_new).shape.clone());
    let seen = b.add_typed(Op::Reshape, &[seen], seen_ty);
    let s_new = masked(b, seen, s_new);
    // One softmax over both parts.
    let m_past = b.reduce(ReduceOp::Max, s_past, vec![3]);
    let m_new = b.reduce(ReduceOp::Max, s_new, vec![3]);
    let m = b.binary(BinaryOp::Max, m_past, m_new);
    let mut weighted = Vec::new();
    let mut total = Vec::new();
    for (s, values) in [(s_past, past[1]), (s_new, v)] {
        let mb = b.broadcast_back(m, s, 3);
        let centred = b.binary(BinaryOp::Sub, s, mb);
        let e = b.unary(UnaryOp::Exp, centred);
        total.push(b.reduce(ReduceOp::Sum, e, vec![3]));
        weighted.push(b.add(Op::MatMul, &[e, values]));
    }
    let sum = b.binary(BinaryOp::Add, total[0], total[1]);
    let out = b.binary(BinaryOp::Add, weighted[0], weighted[1]);
    let sum = b.broadcast_back(sum, out, 3);
    b.binary(BinaryOp::Div, out, sum)
}

/// `q kᵀ · scale`.
fn scores(b: &mut Builder, q: ValueId, k: ValueId, scale: f64) -> ValueId {
    let kt = b.transpose_last(k);
    let s = b.add(Op::MatMul, &[q, kt]);
    b.binary_scalar(BinaryOp::Mul, s, scale)
}

/// `s` where `keep`, else `-inf`.
fn masked(b: &mut Builder, keep: ValueId, s: ValueId) -> ValueId {
    let hidden = b.splat(f64::NEG_INFINITY, b.ty(s).clone());
    b.add(Op::Select, &[keep, s, hidden])
}
