//! The row composites' gradients: `softmax_grad`, `log_softmax_grad`, `layer_norm_grad`,
//! `rms_norm_grad` and `cross_entropy_grad`, and the rules that make the forward row
//! composites' vjp emit them.
//!
//! Like every composite, each gradient is *defined by its decomposition* below (so the
//! interpreter, the optimiser and backends without a fused kernel agree on its meaning),
//! but a backend can run it as one pass or two over each row instead of the separate
//! reductions and pointwise kernels that differentiating the forward decomposition gives.
//! Their own gradients (second order) go through that decomposition.
//!
//! With `g` the adjoint of the forward result:
//! - `softmax_grad %y, %g {axis}`: `y ∘ (g − Σ_axis g∘y)` (`y` the softmax).
//! - `log_softmax_grad %y, %g {axis}`: `g − exp(y) ∘ Σ_axis g` (`y` the log_softmax).
//! - `layer_norm_grad %x, %gamma, %g {eps}`: `dx = r (ĝ − mean ĝ − x̂ mean(ĝ∘x̂))` with
//!   `ĝ = g∘gamma`, `x̂ = (x − mean x) r`, `r = 1/√(var x + eps)`, along the last axis.
//! - `rms_norm_grad %x, %gamma, %g {eps}`: `dx = r (ĝ − x̂ mean(ĝ∘x̂))` with `x̂ = x r`,
//!   `r = 1/√(mean x² + eps)`.
//! - `cross_entropy_grad %logits, %labels, %g`: `(softmax(logits)·valid − onehot) · g / rows`,
//!   where `valid` is 1 for a label inside `0..C` (one outside picks nothing, so its
//!   row has no gradient, as in the forward decomposition).
//!
//! `dgamma` and `dbeta` stay column sums of primitives over the normalised input, which
//! is itself the forward composite with unit scale and zero shift (one fused kernel).

use super::composite::{rsqrt_mean, softmax};
use super::reduce::spread_mean;
use super::{expect_arity, BinaryOp, CompareOp, Composite, Op, ReduceOp, ShapeResult, UnaryOp};
use crate::ir::{Builder, Shape, TensorType, ValueId};

/// The shape rule of a gradient composite `c` (the result has the forward input's type).
pub(super) fn infer(c: &Composite, x: &[&TensorType]) -> ShapeResult {
    let name = c.name();
    match c {
        Composite::SoftmaxGrad { axis } | Composite::LogSoftmaxGrad { axis } => {
            expect_arity(x, 2)?;
            if !x[0].dtype.is_float() || x[0] != x[1] || *axis >= x[0].rank() {
                return Err(format!(
                    "'{name}' needs a result and its adjoint of one float type with axis {axis} in range, found {} and {}",
                    x[0], x[1]
                ));
            }
            Ok(x[0].clone())
        }
        Composite::LayerNormGrad { .. } | Composite::RmsNormGrad { .. } => {
            expect_arity(x, 3)?;
            let (input, gamma, adjoint) = (x[0], x[1], x[2]);
            let ok = input.dtype.is_float()
                && input == adjoint
                && input.dims().last().is_some_and(|last| {
                    *gamma == TensorType::new(input.dtype, Shape(vec![last.clone()]))
                });
            if !ok {
                return Err(format!(
                    "'{name}' needs x [..., D], gamma [D] and an adjoint like x, of one float dtype, found {input}, {gamma}, {adjoint}"
                ));
            }
            Ok(input.clone())
        }
        Composite::CrossEntropyGrad => {
            expect_arity(x, 3)?;
            let (logits, labels, adjoint) = (x[0], x[1], x[2]);
            let r = logits.rank();
            let ok = logits.dtype.is_float()
                && r >= 1
                && labels.dtype.is_int()
                && labels.dims() == &logits.dims()[..r - 1]
                && *adjoint == TensorType::scalar(logits.dtype);
            if !ok {
                return Err(format!(
                    "'cross_entropy_grad' needs logits [..., C], integer labels [...] and a scalar adjoint of the logits' dtype, found {logits}, {labels}, {adjoint}"
                ));
            }
            Ok(logits.clone())
        }
        _ => unreachable!("only row gradients have this shape rule"),
    }
}

/// The decomposition of a gradient composite `c` on operands `x`.
pub(super) fn decompose(c: &Composite, b: &mut Builder, x: &[ValueId]) -> ValueId {
    match c {
        Composite::SoftmaxGrad { axis } => {
            let (y, g) = (x[0], x[1]);
            let gy = b.binary(BinaryOp::Mul, g, y);
            let s = b.reduce(ReduceOp::Sum, gy, vec![*axis]);
            let s = b.broadcast_back(s, y, *axis);
            let d = b.binary(BinaryOp::Sub, g, s);
            b.binary(BinaryOp::Mul, y, d)
        }
        Composite::LogSoftmaxGrad { axis } => {
            let (y, g) = (x[0], x[1]);
            let s = b.reduce(ReduceOp::Sum, g, vec![*axis]);
            let s = b.broadcast_back(s, y, *axis);
            let p = b.unary(UnaryOp::Exp, y);
            let ps = b.binary(BinaryOp::Mul, p, s);
            b.binary(BinaryOp::Sub, g, ps)
        }
        Composite::LayerNormGrad { eps } => {
            let last = b.ty(x[0]).rank() - 1;
            let mean = b.reduce(ReduceOp::Mean, x[0], vec![last]);
            let mean = b.broadcast_back(mean, x[0], last);
            let centred = b.binary(BinaryOp::Sub, x[0], mean);
            let sq = b.binary(BinaryOp::Mul, centred, centred);
            norm_grad(b, centred, sq, x[1], x[2], *eps, true)
        }
        Composite::RmsNormGrad { eps } => {
            let sq = b.binary(BinaryOp::Mul, x[0], x[0]);
            norm_grad(b, x[0], sq, x[1], x[2], *eps, false)
        }
        Composite::CrossEntropyGrad => cross_entropy_grad(b, x[0], x[1], x[2]),
        _ => unreachable!("only row gradients decompose here"),
    }
}

/// `r (ĝ [− mean ĝ] − x̂ mean(ĝ∘x̂))` with `r = rsqrt(mean(sq) + eps)`, `x̂ = centred·r`
/// and `ĝ = g∘gamma`; `centre` adds the mean term of layer_norm.
fn norm_grad(
    b: &mut Builder,
    centred: ValueId,
    sq: ValueId,
    gamma: ValueId,
    g: ValueId,
    eps: f64,
    centre: bool,
) -> ValueId {
    let ty = b.ty(centred).clone();
    let last = ty.rank() - 1;
    let r = rsqrt_mean(b, sq, eps);
    let xhat = b.binary(BinaryOp::Mul, centred, r);
    let gamma = b.broadcast(gamma, vec![last], ty);
    let ghat = b.binary(BinaryOp::Mul, g, gamma);
    let mean_back = |b: &mut Builder, v: ValueId| {
        let m = b.reduce(ReduceOp::Mean, v, vec![last]);
        b.broadcast_back(m, v, last)
    };
    let gx = b.binary(BinaryOp::Mul, ghat, xhat);
    let mgx = mean_back(b, gx);
    let along = b.binary(BinaryOp::Mul, xhat, mgx);
    let mut d = b.binary(BinaryOp::Sub, ghat, along);
    if centre {
        let mg = mean_back(b, ghat);
        d = b.binary(BinaryOp::Sub, d, mg);
    }
    b.binary(BinaryOp::Mul, r, d)
}

fn cross_entropy_grad(b: &mut Builder, logits: ValueId, labels: ValueId, g: ValueId) -> ValueId {
    let lt = b.ty(logits).clone();
    let last = lt.rank() - 1;
    let p = softmax(b, logits, last);
    let label_ty = b.ty(labels).dtype;
    let classes = b.add_typed(Op::Iota { axis: last }, &[], lt.with_dtype(label_ty));
    let labels = b.broadcast_back(labels, logits, last);
    let hit = b.compare(CompareOp::Eq, classes, labels);
    let one = b.splat(1.0, lt.clone());
    let zero = b.splat(0.0, lt.clone());
    let onehot = b.add(Op::Select, &[hit, one, zero]);
    let valid = b.reduce(ReduceOp::Sum, onehot, vec![last]);
    // The loss is a mean over the rows: each row's share of the adjoint.
    let rows = lt.with_shape(Shape(lt.dims()[..last].to_vec()));
    let share = spread_mean(b, g, &rows, &(0..last).collect::<Vec<_>>());
    let weight = b.binary(BinaryOp::Mul, valid, share);
    let weight = b.broadcast_back(weight, logits, last);
    let share = b.broadcast_back(share, logits, last);
    let pw = b.binary(BinaryOp::Mul, p, weight);
    let picked = b.binary(BinaryOp::Mul, onehot, share);
    b.binary(BinaryOp::Sub, pw, picked)
}

/// The vjp of a forward row composite `c` (operands `x`, result `y`, adjoint `g`) through
/// its gradient composite; `None` for composites differentiated through their
/// decomposition.
pub(super) fn vjp(
    c: &Composite,
    b: &mut Builder,
    x: &[ValueId],
    y: ValueId,
    g: ValueId,
    needs: &[bool],
) -> Option<Vec<Option<ValueId>>> {
    let grad =
        |b: &mut Builder, c: Composite, operands: &[ValueId]| b.add(Op::Composite(c), operands);
    Some(match c {
        Composite::Softmax { axis } => vec![Some(grad(
            b,
            Composite::SoftmaxGrad { axis: *axis },
            &[y, g],
        ))],
        Composite::LogSoftmax { axis } => {
            vec![Some(grad(
                b,
                Composite::LogSoftmaxGrad { axis: *axis },
                &[y, g],
            ))]
        }
        Composite::LayerNorm { eps } | Composite::RmsNorm { eps } => {
            let layer = matches!(c, Composite::LayerNorm { .. });
            let dx = needs[0].then(|| {
                let kind = if layer {
                    Composite::LayerNormGrad { eps: *eps }
                } else {
                    Composite::RmsNormGrad { eps: *eps }
                };
                grad(b, kind, &[x[0], x[1], g])
            });
            let leading: Vec<usize> = (0..b.ty(x[0]).rank() - 1).collect();
            let dgamma = needs[1].then(|| {
                // x̂ is the forward composite with unit scale (and zero shift).
                let one = b.splat(1.0, b.ty(x[1]).clone());
                let mut operands = vec![x[0], one];
                if layer {
                    operands.push(b.zeros_like(x[1]));
                }
                let xhat = b.add(Op::Composite(c.clone()), &operands);
                let gx = b.binary(BinaryOp::Mul, g, xhat);
                b.reduce(ReduceOp::Sum, gx, leading.clone())
            });
            let mut out = vec![dx, dgamma];
            if layer {
                out.push(needs[2].then(|| b.reduce(ReduceOp::Sum, g, leading)));
            }
            out
        }
        Composite::CrossEntropy => vec![
            needs[0].then(|| grad(b, Composite::CrossEntropyGrad, &[x[0], x[1], g])),
            None,
        ],
        _ => return None,
    })
}
