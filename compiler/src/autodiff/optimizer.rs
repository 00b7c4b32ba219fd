//! Optimisers as IR: a training step is one graph that computes the loss, its gradients
//! and the parameters' and optimiser state's next values, declared as in-place updates.
//!
//! The learning rate and the step number `t` (from 1) are scalar inputs `lr` and `step`,
//! so schedules live in the training loop and one compiled step serves every iteration.

use super::{differentiate, find_loss, AutodiffError};
use crate::ir::ops::{BinaryOp, Op, UnaryOp};
use crate::ir::{Builder, DType, Graph, Init, TensorType, ValueId};

/// An optimiser and its hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent: `v = momentum·v + g + wd·p; p -= lr·v`
    /// (no momentum state when `momentum` is 0).
    Sgd {
        /// Momentum coefficient.
        momentum: f64,
        /// L2 weight decay, added to the gradient.
        weight_decay: f64,
    },
    /// AdamW with bias correction and decoupled weight decay (torch.optim.AdamW semantics):
    /// `p = p·(1 − lr·wd) − lr·m̂/(√v̂ + eps)`.
    AdamW {
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

impl Optimizer {
    /// AdamW with PyTorch's defaults except weight decay 0.01 (the W2 workload's setting).
    pub fn adamw() -> Optimizer {
        Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }

    /// Plain SGD.
    pub fn sgd() -> Optimizer {
        Optimizer::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
}

/// Builds the training step of `graph`: forward, backward for every parameter, and the
/// optimiser update. Adds inputs `lr: f32[]` and `step: f32[]`, optimiser state values
/// named `PARAM.m`, `PARAM.v` (AdamW) or `PARAM.momentum` (SGD), and an update for each
/// parameter and state value. The outputs are the forward graph's outputs.
pub fn training_step(graph: &Graph, opt: &Optimizer) -> Result<Graph, AutodiffError> {
    replica_training_step(graph, opt, 1)
}

/// The training step of one of `replicas` data-parallel ranks, each fed its share of
/// the batch: every gradient is summed over the ranks (`all_reduce`) and divided by
/// `replicas` before the update, so with a loss that is a mean over the batch, every
/// rank applies the gradient of the whole batch's loss and the ranks' parameters stay
/// equal. With one replica this is [`training_step`].
pub fn replica_training_step(
    graph: &Graph,
    opt: &Optimizer,
    replicas: usize,
) -> Result<Graph, AutodiffError> {
    let loss = find_loss(graph)?;
    let params: Vec<ValueId> = graph.params().collect();
    if params.is_empty() {
        return Err(AutodiffError::NoParameters);
    }
    let grads = differentiate(graph, loss, &params)?;
    let mut g = grads.graph;
    g.outputs.truncate(graph.outputs.len());
    let mut b = Builder::from_graph(g);
    let lr = b.input("lr", TensorType::scalar(DType::F32))?;
    let step = b.input("step", TensorType::scalar(DType::F32))?;
    let mut updates = Vec::new();
    for &(p, grad) in &grads.grads {
        let grad = if replicas > 1 {
            let sum = b.add(Op::AllReduce, &[grad]);
            b.binary_scalar(BinaryOp::Mul, sum, 1.0 / replicas as f64)
        } else {
            grad
        };
        let pt = b.ty(p).clone();
        let name = b.graph().value(p).name.clone();
        let scalar = |b: &mut Builder, s: ValueId| {
            let s = if pt.dtype == DType::F32 {
                s
            } else {
                b.add_typed(Op::Cast, &[s], TensorType::scalar(pt.dtype))
            };
            b.broadcast(s, vec![], pt.clone())
        };
        let lr_p = scalar(&mut b, lr);
        let next = match *opt {
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => {
                let mut d = grad;
                if weight_decay != 0.0 {
                    let decay = b.binary_scalar(BinaryOp::Mul, p, weight_decay);
                    d = b.binary(BinaryOp::Add, d, decay);
                }
                if momentum != 0.0 {
                    let v = b.state(&format!("{name}.momentum"), pt.clone(), Init::Zeros)?;
                    let kept = b.binary_scalar(BinaryOp::Mul, v, momentum);
                    d = b.binary(BinaryOp::Add, kept, d);
                    b.rename(d, &format!("{name}.momentum.next"));
                    updates.push((v, d));
                }
                let delta = b.binary(BinaryOp::Mul, lr_p, d);
                b.binary(BinaryOp::Sub, p, delta)
            }
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let m = b.state(&format!("{name}.m"), pt.clone(), Init::Zeros)?;
                let v = b.state(&format!("{name}.v"), pt.clone(), Init::Zeros)?;
                let m1 = moment(&mut b, m, grad, beta1);
                let g2 = b.binary(BinaryOp::Mul, grad, grad);
                let v1 = moment(&mut b, v, g2, beta2);
                b.rename(m1, &format!("{name}.m.next"));
                b.rename(v1, &format!("{name}.v.next"));
                updates.push((m, m1));
                updates.push((v, v1));
                // Bias corrections 1 − β^t, computed once per parameter from `step`.
                let correction = |b: &mut Builder, beta: f64| {
                    let base = b.splat(beta, TensorType::scalar(DType::F32));
                    let pow = b.binary(BinaryOp::Pow, base, step);
                    let one = b.splat(1.0, TensorType::scalar(DType::F32));
                    let c = b.binary(BinaryOp::Sub, one, pow);
                    scalar(b, c)
                };
                let c1 = correction(&mut b, beta1);
                let c2 = correction(&mut b, beta2);
                let m_hat = b.binary(BinaryOp::Div, m1, c1);
                let v_hat = b.binary(BinaryOp::Div, v1, c2);
                let root = b.unary(UnaryOp::Sqrt, v_hat);
                let denom = b.binary_scalar(BinaryOp::Add, root, eps);
                let ratio = b.binary(BinaryOp::Div, m_hat, denom);
                let delta = b.binary(BinaryOp::Mul, lr_p, ratio);
                let decayed = if weight_decay != 0.0 {
                    let lr_wd = b.binary_scalar(BinaryOp::Mul, lr_p, weight_decay);
                    let shrink = b.binary(BinaryOp::Mul, p, lr_wd);
                    b.binary(BinaryOp::Sub, p, shrink)
                } else {
                    p
                };
                b.binary(BinaryOp::Sub, decayed, delta)
            }
        };
        b.rename(next, &format!("{name}.next"));
        updates.push((p, next));
    }
    for (target, value) in updates {
        b.update(target, value)?;
    }
    let step_graph = b.finish();
    crate::ir::verify(&step_graph).map_err(|error| AutodiffError::Unverified {
        graph: "training step",
        error,
    })?;
    Ok(step_graph)
}

/// `beta·state + (1 − beta)·x`.
fn moment(b: &mut Builder, state: ValueId, x: ValueId, beta: f64) -> ValueId {
    let kept = b.binary_scalar(BinaryOp::Mul, state, beta);
    let new = b.binary_scalar(BinaryOp::Mul, x, 1.0 - beta);
    b.binary(BinaryOp::Add, kept, new)
}
