//! Tensor types: an element type and a shape.

use super::{DType, Dim, Shape};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of a value: `f32[B, 784]`, `i32[B]`, `f32[]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
}

impl TensorType {
    /// A type from a dtype and a shape.
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    /// A type with static dimensions.
    pub fn fixed(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType::new(dtype, Shape::fixed(dims))
    }

    /// A scalar type.
    pub fn scalar(dtype: DType) -> TensorType {
        TensorType::new(dtype, Shape::scalar())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        self.shape.dims()
    }

    /// The same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType::new(dtype, self.shape.clone())
    }

    /// The same dtype with another shape.
    pub fn with_shape(&self, shape: Shape) -> TensorType {
        TensorType::new(self.dtype, shape)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
