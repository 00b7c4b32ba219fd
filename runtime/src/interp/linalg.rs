//! Meaning of `matmul` (see `compiler::ir::ops::linalg`): sums accumulate in f64.

use super::Ctx;
use crate::tensor::{Data, Tensor};

pub(super) fn matmul(ctx: Ctx, a: &Tensor, b: &Tensor, shape: Vec<usize>) -> Tensor {
    let r = a.shape.len();
    let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]);
    let batch: usize = a.shape[..r - 2].iter().product();
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let mut out = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let (xa, yb, ob) = (bi * m * k, bi * k * n, bi * m * n);
        for i in 0..m {
            for p in 0..k {
                let s = x[xa + i * k + p];
                for j in 0..n {
                    out[ob + i * n + j] += s * y[yb + p * n + j];
                }
            }
        }
    }
    match a.data {
        Data::Int(_) => ctx.numbers(a.dtype, shape, out),
        _ => ctx.floats(a.dtype, shape, out),
    }
}
