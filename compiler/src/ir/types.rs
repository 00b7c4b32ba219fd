//! Tensor types: an element type and a shape.

use super::{size_mul, Bindings, DType, Dim, DimError, Shape, SizeOverflow};
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

    /// Checks that a buffer of this type can exist: its element count (symbols and zero
    /// axes counted as 1) times the element size stays within [`super::MAX_SIZE`] bytes.
    /// The verifier checks it for every value, so code working on a verified graph can
    /// multiply any of a type's static sizes without overflow.
    pub fn check_size(&self) -> Result<(), SizeOverflow> {
        let elems = self.shape.element_bound()?;
        size_mul(elems, self.dtype.size_bytes() as u64, || {
            format!("the size in bytes of {self}")
        })
        .map(|_| ())
    }

    /// Bytes of a value of this type under `bindings`, at `elem_bytes` per element
    /// (a backend may hold elements wider than the dtype).
    pub fn bytes(&self, bindings: &Bindings, elem_bytes: u64) -> Result<u64, DimError> {
        // `eval` has checked the product of the sizes.
        let elems: u64 = self
            .shape
            .eval(bindings)?
            .iter()
            .map(|&n| n as u64)
            .product();
        Ok(size_mul(elems, elem_bytes, || {
            format!("the size in bytes of {self}")
        })?)
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
