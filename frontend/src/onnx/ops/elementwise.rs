//! Elementwise ops: arithmetic, math functions, activations, comparisons, logic,
//! `Where`, `Clip`, `Cast`, and the trivial `Identity`, `Dropout`, `Constant`.

use super::one;
use crate::onnx::import::{unsupported, Importer, NodeCtx, OpResult, Out};
use crate::onnx::tensor::{ir_dtype, narrow_int_range, Const, ConstData};
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, Composite, UnaryOp};
use smelt_compiler::ir::{DType, Op, ValueId};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    let unary = |u| Some(u);
    let u = match op {
        "Neg" => unary(UnaryOp::Neg),
        "Abs" => unary(UnaryOp::Abs),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Reciprocal" => unary(UnaryOp::Recip),
        "Tanh" => unary(UnaryOp::Tanh),
        "Erf" => unary(UnaryOp::Erf),
        "Sin" => unary(UnaryOp::Sin),
        "Cos" => unary(UnaryOp::Cos),
        "Softsign" => unary(UnaryOp::Softsign),
        "Sinh" => unary(UnaryOp::Sinh),
        "Cosh" => unary(UnaryOp::Cosh),
        "Asinh" => unary(UnaryOp::Asinh),
        "Softplus" => unary(UnaryOp::Softplus),
        _ => None,
    };
    if let Some(u) = u {
        let x = im.input(node, 0)?;
        return one(im.op(Op::Unary(u), &[x])?);
    }
    let binary = match op {
        "Add" | "Sum" => Some(BinaryOp::Add),
        "Sub" => Some(BinaryOp::Sub),
        "Mul" => Some(BinaryOp::Mul),
        "Div" => Some(BinaryOp::Div),
        "Max" => Some(BinaryOp::Max),
        "Min" => Some(BinaryOp::Min),
        _ => None,
    };
    if let Some(bop) = binary {
        // Variadic for Sum, Max and Min; two operands otherwise.
        let mut acc = im.input(node, 0)?;
        for i in 1..node.input_count() {
            let next = im.input(node, i)?;
            let xs = im.broadcast_all(&[acc, next])?;
            acc = im.op(Op::Binary(bop), &xs)?;
        }
        return one(acc);
    }
    let compare = match op {
        "Equal" => Some(CompareOp::Eq),
        "Less" => Some(CompareOp::Lt),
        "LessOrEqual" => Some(CompareOp::Le),
        "Greater" => Some(CompareOp::Gt),
        "GreaterOrEqual" => Some(CompareOp::Ge),
        _ => None,
    };
    if let Some(c) = compare {
        let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
        let xs = im.broadcast_all(&[a, b])?;
        return one(im.op(Op::Compare(c), &xs)?);
    }
    match op {
        "Pow" => one(pow(im, node)?),
        "Relu" => {
            let x = im.input(node, 0)?;
            if im.ty(x).dtype.is_float() {
                one(im.op(Op::Composite(Composite::Relu), &[x])?)
            } else {
                let zero = im.splat_like(0.0, x)?;
                one(im.op(Op::Binary(BinaryOp::Max), &[x, zero])?)
            }
        }
        "Sigmoid" => {
            let x = im.input(node, 0)?;
            one(im.op(Op::Composite(Composite::Sigmoid), &[x])?)
        }
        "Gelu" => {
            let x = im.input(node, 0)?;
            let tanh = match node.string("approximate")?.as_deref() {
                None | Some("none") => false,
                Some("tanh") => true,
                Some(other) => return Err(format!("unknown Gelu approximation '{other}'").into()),
            };
            one(im.op(Op::Composite(Composite::Gelu { tanh }), &[x])?)
        }
        "LeakyRelu" => {
            let x = im.input(node, 0)?;
            let alpha = node.float_or("alpha", 0.01)?;
            let zero = im.splat_like(0.0, x)?;
            let neg = im.op(Op::Compare(CompareOp::Lt), &[x, zero])?;
            let a = im.splat_like(alpha, x)?;
            let scaled = im.op(Op::Binary(BinaryOp::Mul), &[x, a])?;
            one(im.op(Op::Select, &[neg, scaled, x])?)
        }
        "Not" | "And" | "Or" | "Xor" => one(logic(im, node, op)?),
        "Where" => {
            let c = im.input(node, 0)?;
            let (a, b) = (im.input(node, 1)?, im.input(node, 2)?);
            let xs = im.broadcast_all(&[c, a, b])?;
            one(im.op(Op::Select, &xs)?)
        }
        "Clip" => one(clip(im, node)?),
        "Cast" | "CastLike" => cast(im, node, op),
        "Identity" => one(im.input(node, 0)?),
        "Dropout" => {
            if node.input_name(2).is_some() || node.int_or("training_mode", 0)? != 0 {
                return unsupported("Dropout in training mode is not supported");
            }
            let x = im.input(node, 0)?;
            let mut out = vec![Out::Ir(x)];
            if node.wants_output(1) {
                let ty = im.ty(x);
                let mask = im.splat(1.0, DType::Bool, ty.dims().to_vec())?;
                out.push(Out::Ir(mask));
            }
            Ok(Some(out))
        }
        "Constant" => Ok(Some(vec![Out::Const(constant(node)?)])),
        _ => Ok(None),
    }
}

/// `Pow` allows mixed base and exponent types; the result has the base's type. Mixed
/// int/float pairs compute in f32 (f64 for an f64 exponent), as numpy does before
/// casting back.
fn pow(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
    let (ta, tb) = (im.ty(a).dtype, im.ty(b).dtype);
    let work = if ta == tb || ta.is_float() {
        ta
    } else if tb == DType::F64 {
        DType::F64
    } else if tb.is_float() {
        DType::F32
    } else {
        DType::I64
    };
    let (a2, b2) = (im.cast(a, work)?, im.cast(b, work)?);
    let xs = im.broadcast_all(&[a2, b2])?;
    let y = im.op(Op::Binary(BinaryOp::Pow), &xs)?;
    im.cast(y, ta)
}

fn logic(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<ValueId> {
    let a = im.input(node, 0)?;
    if op == "Not" {
        let t = im.splat_like(1.0, a)?;
        let f = im.splat_like(0.0, a)?;
        return im.op(Op::Select, &[a, f, t]);
    }
    let b = im.input(node, 1)?;
    let xs = im.broadcast_all(&[a, b])?;
    let (a, b) = (xs[0], xs[1]);
    match op {
        "And" => {
            let f = im.splat_like(0.0, a)?;
            im.op(Op::Select, &[a, b, f])
        }
        "Or" => {
            let t = im.splat_like(1.0, a)?;
            im.op(Op::Select, &[a, t, b])
        }
        _ => im.op(Op::Compare(CompareOp::Ne), &[a, b]),
    }
}

/// `Clip`: bounds are attributes before opset 11, optional inputs after.
fn clip(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let x = im.input(node, 0)?;
    let ty = im.ty(x);
    let (lo, hi) = if node.opset < 11 {
        let lo = node.float_or("min", f64::NEG_INFINITY)?;
        let hi = node.float_or("max", f64::INFINITY)?;
        (
            Some(im.splat(lo, ty.dtype, ty.dims().to_vec())?),
            Some(im.splat(hi, ty.dtype, ty.dims().to_vec())?),
        )
    } else {
        let mut bound = |i| -> OpResult<Option<ValueId>> {
            match im.opt_input(node, i)? {
                Some(v) => Ok(Some(im.broadcast_to(v, ty.dims())?)),
                None => Ok(None),
            }
        };
        (bound(1)?, bound(2)?)
    };
    let mut y = x;
    if let Some(lo) = lo {
        y = im.op(Op::Binary(BinaryOp::Max), &[y, lo])?;
    }
    if let Some(hi) = hi {
        y = im.op(Op::Binary(BinaryOp::Min), &[y, hi])?;
    }
    Ok(y)
}

fn cast(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    let x = im.input(node, 0)?;
    // The ONNX element type aimed at, where known (a `CastLike` whose model does not
    // declare its second input's type only tells the IR dtype).
    let (target, target_code) = if op == "CastLike" {
        let like = im.input(node, 1)?;
        let code = node
            .input_name(1)
            .and_then(|name| im.elem_types.get(name).copied());
        (im.ty(like).dtype, code)
    } else {
        let to = node.int("to")?.ok_or("'Cast' needs attribute 'to'")?;
        let to = i32::try_from(to).map_err(|_| format!("unknown element type {to}"))?;
        let dtype = ir_dtype(to).map_err(crate::onnx::import::Fail::Unsupported)?;
        (dtype, Some(to))
    };
    if let Some((lo, hi)) = target_code.and_then(narrow_int_range) {
        return one(cast_to_narrow_int(im, x, target, lo, hi)?);
    }
    let from = im.ty(x).dtype;
    let mut x = x;
    // Casting to float8 saturates by default: clamp to the largest finite value first.
    if target == DType::F8E4M3 && from.is_float() && node.int_or("saturate", 1)? != 0 {
        let hi = im.splat_like(448.0, x)?;
        let lo = im.splat_like(-448.0, x)?;
        x = im.op(Op::Binary(BinaryOp::Min), &[x, hi])?;
        x = im.op(Op::Binary(BinaryOp::Max), &[x, lo])?;
    }
    one(im.cast(x, target)?)
}

/// Casts `x` to an integer type whose values `lo..=hi` the IR holds in the wider
/// `target`: floats are truncated toward zero (through i64), then the value wraps
/// around modulo the type's range, as a two's-complement machine (and ONNX's reference
/// data for int4, uint4, int2, uint2) does.
fn cast_to_narrow_int(
    im: &mut Importer,
    x: ValueId,
    target: DType,
    lo: i64,
    hi: i64,
) -> OpResult<ValueId> {
    let x = im.cast(x, DType::I64)?;
    let span = (hi - lo + 1) as f64;
    // ((x - lo) mod span) + lo, with a non-negative remainder: the IR's integer
    // division truncates, so negative remainders are moved up by one span.
    let low = im.splat_like(lo as f64, x)?;
    let shifted = im.op(Op::Binary(BinaryOp::Sub), &[x, low])?;
    let span_v = im.splat_like(span, x)?;
    let quotient = im.op(Op::Binary(BinaryOp::Div), &[shifted, span_v])?;
    let whole = im.op(Op::Binary(BinaryOp::Mul), &[quotient, span_v])?;
    let rem = im.op(Op::Binary(BinaryOp::Sub), &[shifted, whole])?;
    let zero = im.splat_like(0.0, x)?;
    let negative = im.op(Op::Compare(CompareOp::Lt), &[rem, zero])?;
    let lifted = im.op(Op::Binary(BinaryOp::Add), &[rem, span_v])?;
    let rem = im.op(Op::Select, &[negative, lifted, rem])?;
    let wrapped = im.op(Op::Binary(BinaryOp::Add), &[rem, low])?;
    im.cast(wrapped, target)
}

fn constant(node: &NodeCtx) -> OpResult<Const> {
    if let Some(t) = node.tensor("value")? {
        return Ok(t);
    }
    let scalar_f = node.float_or("value_float", f64::NAN)?;
    if node.has_attr("value_float") {
        return Ok(Const {
            dtype: DType::F32,
            shape: vec![],
            data: ConstData::Float(vec![scalar_f as f32 as f64]),
        });
    }
    if let Some(fs) = node.floats("value_floats") {
        return Ok(Const {
            dtype: DType::F32,
            shape: vec![fs.len()],
            data: ConstData::Float(fs),
        });
    }
    if let Some(i) = node.int("value_int")? {
        return Ok(Const {
            dtype: DType::I64,
            shape: vec![],
            data: ConstData::Int(vec![i]),
        });
    }
    if let Some(is) = node.ints("value_ints") {
        return Ok(Const::ints(is));
    }
    unsupported("this form of 'Constant' (sparse or string value) is not supported")
}
