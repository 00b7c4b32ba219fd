//! The graph IR: types, ops, graphs, the verifier and the serial forms.
//!
//! A [`Graph`] is a list of named, typed [`Value`]s in definition order (inputs,
//! parameters and op nodes) plus its outputs. Broadcasting is explicit, every value's
//! type is stored, and composite ops ([`ops::Composite`]) are defined by their
//! expansion into primitives.

mod attr;
mod builder;
mod dtype;
mod error;
mod graph;
pub mod json;
pub mod ops;
mod shape;
pub mod text;
mod types;
mod verify;

pub use attr::{format_float, Attr};
pub use builder::{check_param_type, Builder};
pub use dtype::DType;
pub use error::{BuildError, InitError, ParamTypeError};
pub use graph::{is_value_name, Def, Graph, Init, Value, ValueId};
pub use ops::Op;
pub use shape::{
    is_symbol, parse_size, size_add, size_mul, Bindings, Dim, DimError, DimParseError, Shape,
    SizeOverflow, MAX_SIZE,
};
pub use types::TensorType;
pub use verify::{verify, VerifyError};
