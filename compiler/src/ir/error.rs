//! Errors of building graphs: what [`Builder`](super::Builder) and the checks of
//! parameters and initialisers reject. The messages are the ones users see.

use super::{SizeOverflow, TensorType, ValueId};
use thiserror::Error;

/// An initialiser whose numbers are out of range.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InitError {
    /// `uniform(low, high)` without finite `low < high`.
    #[error("'uniform(low, high)' needs finite low < high, found {low} and {high}")]
    Uniform {
        /// Lower bound given.
        low: f64,
        /// Upper bound given.
        high: f64,
    },
    /// `normal(mean, std)` without a finite mean and a finite `std > 0`.
    #[error(
        "'normal(mean, std)' needs a finite mean and a finite std above 0, found {mean} and {std}"
    )]
    Normal {
        /// Mean given.
        mean: f64,
        /// Standard deviation given.
        std: f64,
    },
}

/// A parameter or state type the runtime cannot own.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParamTypeError {
    /// The shape has symbols.
    #[error("a parameter needs a static shape, found {0}")]
    NotStatic(TensorType),
    /// The dtype is not a float.
    #[error("a parameter needs a float dtype, found {0}")]
    NotFloat(TensorType),
}

/// Why [`Builder`](super::Builder) refused to add a value, an update or an output.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BuildError {
    /// The value's size in bytes overflows.
    #[error(transparent)]
    Size(#[from] SizeOverflow),
    /// The name is not a valid value name.
    #[error("'{0}' is not a valid value name")]
    InvalidName(String),
    /// The name is taken.
    #[error("value '%{0}' is already defined")]
    Duplicate(String),
    /// A parameter or state of a type the runtime cannot own.
    #[error(transparent)]
    ParamType(#[from] ParamTypeError),
    /// A parameter or state with a bad initialiser.
    #[error(transparent)]
    Init(#[from] InitError),
    /// An operand that is not (yet) in the graph.
    #[error("operand {0} is not defined")]
    UndefinedOperand(ValueId),
    /// The op's shape rule rejects the operands.
    #[error("{message}")]
    Shape {
        /// The op's name.
        op: String,
        /// What the shape rule says is wrong.
        message: String,
    },
    /// The declared result type differs from the inferred one.
    #[error("declared type {declared} but '{op}' gives {inferred}")]
    DeclaredType {
        /// The op's name.
        op: String,
        /// The type written out.
        declared: TensorType,
        /// The type the shape rule gives.
        inferred: TensorType,
    },
    /// An update of a value that is neither a param nor a state.
    #[error("'%{0}' is not a param or state, so it cannot be updated")]
    NotUpdatable(String),
    /// An update whose new value has another type than its target.
    #[error("update of '%{target}' ({target_ty}) with '%{value}' of type {value_ty}")]
    UpdateType {
        /// The updated value's name.
        target: String,
        /// Its type.
        target_ty: TensorType,
        /// The new value's name.
        value: String,
        /// Its type.
        value_ty: TensorType,
    },
    /// A second update of the same target.
    #[error("'%{0}' is updated twice")]
    UpdatedTwice(String),
    /// A value marked as an output twice.
    #[error("'%{0}' is already an output")]
    AlreadyOutput(String),
}
