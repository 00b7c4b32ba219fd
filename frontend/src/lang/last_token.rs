//! Outputs at each row's last new token ([`Mode::PrefillLast`], [`Mode::DecodeLast`]).
//!
//! Generating reads the logits of one position per sequence, yet a model writes its
//! head for every position (`rms_norm(x) @ head` over `[B, T, dim]`); for a 30-block
//! SmolLM2 the head is a fifth of a prompt's products. So the row-wise tail of an
//! output's computation is found, and rebuilt after picking each row's last token
//! from the value it starts at: the head then runs once per sequence.
//!
//! A *row-wise* op computes each (batch, position) row from that row alone: products
//! with a weight (`[rows, K] @ [K, N]`, the weight free of symbolic axes), norms over
//! the feature axis with per-feature parameters, unary maps, casts, and reshapes that
//! split or merge the leading axes only. The pick is exact: a select of the chosen
//! row (others become 0) summed over the position axis.
//!
//! [`Mode::PrefillLast`]: super::kv_cache::Mode::PrefillLast
//! [`Mode::DecodeLast`]: super::kv_cache::Mode::DecodeLast

use super::error::{LangError, LangResult};
use super::lower::Lowerer;
use smelt_compiler::ir::ops::{CompareOp, Composite, ReduceOp};
use smelt_compiler::ir::text::Pos;
use smelt_compiler::ir::{DType, Def, Dim, Op, Shape, TensorType, ValueId};

/// The input naming each row's last new token: its index along the position axis.
pub const LAST_TOKEN_INPUT: &str = "last_token";

impl Lowerer<'_> {
    /// Output `y` (`[B, T, ...]` or a reshape of it) at each row's last new token:
    /// `[B, 1, ...]`, with `T` replaced by 1 in every axis of its shape.
    pub(super) fn at_last_token(&mut self, y: ValueId, pos: Pos) -> LangResult<ValueId> {
        // The row-wise tail, from `y` back to the value it starts at.
        let mut tail: Vec<(Op, Vec<ValueId>, TensorType)> = Vec::new();
        let mut start = y;
        while let Some((op, operands)) = self.row_wise(start) {
            tail.push((op, operands.clone(), self.ty(start)));
            start = operands[0];
        }
        let st = self.ty(start);
        let (batch, t) = match st.dims() {
            [b, t, ..] if t.as_static().is_none() => (b.clone(), t.clone()),
            _ => {
                return Err(LangError::new(
                    pos,
                    format!(
                    "an output at the last token needs [B, T, ...] with a symbolic T, found {st}"
                ),
                ))
            }
        };
        let mut x = self.pick_last(start, &batch, &t, pos)?;
        for (op, mut operands, ty) in tail.into_iter().rev() {
            operands[0] = x;
            let declared = match op {
                Op::Reshape => Some(ty.with_shape(without(&ty.shape, &t).ok_or_else(|| {
                    LangError::new(pos, format!("cannot take {ty} at the last token"))
                })?)),
                _ => None,
            };
            x = self.node(op, &operands, declared, pos)?;
        }
        Ok(x)
    }

    /// The op of `v` and its operands when it is row-wise in its first operand.
    fn row_wise(&self, v: ValueId) -> Option<(Op, Vec<ValueId>)> {
        let g = self.b.graph();
        let Def::Node { op, operands } = &g.value(v).def else {
            return None;
        };
        let feature_params = || operands[1..].iter().all(|&p| g.ty(p).rank() <= 1);
        let keeps_features = || {
            let (a, b) = (g.ty(operands[0]).dims(), g.ty(v).dims());
            a.last() == b.last() && a.len() >= 2 && b.len() >= 2
        };
        let row_wise = match op {
            Op::Unary(_) | Op::Cast => true,
            Op::Composite(Composite::RmsNorm { .. } | Composite::LayerNorm { .. }) => {
                feature_params()
            }
            Op::MatMul => {
                let w = g.ty(operands[1]);
                g.ty(operands[0]).rank() == 2 && w.rank() == 2 && w.shape.as_static().is_some()
            }
            Op::Reshape => keeps_features(),
            _ => false,
        };
        row_wise.then(|| (op.clone(), operands.clone()))
    }

    /// `x [B, T, ...]` at position `last_token[b]` of each row `b`: `[B, 1, ...]`.
    fn pick_last(&mut self, x: ValueId, batch: &Dim, t: &Dim, pos: Pos) -> LangResult<ValueId> {
        let xt = self.ty(x);
        let last = self.last_token(batch, pos)?;
        let rows = TensorType::new(DType::I32, Shape(vec![batch.clone(), t.clone()]));
        let at = self.node(Op::Iota { axis: 1 }, &[], Some(rows.clone()), pos)?;
        let wanted = self.node(Op::Broadcast { dims: vec![0] }, &[last], Some(rows), pos)?;
        let hit = self.node(Op::Compare(CompareOp::Eq), &[at, wanted], None, pos)?;
        let hit = self.node(
            Op::Broadcast { dims: vec![0, 1] },
            &[hit],
            Some(xt.with_dtype(DType::Bool)),
            pos,
        )?;
        let zero = self.node(
            Op::Constant { values: vec![0.0] },
            &[],
            Some(xt.clone()),
            pos,
        )?;
        let kept = self.node(Op::Select, &[hit, x, zero], None, pos)?;
        let picked = self.node(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![1],
            },
            &[kept],
            None,
            pos,
        )?;
        let mut dims = xt.dims().to_vec();
        dims[1] = Dim::fixed(1);
        self.reshape(picked, Shape(dims), pos)
    }

    /// The input `last_token: i32[B]`, declared on first use.
    fn last_token(&mut self, batch: &Dim, pos: Pos) -> LangResult<ValueId> {
        if let Some(id) = self.b.graph().find(LAST_TOKEN_INPUT) {
            return Ok(id);
        }
        let ty = TensorType::new(DType::I32, Shape(vec![batch.clone()]));
        self.b
            .input(LAST_TOKEN_INPUT, ty)
            .map_err(|e| LangError::new(pos, e.to_string()))
    }
}

/// `shape` with the one axis that holds `t` divided by it (`T` → 1, `B·T` → `B`).
fn without(shape: &Shape, t: &Dim) -> Option<Shape> {
    let mut dims = shape.dims().to_vec();
    let i = dims
        .iter()
        .position(|d| d.syms().iter().any(|s| t.syms().contains(s)))?;
    dims[i] = dims[i].div_exact(t)?;
    Some(Shape(dims))
}
