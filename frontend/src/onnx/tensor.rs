//! ONNX element types and `TensorProto` decoding into host constants.
//!
//! The IR has no unsigned and no narrow integer types. Narrow and unsigned integers are
//! held in the smallest IR integer type that holds every value of theirs (int2, int4,
//! int8, int16, uint2, uint4, uint8, uint16 -> i32; uint32, uint64 -> i64); the packed
//! 2- and 4-bit formats are unpacked into one i32 per element. Arithmetic does not wrap
//! around at the original type's range; `Cast` to a narrow type does (see
//! [`narrow_int_range`]). The exotic float formats (e5m2, the fnuz variants, e2m1, e8m0)
//! are rejected with a message naming them. Strings are held as `i64` hashed keys
//! (see `strings.rs`).

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
    /// uint4, packed two per byte (first element in the low nibble).
    pub const UINT4: i32 = 21;
    /// int4, packed two per byte (first element in the low nibble).
    pub const INT4: i32 = 22;
    /// uint2, packed four per byte (first element in the lowest two bits).
    pub const UINT2: i32 = 25;
    /// int2, packed four per byte (first element in the lowest two bits).
    pub const INT2: i32 = 26;
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
        _ => return format!("{code} (not an ONNX element type)"),
    };
    name.to_string()
}

/// The IR dtype that holds ONNX element type `code`, or why there is none.
pub(crate) fn ir_dtype(code: i32) -> Result<DType, String> {
    use code::*;
    Ok(match code {
        FLOAT => DType::F32,
        DOUBLE => DType::F64,
        FLOAT16 => DType::F16,
        BFLOAT16 => DType::BF16,
        FLOAT8E4M3FN => DType::F8E4M3,
        INT2 | INT4 | INT8 | INT16 | UINT2 | UINT4 | UINT8 | UINT16 | INT32 => DType::I32,
        INT64 | UINT32 | UINT64 | STRING => DType::I64,
        BOOL => DType::Bool,
        _ => {
            return Err(format!(
                "element type {} is not supported (the IR has f64, f32, f16, bf16, f8e4m3, i32, i64 and bool)",
                onnx_type_name(code)
            ))
        }
    })
}

/// The value range `(min, max)` of ONNX integer type `code` when the IR holds it in a
/// wider integer type (the narrow and unsigned types below 32 bits), else `None`.
pub fn narrow_int_range(code: i32) -> Option<(i64, i64)> {
    use code::*;
    Some(match code {
        INT2 => (-2, 1),
        UINT2 => (0, 3),
        INT4 => (-8, 7),
        UINT4 => (0, 15),
        INT8 => (-128, 127),
        UINT8 => (0, 255),
        INT16 => (-32768, 32767),
        UINT16 => (0, 65535),
        _ => return None,
    })
}

/// Bits per element of the packed sub-byte integer types, else `None`.
fn packed_bits(code: i32) -> Option<u32> {
    use code::*;
    match code {
        INT4 | UINT4 => Some(4),
        INT2 | UINT2 => Some(2),
        _ => None,
    }
}

/// Unpacks `n` sub-byte integers of type `code` (`bits` wide, first element in the
/// least significant bits) from `bytes`, sign-extending the signed types.
fn unpack_ints(code: i32, bits: u32, bytes: impl Iterator<Item = u8>, n: usize) -> Vec<i64> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    let signed = matches!(code, code::INT4 | code::INT2);
    bytes
        .flat_map(|byte| (0..per_byte).map(move |k| (byte >> (k as u32 * bits)) & mask))
        .take(n)
        .map(|field| {
            let v = i64::from(field);
            if signed && v >= 1 << (bits - 1) {
                v - (1 << bits)
            } else {
                v
            }
        })
        .collect()
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
pub(crate) fn decode_tensor(t: &TensorProto) -> Result<Const, String> {
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
    if let Some(bits) = packed_bits(code) {
        let per_byte = (8 / bits) as usize;
        check_len("bytes", raw.len(), n.div_ceil(per_byte))?;
        return Ok(ConstData::Int(unpack_ints(
            code,
            bits,
            raw.iter().copied(),
            n,
        )));
    }
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
        DOUBLE => ConstData::Float(words.map(|c| f64::from_bits(le(c))).collect()),
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
    if let Some(bits) = packed_bits(code) {
        // Packed like raw data, one byte of elements per int32.
        let per_byte = (8 / bits) as usize;
        check_len("int32 values", t.int32_data.len(), n.div_ceil(per_byte))?;
        let bytes = t.int32_data.iter().map(|&x| x as u8);
        return Ok(ConstData::Int(unpack_ints(code, bits, bytes, n)));
    }
    Ok(match code {
        FLOAT => {
            check_len("floats", t.float_data.len(), n)?;
            ConstData::Float(t.float_data.iter().map(|&x| f64::from(x)).collect())
        }
        DOUBLE => {
            check_len("doubles", t.double_data.len(), n)?;
            ConstData::Float(t.double_data.clone())
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
        STRING => {
            check_len("strings", t.string_data.len(), n)?;
            ConstData::Int(
                t.string_data
                    .iter()
                    .map(|s| super::strings::key(s))
                    .collect(),
            )
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
        DType::F64 => x,
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
    fn packed_sub_byte_integers_unpack_low_bits_first() {
        let int4 = TensorProto {
            dims: vec![3],
            data_type: Some(code::INT4),
            raw_data: Some(vec![0x87, 0x0f]),
            ..Default::default()
        };
        assert_eq!(
            decode_tensor(&int4).unwrap().data,
            ConstData::Int(vec![7, -8, -1])
        );
        let uint2 = TensorProto {
            dims: vec![5],
            data_type: Some(code::UINT2),
            int32_data: vec![0x39, 0x03],
            ..Default::default()
        };
        assert_eq!(
            decode_tensor(&uint2).unwrap().data,
            ConstData::Int(vec![1, 2, 3, 0, 3])
        );
    }

    #[test]
    fn strings_decode_to_their_keys() {
        let t = TensorProto {
            dims: vec![2],
            data_type: Some(code::STRING),
            string_data: vec![b"cat".to_vec(), b"dog".to_vec()],
            ..Default::default()
        };
        let c = decode_tensor(&t).unwrap();
        let keys = vec![
            super::super::strings::key(b"cat"),
            super::super::strings::key(b"dog"),
        ];
        assert_eq!((c.dtype, c.data), (DType::I64, ConstData::Int(keys)));
    }

    #[test]
    fn doubles_keep_full_precision() {
        let x = 0.1f64;
        let t = TensorProto {
            dims: vec![1],
            data_type: Some(code::DOUBLE),
            raw_data: Some(x.to_le_bytes().to_vec()),
            ..Default::default()
        };
        let c = decode_tensor(&t).unwrap();
        assert_eq!((c.dtype, c.data), (DType::F64, ConstData::Float(vec![x])));
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
