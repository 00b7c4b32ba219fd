//! Class labels are checked where they enter a run: `cross_entropy` expands into
//! primitives that would silently score a label outside `0..C` as zero, on every
//! backend, so the labels a model is fed are checked against the class count first.

use crate::interp::RunError;
use crate::tensor::{Data, Tensor};
use smelt_compiler::ir::ops::Composite;
use smelt_compiler::ir::{Def, Graph, Op};
use std::collections::HashMap;

/// Checks every input of `graph` that is the labels operand of a `cross_entropy` (with
/// a static class axis) against its class count; the error is at the `cross_entropy`.
pub fn check_class_labels(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<(), RunError> {
    for id in graph.ids() {
        let Def::Node {
            op: Op::Composite(Composite::CrossEntropy),
            operands,
        } = &graph.value(id).def
        else {
            continue;
        };
        let [logits, labels] = operands[..] else {
            continue;
        };
        let label_value = graph.value(labels);
        let (Def::Input, Some(Data::Int(values))) = (
            &label_value.def,
            feeds.get(&label_value.name).map(|t| &t.data),
        ) else {
            continue;
        };
        let Some(classes) = graph.ty(logits).dims().last().and_then(|d| d.as_static()) else {
            continue;
        };
        let bad = values
            .iter()
            .position(|&l| u64::try_from(l).map_or(true, |l| l >= classes));
        if let Some(at) = bad {
            return Err(RunError::Eval {
                value: id,
                name: graph.value(id).name.clone(),
                message: format!(
                    "label {} at index {at} of %{} is not a class: 'cross_entropy' over {classes} classes takes labels 0 to {}",
                    values[at],
                    label_value.name,
                    classes.saturating_sub(1)
                ),
            });
        }
    }
    Ok(())
}
