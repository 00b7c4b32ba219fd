//! Meaning of `gather` and `scatter_add` (see `compiler::ir::ops::indexing`).
//! An index outside `0..n` is an error, never a wrap-around.

use super::{map_indices, offset, strides, Ctx};
use crate::tensor::{Data, Tensor};

/// For each element of the gathered shape, the flat position in `table` it reads.
fn source_positions(axis: usize, table: &[usize], idx: &Tensor) -> Result<Vec<usize>, String> {
    let Data::Int(indices) = &idx.data else {
        unreachable!("indices are integers (verified)")
    };
    let ts = strides(table);
    let is = strides(&idx.shape);
    let k = idx.shape.len();
    let out_shape: Vec<usize> = table[..axis]
        .iter()
        .chain(&idx.shape)
        .chain(&table[axis + 1..])
        .copied()
        .collect();
    let n = table[axis] as i64;
    map_indices(&out_shape, |o| {
        let i = indices[offset(&o[axis..axis + k], &is)];
        if i < 0 || i >= n {
            return Err(format!("index {i} is out of range 0..{n} on axis {axis}"));
        }
        let pre = offset(&o[..axis], &ts[..axis]);
        let post = offset(&o[axis + k..], &ts[axis + 1..]);
        Ok(pre + i as usize * ts[axis] + post)
    })
    .into_iter()
    .collect()
}

pub(super) fn gather(
    axis: usize,
    table: &Tensor,
    idx: &Tensor,
    shape: Vec<usize>,
) -> Result<Tensor, String> {
    let index = source_positions(axis, &table.shape, idx)?;
    Ok(Tensor {
        dtype: table.dtype,
        shape,
        data: table.data.pick(&index),
    })
}

pub(super) fn scatter_add(
    ctx: Ctx,
    axis: usize,
    base: &Tensor,
    idx: &Tensor,
    upd: &Tensor,
) -> Result<Tensor, String> {
    let index = source_positions(axis, &base.shape, idx)?;
    let mut acc = base.to_f64_vec();
    for (k, &p) in index.iter().enumerate() {
        acc[p] += upd.data.get_f64(k);
    }
    Ok(ctx.numbers(base.dtype, base.shape.clone(), acc))
}
