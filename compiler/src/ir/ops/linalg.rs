//! Batched matrix multiplication: `[..., M, K] @ [..., K, N] -> [..., M, N]`.
//!
//! Both operands have the same rank (>= 2) and identical batch dimensions; batch
//! broadcasting is explicit in the IR.

use super::{expect_arity, ShapeResult};
use crate::ir::{Builder, Op, TensorType, ValueId};
use crate::ir::{DType, Shape};

pub(super) fn infer_matmul(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 2)?;
    let (a, b) = (x[0], x[1]);
    if a.dtype != b.dtype || a.dtype == DType::Bool {
        return Err(format!(
            "'matmul' needs operands of one numeric dtype, found {a} and {b}"
        ));
    }
    let r = a.rank();
    if r < 2 || b.rank() != r {
        return Err(format!(
            "'matmul' needs operands of equal rank >= 2, found {a} and {b}"
        ));
    }
    if a.dims()[..r - 2] != b.dims()[..r - 2] {
        return Err(format!("'matmul' batch dimensions differ: {a} and {b}"));
    }
    if a.dims()[r - 1] != b.dims()[r - 2] {
        return Err(format!(
            "'matmul' contraction sizes differ: {a} has K = {}, {b} has K = {}",
            a.dims()[r - 1],
            b.dims()[r - 2]
        ));
    }
    let mut dims = a.dims()[..r - 1].to_vec();
    dims.push(b.dims()[r - 1].clone());
    Ok(a.with_shape(Shape(dims)))
}

/// `da = g bᵀ`, `db = aᵀ g` (over the last two axes).
pub(super) fn vjp_matmul(
    b: &mut Builder,
    (l, r): (ValueId, ValueId),
    g: ValueId,
    needs: &[bool],
) -> Vec<Option<ValueId>> {
    let dl = needs[0].then(|| {
        let rt = b.transpose_last(r);
        b.add(Op::MatMul, &[g, rt])
    });
    let dr = needs[1].then(|| {
        let lt = b.transpose_last(l);
        b.add(Op::MatMul, &[lt, g])
    });
    vec![dl, dr]
}
