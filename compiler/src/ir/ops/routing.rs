//! Routing ops for sparse mixtures of experts, with shapes that do not depend on data:
//!
//! - `top_k %x {k}`: the `i64` indices of the `k` largest elements along the last axis,
//!   `[..., n] -> [..., k]`, largest first; equal values go to the lower index first and
//!   NaN ranks as `+inf`. Indices are not differentiable (the values are taken with
//!   `gather`, which is).
//! - `grouped_matmul %x, %w, %group`: `[T, K]`, `[E, K, N]`, `int[T]` -> `[T, N]`, row
//!   `t` multiplied by the matrix of its group, `y[t] = x[t] @ w[group[t]]`.
//! - `grouped_matmul_weight_grad %x, %dy, %group {groups = E}`: `[T, K]`, `[T, N]`,
//!   `int[T]` -> `[E, K, N]`, the per-group sum of outer products
//!   `dw[e] = Σ_{t: group[t] = e} x[t]ᵀ dy[t]` (the weight gradient of `grouped_matmul`).
//!
//! A group outside `0..E` is an error in the interpreter, like any index.

use super::{expect_arity, Op, ShapeResult};
use crate::ir::{Builder, DType, Dim, Shape, TensorType, ValueId};

pub(super) fn infer_top_k(k: u64, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    let t = x[0];
    if t.rank() == 0 || !t.dtype.is_float() {
        return Err(format!(
            "'top_k' needs a float operand of rank >= 1, found {t}"
        ));
    }
    let last = &t.dims()[t.rank() - 1];
    match last.as_static() {
        Some(n) if (1..=n).contains(&k) => {}
        Some(n) => {
            return Err(format!(
                "'top_k' needs 1 <= k <= {n} for {t}, found k = {k}"
            ))
        }
        None => return Err(format!("'top_k' needs a static last axis, found {t}")),
    }
    let mut dims = t.dims()[..t.rank() - 1].to_vec();
    dims.push(Dim::fixed(k));
    Ok(TensorType::new(DType::I64, Shape(dims)))
}

/// Checks that `group` is an integer vector of `rows` elements.
fn check_group(op: &str, group: &TensorType, rows: &Dim) -> Result<(), String> {
    if !group.dtype.is_int() || group.rank() != 1 || group.dims()[0] != *rows {
        return Err(format!(
            "'{op}' needs integer groups of shape [{rows}], found {group}"
        ));
    }
    Ok(())
}

/// Checks that `a` is a float matrix and `b` a float tensor of rank `b_rank` and the
/// same dtype.
fn check_floats(op: &str, a: &TensorType, b: &TensorType, b_rank: usize) -> Result<(), String> {
    if !a.dtype.is_float() || a.dtype != b.dtype || a.rank() != 2 || b.rank() != b_rank {
        return Err(format!(
            "'{op}' needs float operands of one dtype with ranks 2 and {b_rank}, found {a} and {b}"
        ));
    }
    Ok(())
}

pub(super) fn infer_grouped_matmul(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 3)?;
    let (a, w, group) = (x[0], x[1], x[2]);
    check_floats("grouped_matmul", a, w, 3)?;
    if a.dims()[1] != w.dims()[1] {
        return Err(format!(
            "'grouped_matmul' contraction sizes differ: {a} has K = {}, {w} has K = {}",
            a.dims()[1],
            w.dims()[1]
        ));
    }
    check_group("grouped_matmul", group, &a.dims()[0])?;
    Ok(a.with_shape(Shape(vec![a.dims()[0].clone(), w.dims()[2].clone()])))
}

pub(super) fn infer_grouped_weight_grad(groups: u64, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 3)?;
    let (a, dy, group) = (x[0], x[1], x[2]);
    let op = "grouped_matmul_weight_grad";
    check_floats(op, a, dy, 2)?;
    if a.dims()[0] != dy.dims()[0] {
        return Err(format!("'{op}' row counts differ: {a} and {dy}"));
    }
    check_group(op, group, &a.dims()[0])?;
    if groups == 0 {
        return Err(format!("'{op}' needs groups >= 1"));
    }
    Ok(a.with_shape(Shape(vec![
        Dim::fixed(groups),
        a.dims()[1].clone(),
        dy.dims()[1].clone(),
    ])))
}

/// The number of groups of a `[E, K, N]` weight (static: parameters have static shapes,
/// and a symbolic one is reported when the gradient is built).
fn groups_of(b: &Builder, w: ValueId) -> Result<u64, String> {
    b.ty(w).dims()[0].as_static().ok_or_else(|| {
        format!(
            "'grouped_matmul' gradient needs a static group count, found {}",
            b.ty(w)
        )
    })
}

/// `dx[t] = g[t] @ w[group[t]]ᵀ` (a grouped product with each matrix transposed) and
/// `dw = grouped_matmul_weight_grad(x, g, group)`; the groups get none.
pub(super) fn vjp_grouped_matmul(
    b: &mut Builder,
    (x, w, group): (ValueId, ValueId, ValueId),
    g: ValueId,
    needs: &[bool],
) -> Result<Vec<Option<ValueId>>, String> {
    let dx = needs[0].then(|| {
        let wt = b.transpose_last(w);
        b.add(Op::GroupedMatMul, &[g, wt, group])
    });
    let dw = if needs[1] {
        let groups = groups_of(b, w)?;
        Some(b.add(Op::GroupedMatMulWeightGrad { groups }, &[x, g, group]))
    } else {
        None
    };
    Ok(vec![dx, dw, None])
}

/// With `dw[e] = Σ x[t]ᵀ dy[t]` and adjoint `G`: `dx[t] = dy[t] @ G[group[t]]ᵀ` and
/// `ddy[t] = x[t] @ G[group[t]]`, both grouped products.
pub(super) fn vjp_grouped_weight_grad(
    b: &mut Builder,
    (x, dy, group): (ValueId, ValueId, ValueId),
    g: ValueId,
    needs: &[bool],
) -> Vec<Option<ValueId>> {
    let dx = needs[0].then(|| {
        let gt = b.transpose_last(g);
        b.add(Op::GroupedMatMul, &[dy, gt, group])
    });
    let ddy = needs[1].then(|| b.add(Op::GroupedMatMul, &[x, g, group]));
    vec![dx, ddy, None]
}
