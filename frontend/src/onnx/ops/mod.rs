//! ONNX op mappings, one file per op group. [`import_op`] dispatches on the op type.

mod elementwise;
mod linalg;
mod movement;
mod nn;
mod pool;
mod reduce;

use super::import::{unsupported, Importer, NodeCtx, OpResult, Out};

/// Imports one node; returns its results in output order.
pub fn import_op(im: &mut Importer, node: &NodeCtx) -> OpResult<Vec<Out>> {
    let op = node.op();
    // Movement first: it folds shape computations (`Identity`, `Cast` included).
    if let Some(r) = movement::import(im, node, op)? {
        return Ok(r);
    }
    if let Some(r) = elementwise::import(im, node, op)? {
        return Ok(r);
    }
    if let Some(r) = reduce::import(im, node, op)? {
        return Ok(r);
    }
    if let Some(r) = linalg::import(im, node, op)? {
        return Ok(r);
    }
    if let Some(r) = pool::import(im, node, op)? {
        return Ok(r);
    }
    if let Some(r) = nn::import(im, node, op)? {
        return Ok(r);
    }
    unsupported(format!("op '{op}' is not supported"))
}

/// One IR result.
fn one(id: smelt_compiler::ir::ValueId) -> OpResult<Option<Vec<Out>>> {
    Ok(Some(vec![Out::Ir(id)]))
}
