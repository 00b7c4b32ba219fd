//! Meaning of the elementwise ops (see `compiler::ir::ops::elementwise`).

use super::{wrap_int, Ctx};
use crate::tensor::{Data, Tensor};
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use smelt_compiler::ir::DType;

pub(super) fn unary(ctx: Ctx, op: UnaryOp, x: &Tensor) -> Tensor {
    if let (Data::Int(v), Some(int)) = (&x.data, op.def().int) {
        let data = v.iter().map(|&a| wrap_int(x.dtype, int.apply(a))).collect();
        return Tensor {
            data: Data::Int(data),
            ..x.clone()
        };
    }
    let f = op.def().reference;
    ctx.floats(
        x.dtype,
        x.shape.clone(),
        x.floats().iter().map(|&a| f(a)).collect(),
    )
}

pub(super) fn binary(ctx: Ctx, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    match (&a.data, &b.data) {
        (Data::Int(x), Data::Int(y)) => {
            let data = x
                .iter()
                .zip(y)
                .map(|(&p, &q)| {
                    op.eval_int(p, q)
                        .map(|r| wrap_int(a.dtype, r))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            Ok(Tensor {
                data: Data::Int(data),
                ..a.clone()
            })
        }
        _ => {
            let values = a
                .floats()
                .iter()
                .zip(b.floats())
                .map(|(&p, &q)| op.eval(p, q))
                .collect();
            Ok(ctx.floats(a.dtype, a.shape.clone(), values))
        }
    }
}

/// Whether `x op y` holds: the meaning of every comparison, shared by all backends
/// (NaN compares unequal to everything, like IEEE).
pub fn holds<T: PartialOrd>(op: CompareOp, x: T, y: T) -> bool {
    match op {
        CompareOp::Eq => x == y,
        CompareOp::Ne => x != y,
        CompareOp::Lt => x < y,
        CompareOp::Le => x <= y,
        CompareOp::Gt => x > y,
        CompareOp::Ge => x >= y,
    }
}

pub(super) fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Tensor {
    let data = match (&a.data, &b.data) {
        // Compare i64 exactly (f64 would merge neighbours above 2^53).
        (Data::Int(x), Data::Int(y)) => x.iter().zip(y).map(|(p, q)| holds(op, p, q)).collect(),
        _ => (0..a.numel())
            .map(|i| holds(op, a.data.get_f64(i), b.data.get_f64(i)))
            .collect(),
    };
    Tensor {
        dtype: DType::Bool,
        shape: a.shape.clone(),
        data: Data::Bool(data),
    }
}

pub(super) fn select(c: &Tensor, a: &Tensor, b: &Tensor) -> Tensor {
    let Data::Bool(cond) = &c.data else {
        unreachable!("select's condition is bool (verified)")
    };
    let n = a.numel();
    let index: Vec<usize> = (0..n).map(|i| if cond[i] { i } else { n + i }).collect();
    let both = match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => Data::Float([x.as_slice(), y].concat()),
        (Data::Int(x), Data::Int(y)) => Data::Int([x.as_slice(), y].concat()),
        (Data::Bool(x), Data::Bool(y)) => Data::Bool([x.as_slice(), y].concat()),
        _ => unreachable!("select's branches have one type (verified)"),
    };
    Tensor {
        data: both.pick(&index),
        ..a.clone()
    }
}
