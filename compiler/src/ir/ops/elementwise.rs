//! Elementwise ops: unary math, binary arithmetic, comparisons, `select` and `cast`.
//!
//! Shape rule: operands of binary ops, comparisons and `select` have identical types
//! (broadcasting is explicit in the IR, through `broadcast`); the result has that shape.

use super::{expect_arity, ShapeResult};
use crate::ir::{DType, TensorType};

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }
        impl $name {
            /// Every variant.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The op's name in the text form.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
            /// The variant with text name `name`.
            pub fn from_name(name: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}
pub(crate) use named_enum;

named_enum! {
    /// One-operand math on floats.
    UnaryOp {
        /// `-x` (ints too).
        Neg = "neg",
        /// `|x|` (ints too).
        Abs = "abs",
        /// `e^x`.
        Exp = "exp",
        /// Natural logarithm.
        Log = "log",
        /// Square root.
        Sqrt = "sqrt",
        /// `1/sqrt(x)`.
        Rsqrt = "rsqrt",
        /// `1/x`.
        Recip = "recip",
        /// Hyperbolic tangent.
        Tanh = "tanh",
        /// The error function.
        Erf = "erf",
        /// Sine.
        Sin = "sin",
        /// Cosine.
        Cos = "cos",
        /// `x / (1 + |x|)`.
        Softsign = "softsign",
        /// Hyperbolic sine.
        Sinh = "sinh",
        /// Hyperbolic cosine.
        Cosh = "cosh",
        /// Inverse hyperbolic sine.
        Asinh = "asinh",
        /// `ln(1 + e^x)`.
        Softplus = "softplus",
    }
}

named_enum! {
    /// Two-operand arithmetic.
    BinaryOp {
        /// `a + b`.
        Add = "add",
        /// `a - b`.
        Sub = "sub",
        /// `a * b`.
        Mul = "mul",
        /// `a / b` (integer division truncates toward zero).
        Div = "div",
        /// Larger of the two (NaN if either is NaN).
        Max = "max",
        /// Smaller of the two (NaN if either is NaN).
        Min = "min",
        /// `a ^ b`.
        Pow = "pow",
    }
}

named_enum! {
    /// Comparisons; the result is `bool`.
    CompareOp {
        /// `a == b`.
        Eq = "eq",
        /// `a != b`.
        Ne = "ne",
        /// `a < b`.
        Lt = "lt",
        /// `a <= b`.
        Le = "le",
        /// `a > b`.
        Gt = "gt",
        /// `a >= b`.
        Ge = "ge",
    }
}

/// An integer operation with no result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntArithError {
    /// `div` by zero.
    #[error("integer division by zero")]
    DivisionByZero,
    /// `pow` with a negative exponent (no integer result).
    #[error("integer power with negative exponent {0}")]
    NegativeExponent(i64),
}

// The binary ops' meaning, written once: the interpreter, the optimiser's folding and the
// CPU evaluator and library kernels call these (the kernels with `op` constant per loop,
// so the match folds away); the JIT and PTX lower each op in their own exhaustive match.
impl BinaryOp {
    /// `a op b` on floats, in f64: the reference. `max`/`min` propagate NaN.
    pub fn eval(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max | BinaryOp::Min if a.is_nan() || b.is_nan() => f64::NAN,
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Pow => a.powf(b),
        }
    }

    /// `a op b` on f32, as the CPU backend computes it: the reference, rounded once
    /// (for `+ − × ÷` exactly f32's own correctly rounded result, since f64 holds the
    /// exact value of those on f32 operands to well past double rounding's limit).
    #[inline(always)]
    pub fn eval_f32(self, a: f32, b: f32) -> f32 {
        self.eval(a.into(), b.into()) as f32
    }

    /// `a op b` on integers, wrapping, before narrowing to the dtype's width.
    #[inline(always)]
    pub fn eval_int(self, a: i64, b: i64) -> Result<i64, IntArithError> {
        Ok(match self {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Div if b == 0 => return Err(IntArithError::DivisionByZero),
            BinaryOp::Div => a.wrapping_div(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            BinaryOp::Pow if b < 0 => return Err(IntArithError::NegativeExponent(b)),
            BinaryOp::Pow => a.wrapping_pow(b.min(u32::MAX as i64) as u32),
        })
    }

    /// Whether the integer op can fail (so fusion leaves it to library kernels).
    pub fn int_can_fail(self) -> bool {
        matches!(self, BinaryOp::Div | BinaryOp::Pow)
    }
}

pub(super) fn infer_unary(op: UnaryOp, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 1)?;
    let ok = x[0].dtype.is_float() || (op.accepts_ints() && x[0].dtype.is_int());
    if !ok {
        return Err(format!("'{}' is not defined on {}", op.name(), x[0].dtype));
    }
    Ok(x[0].clone())
}

fn same_types(name: &str, x: &[&TensorType]) -> ShapeResult {
    if x[0] != x[1] {
        return Err(format!(
            "operands of '{name}' must have the same type (broadcast explicitly), found {} and {}",
            x[0], x[1]
        ));
    }
    Ok(x[0].clone())
}

pub(super) fn infer_binary(op: BinaryOp, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 2)?;
    let t = same_types(op.name(), x)?;
    if t.dtype == DType::Bool {
        return Err(format!("'{}' is not defined on bool", op.name()));
    }
    Ok(t)
}

pub(super) fn infer_compare(op: CompareOp, x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 2)?;
    Ok(same_types(op.name(), x)?.with_dtype(DType::Bool))
}

pub(super) fn infer_select(x: &[&TensorType]) -> ShapeResult {
    expect_arity(x, 3)?;
    if x[0].dtype != DType::Bool {
        return Err(format!(
            "the condition of 'select' must be bool, found {}",
            x[0]
        ));
    }
    let t = same_types("select", &x[1..])?;
    if x[0].shape != t.shape {
        return Err(format!(
            "the condition of 'select' must have the shape of its operands: {} vs {}",
            x[0].shape, t.shape
        ));
    }
    Ok(t)
}

pub(super) fn infer_cast(x: &[&TensorType], declared: &TensorType) -> ShapeResult {
    expect_arity(x, 1)?;
    if x[0].shape != declared.shape {
        return Err(format!(
            "'cast' changes only the dtype: operand has shape {}, result {}",
            x[0].shape, declared.shape
        ));
    }
    Ok(declared.clone())
}

// Gradients (vector-Jacobian products): `g` is the adjoint of the result `y`.

use crate::ir::{Builder, ValueId};

pub(super) fn vjp_binary(
    op: BinaryOp,
    b: &mut Builder,
    (l, r): (ValueId, ValueId),
    y: ValueId,
    g: ValueId,
    needs: &[bool],
) -> Vec<Option<ValueId>> {
    use BinaryOp::*;
    let want = |i: usize| needs.get(i).copied().unwrap_or(false);
    let mut out = vec![None, None];
    match op {
        Add => out = vec![Some(g), Some(g)],
        Sub => {
            out[0] = Some(g);
            if want(1) {
                out[1] = Some(b.unary(UnaryOp::Neg, g));
            }
        }
        Mul => {
            if want(0) {
                out[0] = Some(b.binary(Mul, g, r));
            }
            if want(1) {
                out[1] = Some(b.binary(Mul, g, l));
            }
        }
        Div => {
            if want(0) {
                out[0] = Some(b.binary(Div, g, r));
            }
            if want(1) {
                // d(l/r)/dr = -y/r
                let t = b.binary(Mul, g, y);
                let t = b.binary(Div, t, r);
                out[1] = Some(b.unary(UnaryOp::Neg, t));
            }
        }
        Max | Min => {
            // The adjoint goes to the operand that was chosen; ties go to the left one.
            let cmp = if op == Max {
                CompareOp::Ge
            } else {
                CompareOp::Le
            };
            let left = b.compare(cmp, l, r);
            let zero = b.zeros_like(g);
            if want(0) {
                out[0] = Some(b.add(super::Op::Select, &[left, g, zero]));
            }
            if want(1) {
                out[1] = Some(b.add(super::Op::Select, &[left, zero, g]));
            }
        }
        Pow => {
            if want(0) {
                // d(l^r)/dl = r * l^(r-1)
                let rm1 = b.binary_scalar(Sub, r, 1.0);
                let p = b.binary(Pow, l, rm1);
                let t = b.binary(Mul, r, p);
                out[0] = Some(b.binary(Mul, g, t));
            }
            if want(1) {
                // d(l^r)/dr = y * ln l
                let ln = b.unary(UnaryOp::Log, l);
                let t = b.binary(Mul, y, ln);
                out[1] = Some(b.binary(Mul, g, t));
            }
        }
    }
    out
}

pub(super) fn vjp_select(
    b: &mut Builder,
    c: ValueId,
    g: ValueId,
    needs: &[bool],
) -> Vec<Option<ValueId>> {
    let zero = b.zeros_like(g);
    let pick = |b: &mut Builder, i: usize, ops: [ValueId; 3]| {
        needs[i].then(|| b.add(super::Op::Select, &ops))
    };
    vec![None, pick(b, 1, [c, g, zero]), pick(b, 2, [c, zero, g])]
}

pub(super) fn vjp_cast(b: &mut Builder, x: ValueId, g: ValueId) -> Option<ValueId> {
    let ty = b.ty(x).clone();
    ty.dtype
        .is_float()
        .then(|| b.add_typed(super::Op::Cast, &[g], ty))
}
