//! Gradient checking: autodiff's gradients against central finite differences computed
//! by the reference interpreter in f64. The tests of every op and every example model
//! use this; it is public so model authors can check their own models.

use crate::interp::{run, Precision, RunError};
use crate::tensor::{Data, Tensor};
use smelt_compiler::autodiff::{differentiate, AutodiffError};
use smelt_compiler::ir::{DType, Graph, ValueId};
use std::collections::HashMap;

/// A float tensor holding `values` exactly (not rounded to f32), so that f64
/// perturbations reach the computation unchanged.
pub fn exact_f32(shape: &[usize], values: Vec<f64>) -> Tensor {
    Tensor {
        dtype: DType::F32,
        shape: shape.to_vec(),
        data: Data::Float(values),
    }
}

/// Why a gradient check failed.
#[derive(Debug, thiserror::Error)]
pub enum GradcheckError {
    /// A name in `wrt` is not a value of the graph.
    #[error("the graph has no value %{0}")]
    UnknownValue(String),
    /// A value in `wrt` has no feed to perturb.
    #[error("no feed for %{0}")]
    NoFeed(String),
    /// The graph cannot be differentiated.
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    /// The interpreter failed on the graph.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A gradient differs from its finite difference.
    #[error("d/d{value}[{index}]: autodiff {autodiff} vs finite difference {finite_difference} (rel. error {relative_error:e})")]
    Mismatch {
        /// The value differentiated against.
        value: String,
        /// The flat index of the coordinate.
        index: usize,
        /// Autodiff's gradient.
        autodiff: f64,
        /// The central difference.
        finite_difference: f64,
        /// Their gap relative to the largest gradient seen.
        relative_error: f64,
    },
}

/// Checks d(loss)/d(name) for every `name` in `wrt` against central differences with
/// step `h`, on `coords` spread-out coordinates of each (all when `None`). Passes when
/// every `|autodiff − fd|` is below `tol` times the largest gradient magnitude seen.
/// Float feeds should be made with [`exact_f32`].
pub fn check_gradients(
    g: &Graph,
    loss: ValueId,
    feeds: &HashMap<String, Tensor>,
    wrt: &[&str],
    coords: Option<usize>,
    h: f64,
    tol: f64,
) -> Result<(), GradcheckError> {
    let ids: Vec<ValueId> = wrt
        .iter()
        .map(|n| {
            g.find(n)
                .ok_or_else(|| GradcheckError::UnknownValue(n.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let grads = differentiate(g, loss, &ids)?;
    let mut with_grads = grads.graph.clone();
    with_grads.outputs = grads.grads.iter().map(|&(_, gr)| gr).collect();
    let ad = run(&with_grads, feeds, Precision::F64)?;
    let mut forward = g.clone();
    forward.outputs = vec![loss];
    let loss_at = |f: &HashMap<String, Tensor>| -> Result<f64, GradcheckError> {
        Ok(run(&forward, f, Precision::F64)?[0].to_f64_vec()[0])
    };
    for (k, name) in wrt.iter().enumerate() {
        let ad = ad[k].to_f64_vec();
        let given = feeds
            .get(*name)
            .ok_or_else(|| GradcheckError::NoFeed(name.to_string()))?;
        let base = given.to_f64_vec();
        let n = base.len();
        let picked: Vec<usize> = match coords {
            None => (0..n).collect(),
            Some(c) => (0..c.min(n)).map(|i| (i * 7919 + 13) % n).collect(),
        };
        let mut fd = Vec::new();
        for &i in &picked {
            let at = |delta: f64| {
                let mut f = feeds.clone();
                let mut v = base.clone();
                v[i] += delta;
                f.insert(name.to_string(), exact_f32(&given.shape, v));
                loss_at(&f)
            };
            fd.push((at(h)? - at(-h)?) / (2.0 * h));
        }
        let scale = fd
            .iter()
            .chain(picked.iter().map(|&i| &ad[i]))
            .fold(1e-12f64, |m, v| m.max(v.abs()));
        for (j, &i) in picked.iter().enumerate() {
            let err = (ad[i] - fd[j]).abs() / scale;
            if err.is_nan() || err >= tol {
                return Err(GradcheckError::Mismatch {
                    value: name.to_string(),
                    index: i,
                    autodiff: ad[i],
                    finite_difference: fd[j],
                    relative_error: err,
                });
            }
        }
    }
    Ok(())
}
