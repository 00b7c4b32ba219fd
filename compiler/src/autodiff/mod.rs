//! Reverse-mode automatic differentiation as an IR → IR pass.
//!
//! [`differentiate`] appends the backward computation to a copy of the forward graph:
//! it walks the values in reverse definition order, and for each value with an adjoint
//! asks its op for the operands' adjoints ([`Op::vjp`], written next to each op's
//! definition in `ir/ops/`). Contributions to one value are summed. The row composites
//! (softmax, log_softmax, layer_norm, rms_norm, cross_entropy) emit gradient composites
//! (`softmax_grad`, ..., see `ir/ops/row_grad.rs`) and `attention` emits its backward
//! composites (`ir/ops/attention.rs`), which backends run as fused kernels; the other
//! composites, gradient composites included, are differentiated through their
//! decomposition, so their gradient always agrees with their meaning. The result is an ordinary graph: it can be dumped, verified,
//! optimised and run like any other.

pub mod optimizer;

use crate::ir::ops::{BinaryOp, Op};
use crate::ir::{verify, BuildError, Builder, Def, Graph, TensorType, ValueId, VerifyError};
use rustc_hash::FxHashMap;
use thiserror::Error;

/// Why a graph could not be differentiated (or turned into a training step).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AutodiffError {
    /// The output called `%loss` is not a float scalar.
    #[error("autodiff: the output %loss must be a float scalar, found {0}")]
    LossOutputNotScalar(TensorType),
    /// The loss asked for is not a float scalar.
    #[error("autodiff: the loss must be a float scalar, found {0}")]
    LossNotScalar(TensorType),
    /// No output can be the loss.
    #[error("autodiff: the graph has no scalar float output to use as the loss (name one %loss)")]
    NoLoss,
    /// Several outputs could be the loss.
    #[error("autodiff: several scalar outputs could be the loss; name one %loss")]
    AmbiguousLoss,
    /// Training needs something to train.
    #[error("autodiff: the model has no parameters to train")]
    NoParameters,
    /// The gradient rule of the op defining `value` refused.
    #[error("autodiff: cannot differentiate %{value}: {message}")]
    NotDifferentiable {
        /// The value whose op has no usable gradient.
        value: String,
        /// Why.
        message: String,
    },
    /// A value, update or output of the gradient graph was rejected.
    #[error("autodiff: {0}")]
    Build(#[from] BuildError),
    /// A bug: the graph made does not verify.
    #[error("autodiff: internal: {graph} does not verify: {error}")]
    Unverified {
        /// Which graph: the gradient graph or the training step.
        graph: &'static str,
        /// The verifier's complaint.
        error: VerifyError,
    },
}

/// A graph extended with gradients.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// The forward graph with the backward nodes appended. Its outputs are the
    /// original outputs followed by one gradient per differentiated value.
    pub graph: Graph,
    /// The loss.
    pub loss: ValueId,
    /// `(value, gradient)` for each value differentiated against, in the order asked.
    pub grads: Vec<(ValueId, ValueId)>,
}

/// Picks the loss of a graph: the output named `loss`, else the only scalar float output.
pub fn find_loss(graph: &Graph) -> Result<ValueId, AutodiffError> {
    let scalar = |id: &ValueId| graph.ty(*id).rank() == 0 && graph.ty(*id).dtype.is_float();
    if let Some(&id) = graph
        .outputs
        .iter()
        .find(|&&o| graph.value(o).name == "loss")
    {
        return if scalar(&id) {
            Ok(id)
        } else {
            Err(AutodiffError::LossOutputNotScalar(graph.ty(id).clone()))
        };
    }
    let scalars: Vec<ValueId> = graph.outputs.iter().copied().filter(scalar).collect();
    match scalars.as_slice() {
        [one] => Ok(*one),
        [] => Err(AutodiffError::NoLoss),
        _ => Err(AutodiffError::AmbiguousLoss),
    }
}

/// Appends the gradients of `loss` with respect to `wrt` (parameters, usually) to a
/// copy of `graph`. Values the loss does not depend on get a zero gradient.
pub fn differentiate(
    graph: &Graph,
    loss: ValueId,
    wrt: &[ValueId],
) -> Result<Gradients, AutodiffError> {
    let lt = graph.ty(loss);
    if lt.rank() != 0 || !lt.dtype.is_float() {
        return Err(AutodiffError::LossNotScalar(lt.clone()));
    }
    let mut b = Builder::from_graph(graph.clone());
    let forward_len = graph.values.len();

    // A value needs an adjoint if it is a float computed from something in `wrt`.
    let mut needs = vec![false; forward_len];
    for id in graph.ids() {
        let v = graph.value(id);
        let from_wrt = match &v.def {
            Def::Node { operands, .. } => operands.iter().any(|o| needs[o.index()]),
            _ => wrt.contains(&id),
        };
        needs[id.index()] = from_wrt && v.ty.dtype.is_float();
    }

    let mut adj: FxHashMap<ValueId, ValueId> = FxHashMap::default();
    if needs[loss.index()] {
        let seed = b.splat(1.0, lt.clone());
        adj.insert(loss, seed);
        backprop(&mut b, &mut adj, &mut needs, loss.index(), 0)?;
    }

    let mut grads = Vec::new();
    for &w in wrt {
        let g = match adj.get(&w) {
            Some(&g) => g,
            None => b.zeros_like(w),
        };
        if g.index() >= forward_len {
            let name = format!("{}.grad", b.graph().value(w).name);
            b.rename(g, &name);
        }
        grads.push((w, g));
    }
    for &(_, g) in &grads {
        // A gradient shared by two values (or equal to a forward value) is listed once.
        if !b.is_output(g) {
            b.output(g)?;
        }
    }
    let graph = b.finish();
    verify(&graph).map_err(|error| AutodiffError::Unverified {
        graph: "the gradient graph",
        error,
    })?;
    Ok(Gradients { graph, loss, grads })
}

/// Propagates adjoints from value `hi` down to value `lo` (inclusive), in reverse order.
fn backprop(
    b: &mut Builder,
    adj: &mut FxHashMap<ValueId, ValueId>,
    needs: &mut Vec<bool>,
    hi: usize,
    lo: usize,
) -> Result<(), AutodiffError> {
    for i in (lo..=hi).rev() {
        let id = ValueId(i as u32);
        let Some(&g) = adj.get(&id) else { continue };
        let Def::Node { op, operands } = b.graph().value(id).def.clone() else {
            continue;
        };
        let want: Vec<bool> = operands.iter().map(|o| needs[o.index()]).collect();
        if !want.contains(&true) {
            continue;
        }
        let name = b.graph().value(id).name.clone();
        let fail = |message: String| AutodiffError::NotDifferentiable {
            value: name.clone(),
            message,
        };
        let contributions = match op.vjp(b, &operands, id, g, &want).map_err(fail)? {
            Some(c) => c,
            None => {
                let Op::Composite(c) = &op else {
                    unreachable!("only composites lack a rule")
                };
                // Differentiate the composite's decomposition: rebuild it here, then
                // propagate through its nodes into the composite's operands.
                let start = b.graph().values.len();
                let y = c.decompose(b, &operands);
                extend_needs(b, needs);
                adj.insert(y, g);
                backprop(b, adj, needs, y.index(), start)?;
                continue;
            }
        };
        for (o, c) in operands.iter().zip(contributions) {
            if let (true, Some(c)) = (needs[o.index()], c) {
                accumulate(b, adj, *o, c);
            }
        }
        extend_needs(b, needs);
    }
    Ok(())
}

/// Marks values added since `needs` was sized: each needs an adjoint if an operand does.
fn extend_needs(b: &Builder, needs: &mut Vec<bool>) {
    let g = b.graph();
    for i in needs.len()..g.values.len() {
        let v = &g.values[i];
        let n = match &v.def {
            Def::Node { operands, .. } => {
                operands.iter().any(|o| needs[o.index()]) && v.ty.dtype.is_float()
            }
            _ => false,
        };
        needs.push(n);
    }
}

fn accumulate(b: &mut Builder, adj: &mut FxHashMap<ValueId, ValueId>, v: ValueId, c: ValueId) {
    let total = match adj.get(&v) {
        Some(&old) => b.binary(BinaryOp::Add, old, c),
        None => c,
    };
    adj.insert(v, total);
}
