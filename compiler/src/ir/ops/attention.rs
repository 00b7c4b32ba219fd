//! Attention and its backward pass. `attention %q, %k, %v {causal, scale}` is
//! `softmax(S) v` with scores `S = q kᵀ · scale` (keys after the query masked to −∞
//! when `causal`). Its gradient is written with four more composites, the split a
//! flash-style backward needs (FlashAttention-2):
//!
//! | composite | operands | result |
//! |---|---|---|
//! | `attention_lse` | q, k | `lse = log Σ_j exp S` per query row, `[..., Tq]` |
//! | `attention_grad_v` | q, k, dy, lse | `dv = Pᵀ dy` |
//! | `attention_grad_q` | q, k, v, dy, lse, delta | `dq = scale · dS k` |
//! | `attention_grad_k` | q, k, v, dy, lse, delta | `dk = scale · dSᵀ q` |
//!
//! where `P = exp(S − lse)` (the probabilities, recomputed from the saved row
//! statistic), `dy` is the output's adjoint, `delta = Σ_c dy ∘ y` per query row (a
//! plain reduction in the graph) and `dS = P ∘ (dy vᵀ − delta)`. Like every composite,
//! each is *defined* by its decomposition below; backends with fused kernels keep them
//! whole. Their own gradients (second order) go through that decomposition.

use super::{expect_arity, BinaryOp, CompareOp, Composite, Op, ReduceOp, ShapeResult, UnaryOp};
use crate::ir::{Builder, DType, Dim, Shape, TensorType, ValueId};

/// Which piece of attention's backward pass a composite computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionPart {
    /// `attention_lse %q, %k`: each query row's log-sum-exp of its (masked) scores.
    Lse,
    /// `attention_grad_q %q, %k, %v, %dy, %lse, %delta`: the adjoint of `q`.
    GradQ,
    /// `attention_grad_k %q, %k, %v, %dy, %lse, %delta`: the adjoint of `k`.
    GradK,
    /// `attention_grad_v %q, %k, %dy, %lse`: the adjoint of `v`.
    GradV,
}

impl AttentionPart {
    /// Every part.
    pub const ALL: [AttentionPart; 4] = [
        AttentionPart::Lse,
        AttentionPart::GradQ,
        AttentionPart::GradK,
        AttentionPart::GradV,
    ];

    /// The composite's name in the text form.
    pub fn name(self) -> &'static str {
        match self {
            AttentionPart::Lse => "attention_lse",
            AttentionPart::GradQ => "attention_grad_q",
            AttentionPart::GradK => "attention_grad_k",
            AttentionPart::GradV => "attention_grad_v",
        }
    }

    /// The operands' names, in order.
    pub fn operands(self) -> &'static [&'static str] {
        match self {
            AttentionPart::Lse => &["q", "k"],
            AttentionPart::GradQ | AttentionPart::GradK => &["q", "k", "v", "dy", "lse", "delta"],
            AttentionPart::GradV => &["q", "k", "dy", "lse"],
        }
    }
}

/// `attention`'s shape rule: q `[..., Tq, D]`, k `[..., Tk, D]`, v `[..., Tk, Dv]`
/// give `[..., Tq, Dv]`.
pub(super) fn infer_attention(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 3)?;
    let (q, k, v) = (x[0], x[1], x[2]);
    let sizes = Sizes::of(q, k).filter(|s| s.fits_v(v));
    let Some(s) = sizes else {
        return Err(format!(
            "'attention' needs q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] of one float dtype, found {q}, {k}, {v}"
        ));
    };
    Ok(s.typed(q, &[s.tq.clone(), v.dims()[s.rank - 1].clone()]))
}

/// The shape rule of `part`'s composite (see the module table).
pub(super) fn infer_part(part: AttentionPart, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, part.operands().len())?;
    let (q, k) = (x[0], x[1]);
    let fail = || {
        let found: Vec<String> = x.iter().map(|t| t.to_string()).collect();
        format!(
            "'{}' needs q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv], dy [..., Tq, Dv], lse and delta [..., Tq] of one float dtype (operands {}), found {}",
            part.name(),
            part.operands().join(", "),
            found.join(", ")
        )
    };
    let s = Sizes::of(q, k).ok_or_else(fail)?;
    let stats = |ts: &[&TensorType]| ts.iter().all(|t| s.fits_stat(t));
    let ok = match part {
        AttentionPart::Lse => true,
        AttentionPart::GradQ | AttentionPart::GradK => {
            s.fits_v(x[2]) && s.fits_dy(x[3], Some(x[2])) && stats(&x[4..6])
        }
        AttentionPart::GradV => s.fits_dy(x[2], None) && stats(&x[3..4]),
    };
    if !ok {
        return Err(fail());
    }
    Ok(match part {
        AttentionPart::Lse => s.typed(q, std::slice::from_ref(&s.tq)),
        AttentionPart::GradQ => q.clone(),
        AttentionPart::GradK => k.clone(),
        AttentionPart::GradV => s.typed(q, &[s.tk.clone(), x[2].dims()[s.rank - 1].clone()]),
    })
}

/// The sizes q and k agree on, for checking the other operands against.
struct Sizes {
    rank: usize,
    dtype: DType,
    batch: Vec<Dim>,
    tq: Dim,
    tk: Dim,
}

impl Sizes {
    /// q `[..., Tq, D]` and k `[..., Tk, D]` of one float dtype, or `None`.
    fn of(q: &TensorType, k: &TensorType) -> Option<Sizes> {
        let r = q.rank();
        let ok = r >= 2
            && q.dtype.is_float()
            && k.dtype == q.dtype
            && k.rank() == r
            && q.dims()[..r - 2] == k.dims()[..r - 2]
            && q.dims()[r - 1] == k.dims()[r - 1];
        ok.then(|| Sizes {
            rank: r,
            dtype: q.dtype,
            batch: q.dims()[..r - 2].to_vec(),
            tq: q.dims()[r - 2].clone(),
            tk: k.dims()[r - 2].clone(),
        })
    }

    /// `t` has the batch axes, then `rows` and one more axis, and the dtype.
    fn fits_rows(&self, t: &TensorType, rows: &Dim) -> bool {
        t.dtype == self.dtype
            && t.rank() == self.rank
            && t.dims()[..self.rank - 2] == self.batch[..]
            && t.dims()[self.rank - 2] == *rows
    }

    /// v `[..., Tk, Dv]`.
    fn fits_v(&self, v: &TensorType) -> bool {
        self.fits_rows(v, &self.tk)
    }

    /// dy `[..., Tq, Dv]`, with v's `Dv` when v is an operand.
    fn fits_dy(&self, dy: &TensorType, v: Option<&TensorType>) -> bool {
        self.fits_rows(dy, &self.tq)
            && v.is_none_or(|v| v.dims()[self.rank - 1] == dy.dims()[self.rank - 1])
    }

    /// A row statistic `[..., Tq]`.
    fn fits_stat(&self, t: &TensorType) -> bool {
        t.dtype == self.dtype
            && t.rank() == self.rank - 1
            && t.dims()[..self.rank - 2] == self.batch[..]
            && t.dims()[self.rank - 2] == self.tq
    }

    /// `like`'s dtype over the batch axes followed by `tail`.
    fn typed(&self, like: &TensorType, tail: &[Dim]) -> TensorType {
        let mut dims = self.batch.clone();
        dims.extend_from_slice(tail);
        like.with_shape(Shape(dims))
    }
}

/// `attention`'s decomposition: `softmax(scores) v`.
pub(super) fn decompose_attention(
    b: &mut Builder,
    x: &[ValueId],
    causal: bool,
    scale: f64,
) -> ValueId {
    let s = scores(b, x[0], x[1], causal, scale);
    let last = b.ty(s).rank() - 1;
    let p = Composite::Softmax { axis: last }.decompose(b, &[s]);
    b.add(Op::MatMul, &[p, x[2]])
}

/// The decomposition of `part`'s composite applied to `x` (see the module table).
pub(super) fn decompose_part(
    part: AttentionPart,
    b: &mut Builder,
    x: &[ValueId],
    causal: bool,
    scale: f64,
) -> ValueId {
    let (q, k) = (x[0], x[1]);
    match part {
        AttentionPart::Lse => {
            let s = scores(b, q, k, causal, scale);
            let last = b.ty(s).rank() - 1;
            let m = b.reduce(ReduceOp::Max, s, vec![last]);
            let mb = b.broadcast_back(m, s, last);
            let shifted = b.binary(BinaryOp::Sub, s, mb);
            let e = b.unary(UnaryOp::Exp, shifted);
            let sum = b.reduce(ReduceOp::Sum, e, vec![last]);
            let log = b.unary(UnaryOp::Log, sum);
            b.binary(BinaryOp::Add, log, m)
        }
        AttentionPart::GradV => {
            let p = probabilities(b, q, k, x[3], causal, scale);
            let pt = b.transpose_last(p);
            b.add(Op::MatMul, &[pt, x[2]])
        }
        AttentionPart::GradQ | AttentionPart::GradK => {
            let (v, dy, lse, delta) = (x[2], x[3], x[4], x[5]);
            let p = probabilities(b, q, k, lse, causal, scale);
            let vt = b.transpose_last(v);
            let dp = b.add(Op::MatMul, &[dy, vt]);
            let last = b.ty(dp).rank() - 1;
            let delta = b.broadcast_back(delta, dp, last);
            let centred = b.binary(BinaryOp::Sub, dp, delta);
            let ds = b.binary(BinaryOp::Mul, p, centred);
            let product = if part == AttentionPart::GradQ {
                b.add(Op::MatMul, &[ds, k])
            } else {
                let dst = b.transpose_last(ds);
                b.add(Op::MatMul, &[dst, q])
            };
            b.binary_scalar(BinaryOp::Mul, product, scale)
        }
    }
}

/// `attention`'s gradient rule: the adjoints of q, k and v (where `needs` asks) from
/// the row statistics `lse` and `delta`, through the composites above.
#[allow(clippy::too_many_arguments)]
pub(super) fn vjp_attention(
    b: &mut Builder,
    x: &[ValueId],
    y: ValueId,
    g: ValueId,
    needs: &[bool],
    causal: bool,
    scale: f64,
) -> Vec<Option<ValueId>> {
    let (q, k, v) = (x[0], x[1], x[2]);
    let part = |b: &mut Builder, part: AttentionPart, operands: &[ValueId]| {
        let op = Op::Composite(Composite::AttentionGrad {
            part,
            causal,
            scale,
        });
        b.add(op, operands)
    };
    let lse = part(b, AttentionPart::Lse, &[q, k]);
    let delta = (needs[0] || needs[1]).then(|| {
        let last = b.ty(y).rank() - 1;
        let dy_y = b.binary(BinaryOp::Mul, g, y);
        b.reduce(ReduceOp::Sum, dy_y, vec![last])
    });
    let grad = |b: &mut Builder, which: AttentionPart| {
        let delta = delta.expect("computed when q or k needs an adjoint");
        part(b, which, &[q, k, v, g, lse, delta])
    };
    let dq = needs[0].then(|| grad(b, AttentionPart::GradQ));
    let dk = needs[1].then(|| grad(b, AttentionPart::GradK));
    let dv = needs[2].then(|| part(b, AttentionPart::GradV, &[q, k, g, lse]));
    vec![dq, dk, dv]
}

/// `q kᵀ · scale`, with keys after the query position set to −∞ when `causal`.
fn scores(b: &mut Builder, q: ValueId, k: ValueId, causal: bool, scale: f64) -> ValueId {
    let kt = b.transpose_last(k);
    let s = b.add(Op::MatMul, &[q, kt]);
    let s = b.binary_scalar(BinaryOp::Mul, s, scale);
    if !causal {
        return s;
    }
    let st = b.ty(s).clone();
    let r = st.rank();
    let rows = b.add_typed(Op::Iota { axis: r - 2 }, &[], st.with_dtype(DType::I32));
    let cols = b.add_typed(Op::Iota { axis: r - 1 }, &[], st.with_dtype(DType::I32));
    let visible = b.compare(CompareOp::Ge, rows, cols);
    let masked = b.splat(f64::NEG_INFINITY, st);
    b.add(Op::Select, &[visible, s, masked])
}

/// `P = exp(scores − lse)`: the attention probabilities from the saved row statistic.
fn probabilities(
    b: &mut Builder,
    q: ValueId,
    k: ValueId,
    lse: ValueId,
    causal: bool,
    scale: f64,
) -> ValueId {
    let s = scores(b, q, k, causal, scale);
    let last = b.ty(s).rank() - 1;
    let lse = b.broadcast_back(lse, s, last);
    let centred = b.binary(BinaryOp::Sub, s, lse);
    b.unary(UnaryOp::Exp, centred)
}
