//! Host tensors: a dtype, a static shape and row-major elements.
//!
//! Floats of every width are held as `f64`, already rounded to their dtype, so one code
//! path serves f64, f32, f16, bf16 and f8e4m3; integers are `i64`, booleans `bool`.

use smelt_compiler::ir::DType;

/// The elements of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Float elements (any float dtype).
    Float(Vec<f64>),
    /// Integer elements (any int dtype).
    Int(Vec<i64>),
    /// Boolean elements.
    Bool(Vec<bool>),
}

impl Data {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// True if there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at positions `index` (any order, repeats allowed).
    pub fn pick(&self, index: &[usize]) -> Data {
        match self {
            Data::Float(v) => Data::Float(index.iter().map(|&i| v[i]).collect()),
            Data::Int(v) => Data::Int(index.iter().map(|&i| v[i]).collect()),
            Data::Bool(v) => Data::Bool(index.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Element `i` as a number (`bool` as 0 or 1).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Data::Float(v) => v[i],
            Data::Int(v) => v[i] as f64,
            Data::Bool(v) => f64::from(u8::from(v[i])),
        }
    }
}

/// A tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Element type.
    pub dtype: DType,
    /// Static shape.
    pub shape: Vec<usize>,
    /// Row-major elements, `shape.iter().product()` of them.
    pub data: Data,
}

impl Tensor {
    /// A float tensor; values are rounded to `dtype`.
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: Vec<f64>) -> Tensor {
        assert!(
            dtype.is_float(),
            "from_f64 makes float tensors, not {dtype}"
        );
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape and element count agree"
        );
        let values = values.into_iter().map(|x| round_to(dtype, x)).collect();
        Tensor {
            dtype,
            shape,
            data: Data::Float(values),
        }
    }

    /// An integer tensor.
    pub fn from_i64(dtype: DType, shape: Vec<usize>, values: Vec<i64>) -> Tensor {
        assert!(dtype.is_int(), "from_i64 makes int tensors, not {dtype}");
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape and element count agree"
        );
        Tensor {
            dtype,
            shape,
            data: Data::Int(values),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The elements as numbers.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.numel()).map(|i| self.data.get_f64(i)).collect()
    }

    /// The float elements; panics on other dtypes.
    pub fn floats(&self) -> &[f64] {
        match &self.data {
            Data::Float(v) => v,
            _ => panic!("expected a float tensor, found {}", self.dtype),
        }
    }

    /// The type, printed like the IR's (`f32[2, 3]`).
    pub fn type_string(&self) -> String {
        crate::interp::type_string(self.dtype, &self.shape)
    }
}

/// Rounds `x` to the nearest value of float dtype `dtype` (identity for `f64`, which is
/// the host representation; keeping `f32` values in f64 precision is the caller's choice:
/// see `interp::Precision`).
pub fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F64 => x,
        DType::F32 => x as f32 as f64,
        DType::F16 => half::f16::from_f64(x).to_f64(),
        DType::BF16 => half::bf16::from_f64(x).to_f64(),
        DType::F8E4M3 => round_f8e4m3(x),
        _ => x,
    }
}

/// Rounds to OCP FP8 E4M3 ("fn": no infinities; values beyond 448 saturate to NaN as in
/// conversion without saturation; NaN stays NaN). Round to nearest, ties to even.
pub fn round_f8e4m3(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let a = x.abs();
    if a == 0.0 {
        return x;
    }
    // Normal numbers have 3 mantissa bits and exponents -6..=8; below 2^-6 the spacing
    // is fixed at 2^-9 (subnormals).
    let exp = a.log2().floor().max(-6.0);
    let spacing = (exp - 3.0).exp2();
    let y = (a / spacing).round_ties_even() * spacing;
    if y > 448.0 {
        return f64::NAN;
    }
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8e4m3_rounds_to_representable_values() {
        assert_eq!(round_f8e4m3(1.0), 1.0);
        assert_eq!(round_f8e4m3(1.06), 1.0); // spacing 0.125 near 1
        assert_eq!(round_f8e4m3(1.07), 1.125);
        assert_eq!(round_f8e4m3(1.0625), 1.0); // tie to even
        assert_eq!(round_f8e4m3(1.1875), 1.25); // tie to even
        assert_eq!(round_f8e4m3(448.0), 448.0);
        assert!(round_f8e4m3(480.0).is_nan());
        assert_eq!(round_f8e4m3(-0.001953125), -0.001953125); // smallest subnormal 2^-9
        assert_eq!(round_f8e4m3(0.0009), 0.0);
    }

    #[test]
    fn half_types_round() {
        assert_eq!(round_to(DType::BF16, 1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_to(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_to(DType::F32, 0.1), 0.1f32 as f64);
    }
}
