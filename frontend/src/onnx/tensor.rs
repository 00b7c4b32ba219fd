//! ONNX element types and `TensorProto` decoding into host constants.
//!
//! The IR has no f64, no unsigned and no narrow integer types. Narrow and unsigned
//! integers are held in the smallest IR integer type that holds every value of theirs
//! (int8, int16, uint8, uint16 -> i32; uint32, uint64 -> i64); wrap-around on overflow
//! of the original type is not modelled. f64 and the exotic float formats (e5m2, fnuz,
//! e2m1, e8m0, 2- and 4-bit integers) are rejected with a message naming them.

use super::proto::TensorProto;
use smelt_compiler::ir::DType;

/// ONNX `TensorProto.DataType` codes used here.
pub mod code {
    /// float32.
    pub const FLOAT: i32 = 1;
    /// uint8.
    pub const UINT8: i32 = 2;
    /// int8.
    pub const INT8: i32 = 3;
    /// uint16.
    pub const UINT16: i32 = 4;
    /// int16.
    pub const INT16: i32 = 5;
    /// int32.
    pub const INT32: i32 = 6;
    /// int64.
    pub const INT64: i32 = 7;
    /// string.
    pub const STRING: i32 = 8;
    /// bool.
    pub const BOOL: i32 = 9;
    /// float16.
    pub const FLOAT16: i32 = 10;
    /// float64.
    pub const DOUBLE: i32 = 11;
    /// uint32.
    pub const UINT32: i32 = 12;
    /// uint64.
    pub const UINT64: i32 = 13;
    /// bfloat16.
    pub const BFLOAT16: i32 = 16;
    /// float8 e4m3fn.
    pub const FLOAT8E4M3FN: i32 = 17;
}

/// The ONNX name of element type `code` (for messages).
pub fn onnx_type_name(code: i32) -> String {
    let name = match code {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        _ => return format!("element type {code}"),
    };
    name.to_string()
}

/// The IR dtype that holds ONNX element type `code`, or why there is none.
pub fn ir_dtype(code: i32) -> Result<DType, String> {
    use code::*;
    Ok(match code {
        FLOAT => DType::F32,
        FLOAT16 => DType::F16,
        BFLOAT16 => DType::BF16,
        FLOAT8E4M3FN => DType::F8E4M3,
        INT8 | INT16 | UINT8 | UINT16 | INT32 => DType::I32,
        INT64 | UINT32 | UINT64 => DType::I64,
        BOOL => DType::Bool,
        _ => {
            return Err(format!(
                "element type {} is not supported (the IR has f32, f16, bf16, f8e4m3, i32, i64 and bool)",
                onnx_type_name(code)
            ))
        }
    })
}

/// The elements of a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    /// Float elements, already rounded to their dtype.
    Float(Vec<f64>),
    /// Integer elements.
    Int(Vec<i64>),
    /// Boolean elements.
    Bool(Vec<bool>),
}

/// A tensor known at import time (an initializer, a `Constant`, a folded shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// The IR dtype holding it.
    pub dtype: DType,
    /// Static shape.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: ConstData,
}

impl Const {
    /// A 1-D i64 constant.
    pub fn ints(values: Vec<i64>) -> Const {
        Const {
            dtype: DType::I64,
            shape: vec![values.len()],
            data: ConstData::Int(values),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            ConstData::Float(v) => v.len(),
            ConstData::Int(v) => v.len(),
            ConstData::Bool(v) => v.len(),
        }
    }

    /// The elements as integers (floats truncated), for shapes, axes and indices.
    pub fn as_i64s(&self) -> Vec<i64> {
        match &self.data {
            ConstData::Float(v) => v.iter().map(|&x| x as i64).collect(),
            ConstData::Int(v) => v.clone(),
            ConstData::Bool(v) => v.iter().map(|&b| i64::from(b)).collect(),
        }
    }

    /// The elements as numbers.
    pub fn as_f64s(&self) -> Vec<f64> {
        match &self.data {
            ConstData::Float(v) => v.clone(),
            ConstData::Int(v) => v.iter().map(|&x| x as f64).collect(),
            ConstData::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
        }
    }
}

fn check_len(what: &str, have: usize, want: usize) -> Result<(), String> {
    if have != want {
        return Err(format!(
            "tensor data holds {have} {what} but its shape needs {want}"
        ));
    }
    Ok(())
}

/// Decodes a `TensorProto` (inline data: typed fields or `raw_data`, little-endian).
pub fn decode_tensor(t: &TensorProto) -> Result<Const, String> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err("tensors with external data are not supported".into());
    }
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let code = t.data_type.unwrap_or(0);
    let dtype = ir_dtype(code)?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= (1 << 32))
        .ok_or_else(|| format!("tensor shape {shape:?} is too large"))?;
    let data = match &t.raw_data {
        Some(raw) => decode_raw(code, raw, n)?,
        None => decode_typed(code, t, n)?,
    };
    Ok(Const { dtype, shape, data })
}

fn decode_raw(code: i32, raw: &[u8], n: usize) -> Result<ConstData, String> {
    use code::*;
    let width = match code {
        FLOAT | INT32 | UINT32 => 4,
        INT64 | UINT64 | DOUBLE => 8,
        FLOAT16 | BFLOAT16 | INT16 | UINT16 => 2,
        _ => 1,
    };
    check_len("bytes", raw.len(), n * width)?;
    let words = raw.chunks_exact(width);
    let le = |c: &[u8]| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    };
    Ok(match code {
        FLOAT => ConstData::Float(words.map(|c| f32::from_bits(le(c) as u32) as f64).collect()),
        FLOAT16 => ConstData::Float(
            words
                .map(|c| half::f16::from_bits(le(c) as u16).to_f64())
                .collect(),
        ),
        BFLOAT16 => ConstData::Float(
            words
                .map(|c| half::bf16::from_bits(le(c) as u16).to_f64())
                .collect(),
        ),
        FLOAT8E4M3FN => ConstData::Float(words.map(|c| f8e4m3_to_f64(c[0])).collect()),
        INT8 => ConstData::Int(words.map(|c| i64::from(c[0] as i8)).collect()),
        UINT8 => ConstData::Int(words.map(|c| i64::from(c[0])).collect()),
        INT16 => ConstData::Int(words.map(|c| i64::from(le(c) as u16 as i16)).collect()),
        UINT16 => ConstData::Int(words.map(|c| i64::from(le(c) as u16)).collect()),
        INT32 => ConstData::Int(words.map(|c| i64::from(le(c) as u32 as i32)).collect()),
        UINT32 => ConstData::Int(words.map(|c| le(c) as i64).collect()),
        INT64 => ConstData::Int(words.map(|c| le(c) as i64).collect()),
        UINT64 => ConstData::Int(
            words
                .map(|c| uint64_value(le(c)))
                .collect::<Result<_, _>>()?,
        ),
        BOOL => ConstData::Bool(words.map(|c| c[0] != 0).collect()),
        _ => return Err(format!("cannot decode {}", onnx_type_name(code))),
    })
}

fn uint64_value(x: u64) -> Result<i64, String> {
    i64::try_from(x).map_err(|_| format!("uint64 value {x} does not fit the IR's i64"))
}

fn decode_typed(code: i32, t: &TensorProto, n: usize) -> Result<ConstData, String> {
    use code::*;
    let int32s = || -> Result<&[i32], String> {
        check_len("int32 values", t.int32_data.len(), n)?;
        Ok(&t.int32_data)
    };
    Ok(match code {
        FLOAT => {
            check_len("floats", t.float_data.len(), n)?;
            ConstData::Float(t.float_data.iter().map(|&x| f64::from(x)).collect())
        }
        // Narrow types are stored one per int32 (floats as their bit patterns).
        FLOAT16 => ConstData::Float(
            int32s()?
                .iter()
                .map(|&x| half::f16::from_bits(x as u16).to_f64())
                .collect(),
        ),
        BFLOAT16 => ConstData::Float(
            int32s()?
                .iter()
                .map(|&x| half::bf16::from_bits(x as u16).to_f64())
                .collect(),
        ),
        FLOAT8E4M3FN => {
            ConstData::Float(int32s()?.iter().map(|&x| f8e4m3_to_f64(x as u8)).collect())
        }
        INT8 | INT16 | UINT8 | UINT16 | INT32 => {
            ConstData::Int(int32s()?.iter().map(|&x| i64::from(x)).collect())
        }
        BOOL => ConstData::Bool(int32s()?.iter().map(|&x| x != 0).collect()),
        INT64 => {
            check_len("int64 values", t.int64_data.len(), n)?;
            ConstData::Int(t.int64_data.clone())
        }
        UINT32 | UINT64 => {
            check_len("uint64 values", t.uint64_data.len(), n)?;
            ConstData::Int(
                t.uint64_data
                    .iter()
                    .map(|&x| uint64_value(x))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => return Err(format!("cannot decode {}", onnx_type_name(code))),
    })
}

/// Decodes one OCP FP8 E4M3FN byte (no infinities; `S.1111.111` is NaN).
fn f8e4m3_to_f64(bits: u8) -> f64 {
    let sign = if bits & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 3) & 0x0f);
    let mant = f64::from(bits & 0x07);
    if exp == 0x0f && bits & 0x07 == 0x07 {
        return f64::NAN;
    }
    let magnitude = if exp == 0 {
        mant / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f64.powi(exp - 7)
    };
    sign * magnitude
}

/// Rounds `x` to float dtype `dtype`.
pub fn round_float(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => half::f16::from_f64(x).to_f64(),
        DType::BF16 => half::bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f8e4m3_bytes_decode() {
        assert_eq!(f8e4m3_to_f64(0x38), 1.0);
        assert_eq!(f8e4m3_to_f64(0x7e), 448.0);
        assert_eq!(f8e4m3_to_f64(0x01), 2f64.powi(-9));
        assert!(f8e4m3_to_f64(0x7f).is_nan());
        assert_eq!(f8e4m3_to_f64(0xb8), -1.0);
    }

    #[test]
    fn raw_data_must_match_the_shape() {
        let t = TensorProto {
            dims: vec![2],
            data_type: Some(code::FLOAT),
            raw_data: Some(vec![0; 7]),
            ..Default::default()
        };
        assert!(decode_tensor(&t).unwrap_err().contains("7 bytes"));
    }
}
