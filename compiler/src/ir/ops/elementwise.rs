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

impl UnaryOp {
    /// Whether the op is defined on integers (otherwise floats only).
    pub fn accepts_ints(self) -> bool {
        matches!(self, UnaryOp::Neg | UnaryOp::Abs)
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
