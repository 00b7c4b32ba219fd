//! The verifier: checks every invariant of [`Graph`] and says precisely which value
//! breaks which rule. Passes may assume a verified graph; every pass's output is verified
//! again in tests.

use super::{check_param_type, is_value_name, BuildError, Def, Graph, TensorType, ValueId};
use rustc_hash::FxHashSet;
use thiserror::Error;

/// A broken invariant, at a value (or at the graph as a whole when `value` is `None`).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{message}")]
pub struct VerifyError {
    /// The offending value, if one is to blame.
    pub value: Option<ValueId>,
    /// What is wrong, naming the value.
    pub message: String,
}

/// Checks `graph`: unique valid names, operands defined before use, stored types equal
/// to the shape rules' results, static float parameters, at least one distinct output.
pub fn verify(graph: &Graph) -> Result<(), VerifyError> {
    let mut names = FxHashSet::default();
    for id in graph.ids() {
        let v = graph.value(id);
        let fail = |message: String| VerifyError {
            value: Some(id),
            message: format!("%{}: {message}", v.name),
        };
        if !is_value_name(&v.name) {
            return Err(fail("invalid value name".into()));
        }
        if !names.insert(v.name.as_str()) {
            return Err(fail("defined more than once".into()));
        }
        v.ty.check_size().map_err(|e| fail(e.to_string()))?;
        match &v.def {
            Def::Input => {}
            Def::Param(init) | Def::State(init) => {
                check_param_type(&v.ty).map_err(|e| fail(e.to_string()))?;
                init.check().map_err(|e| fail(e.to_string()))?;
            }
            Def::Node { op, operands } => {
                if let Some(late) = operands.iter().find(|o| **o >= id) {
                    return Err(fail(format!("operand {late} is used before it is defined")));
                }
                let types: Vec<&TensorType> = operands.iter().map(|&o| graph.ty(o)).collect();
                let inferred = op.infer(&types, Some(&v.ty)).map_err(fail)?;
                if inferred != v.ty {
                    return Err(fail(format!(
                        "stored type {} but '{}' gives {inferred}",
                        v.ty,
                        op.name()
                    )));
                }
            }
        }
    }
    if graph.outputs.is_empty() {
        return Err(VerifyError {
            value: None,
            message: format!("graph @{} has no output", graph.name),
        });
    }
    let mut seen = FxHashSet::default();
    for &o in &graph.outputs {
        if o.index() >= graph.values.len() {
            return Err(VerifyError {
                value: None,
                message: format!("output {o} does not exist"),
            });
        }
        if !seen.insert(o) {
            return Err(VerifyError {
                value: Some(o),
                message: format!("%{} is listed as an output twice", graph.value(o).name),
            });
        }
    }
    let mut targets = FxHashSet::default();
    for &(target, value) in &graph.updates {
        let n = graph.values.len();
        if target.index() >= n || value.index() >= n {
            return Err(VerifyError {
                value: None,
                message: "an update names a value that does not exist".into(),
            });
        }
        check_update(graph, target, value, false).map_err(|e| VerifyError {
            value: Some(target),
            message: e.to_string(),
        })?;
        if !targets.insert(target) {
            return Err(VerifyError {
                value: Some(target),
                message: format!("'%{}' is updated twice", graph.value(target).name),
            });
        }
    }
    Ok(())
}

/// Checks one in-place update: `target` is a param or state value, `value` has its type,
/// and no earlier update targets it (`updated_before`).
pub(crate) fn check_update(
    graph: &Graph,
    target: ValueId,
    value: ValueId,
    updated_before: bool,
) -> Result<(), BuildError> {
    let (t, v) = (graph.value(target), graph.value(value));
    if !matches!(t.def, Def::Param(_) | Def::State(_)) {
        return Err(BuildError::NotUpdatable(t.name.clone()));
    }
    if t.ty != v.ty {
        return Err(BuildError::UpdateType {
            target: t.name.clone(),
            target_ty: t.ty.clone(),
            value: v.name.clone(),
            value_ty: v.ty.clone(),
        });
    }
    if updated_before {
        return Err(BuildError::UpdatedTwice(t.name.clone()));
    }
    Ok(())
}
