//! Tensor files: NumPy `.npy` and safetensors.

use crate::tensor::{Data, Tensor};
use smelt_compiler::input;
use smelt_compiler::ir::{size_mul, DType};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use thiserror::Error;

/// A tensor file could not be read or written.
#[derive(Debug, Error)]
#[error("{path}: {message}")]
pub struct IoError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn err(path: &Path, message: impl ToString) -> IoError {
    IoError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads the file at `path` within the tensor file limit (a regular file only).
fn read_bounded(path: &Path, kind: &'static str) -> Result<Vec<u8>, IoError> {
    input::read_limited(path, input::TENSOR_FILE_LIMIT, kind).map_err(|e| err(path, e))
}

/// Where the data of a `.npy` file starts, from its preamble (magic, version, header
/// length), checked against the file's length before the header is parsed.
fn npy_data_start(bytes: &[u8]) -> Result<usize, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a valid .npy file: it does not start with \\x93NUMPY".into());
    }
    let (len, fixed) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let start = fixed + len;
    if start > bytes.len() {
        return Err(format!(
            "the header claims {len} bytes, but the file has only {} bytes",
            bytes.len()
        ));
    }
    check_npy_shape(&String::from_utf8_lossy(&bytes[fixed..start]))?;
    Ok(start)
}

/// Checks the `'shape': (...)` of a `.npy` header: its element count must fit (the
/// `npyz` reader multiplies the sizes unchecked).
fn check_npy_shape(header: &str) -> Result<(), String> {
    let Some(after) = header.split_once("'shape'").map(|(_, rest)| rest) else {
        return Ok(()); // npyz reports the missing key.
    };
    let Some(tuple) = after
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside)
    else {
        return Ok(());
    };
    let sizes = tuple
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| format!("the header's shape has a bad size '{s}'"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    sizes
        .iter()
        .try_fold(1u64, |acc, &n| {
            size_mul(acc, n, || {
                format!("the element count of the header's shape {sizes:?}")
            })
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Reads a `.npy` file (f64, f32, f16, i64, i32, u8, i8 and bool elements; C order).
pub fn read_npy(path: &Path) -> Result<Tensor, IoError> {
    let bytes = read_bounded(path, ".npy file")?;
    let start = npy_data_start(&bytes).map_err(|m| err(path, m))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| err(path, format!("not a valid .npy file: {e}")))?;
    // The shape's element count and byte size must fit, and the file must hold them.
    let item = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.num_bytes().unwrap_or(1) as u64,
        _ => 1,
    };
    let data_bytes = npy
        .shape()
        .iter()
        .try_fold(item, |acc, &d| {
            size_mul(acc, d, || format!("the data of shape {:?}", npy.shape()))
        })
        .map_err(|e| err(path, e))?;
    let have = (bytes.len() - start) as u64;
    if data_bytes > have {
        return Err(err(
            path,
            format!(
                "the header's shape {:?} needs {data_bytes} bytes of data, but the file holds {have}",
                npy.shape()
            ),
        ));
    }
    if npy.order() != npyz::Order::C {
        return Err(err(
            path,
            "Fortran-order arrays are not supported; save with np.ascontiguousarray",
        ));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => {
            return Err(err(
                path,
                format!("structured .npy dtype {} is not supported", other.descr()),
            ))
        }
    };
    let bad = |e: std::io::Error| err(path, format!("cannot read the data: {e}"));
    let floats = |dtype, v: Vec<f64>| Tensor {
        dtype,
        shape: shape.clone(),
        data: Data::Float(v),
    };
    let ints = |dtype, v: Vec<i64>| Tensor {
        dtype,
        shape: shape.clone(),
        data: Data::Int(v),
    };
    let t = match descr.trim_start_matches(['<', '|', '=']) {
        "f8" => floats(DType::F64, npy.into_vec::<f64>().map_err(bad)?),
        "f4" => floats(
            DType::F32,
            npy.into_vec::<f32>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        "f2" => floats(
            DType::F16,
            npy.into_vec::<half::f16>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        "i8" => ints(DType::I64, npy.into_vec::<i64>().map_err(bad)?),
        "i4" => ints(
            DType::I32,
            npy.into_vec::<i32>()
                .map_err(bad)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        "u1" => ints(
            DType::I32,
            npy.into_vec::<u8>()
                .map_err(bad)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        "i1" => ints(
            DType::I32,
            npy.into_vec::<i8>()
                .map_err(bad)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        "b1" => Tensor {
            dtype: DType::Bool,
            shape: shape.clone(),
            data: Data::Bool(npy.into_vec::<bool>().map_err(bad)?),
        },
        _ => return Err(err(path, format!("unsupported .npy dtype '{descr}'"))),
    };
    Ok(t)
}

/// Writes `t` as `.npy` (f64 for f64; f16 for f16; f32 for f32, and for bf16 and f8
/// widened to f32).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), IoError> {
    use npyz::WriterBuilder;
    let file = File::create(path).map_err(|e| err(path, e))?;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let mut w = BufWriter::new(file);
    let io = |e: std::io::Error| err(path, e);
    macro_rules! write_as {
        ($ty:ty, $iter:expr) => {{
            let mut out = npyz::WriteOptions::<$ty>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut w)
                .begin_nd()
                .map_err(io)?;
            out.extend($iter).map_err(io)?;
            out.finish().map_err(io)?;
        }};
    }
    match (&t.data, t.dtype) {
        (Data::Float(v), DType::F64) => write_as!(f64, v.iter().copied()),
        (Data::Float(v), DType::F16) => {
            write_as!(half::f16, v.iter().map(|&x| half::f16::from_f64(x)))
        }
        (Data::Float(v), _) => write_as!(f32, v.iter().map(|&x| x as f32)),
        (Data::Int(v), DType::I32) => write_as!(i32, v.iter().map(|&x| x as i32)),
        (Data::Int(v), _) => write_as!(i64, v.iter().copied()),
        (Data::Bool(v), _) => write_as!(bool, v.iter().copied()),
    }
    w.flush().map_err(io)
}

/// Reads every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, IoError> {
    let bytes = read_bounded(path, "safetensors file")?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(path, explain_safetensors(&e)))?;
    safetensors_tensors(&st, path)
}

/// Every tensor of a parsed safetensors file, by name; `path` names it in errors.
pub fn safetensors_tensors(
    st: &safetensors::SafeTensors,
    path: &Path,
) -> Result<Vec<(String, Tensor)>, IoError> {
    use safetensors::Dtype as S;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| err(path, e))?;
        let shape = view.shape().to_vec();
        let raw = view.data();
        let chunks = |n: usize| raw.chunks_exact(n);
        let (dtype, data) = match view.dtype() {
            S::F32 => (
                DType::F32,
                Data::Float(
                    chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                ),
            ),
            S::F64 => (
                DType::F64,
                Data::Float(
                    chunks(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
            ),
            S::F16 => (
                DType::F16,
                Data::Float(
                    chunks(2)
                        .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
                        .collect(),
                ),
            ),
            S::BF16 => (
                DType::BF16,
                Data::Float(
                    chunks(2)
                        .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f64())
                        .collect(),
                ),
            ),
            S::I32 => (
                DType::I32,
                Data::Int(
                    chunks(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                ),
            ),
            S::I64 => (
                DType::I64,
                Data::Int(
                    chunks(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
            ),
            S::BOOL => (
                DType::Bool,
                Data::Bool(raw.iter().map(|&b| b != 0).collect()),
            ),
            other => {
                return Err(err(
                    path,
                    format!("tensor '{name}' has unsupported dtype {other:?}"),
                ))
            }
        };
        out.push((name, Tensor { dtype, shape, data }));
    }
    Ok(out)
}

/// A safetensors reader's error in words.
pub fn explain_safetensors(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    let what = match e {
        E::InvalidHeader => "its header is not UTF-8 text".to_string(),
        E::InvalidHeaderStart => "its header does not start with '{'".to_string(),
        E::InvalidHeaderDeserialization | E::JsonError(_) => {
            "its header is not the JSON safetensors expects".to_string()
        }
        E::HeaderTooLarge => "its header length is over 100 MB (the first 8 bytes)".to_string(),
        E::HeaderTooSmall => "it is shorter than the 8-byte header length".to_string(),
        E::InvalidHeaderLength => {
            "its header length (the first 8 bytes) is larger than the file".to_string()
        }
        E::TensorNotFound(name) => format!("it has no tensor '{name}'"),
        E::TensorInvalidInfo => "a tensor's shape, dtype and offsets disagree".to_string(),
        E::InvalidOffset(name) => {
            format!("the data offsets of tensor '{name}' are outside the file or overlap")
        }
        E::IoError(io) => format!("cannot read it: {io}"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("{len} bytes cannot hold a {dtype:?} tensor of shape {shape:?}")
        }
        E::MetadataIncompleteBuffer => {
            "the tensors' data does not cover the file's data section".to_string()
        }
        E::ValidationOverflow => "a tensor's shape or byte size overflows".to_string(),
    };
    format!("not a valid safetensors file: {what}")
}

/// Writes tensors to a safetensors file (the caller makes it atomic if it must be).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), IoError> {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype as S;
    let encoded: Vec<(String, S, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes): (S, Vec<u8>) = match (&t.data, t.dtype) {
                (Data::Float(v), DType::F64) => {
                    (S::F64, v.iter().flat_map(|&x| x.to_le_bytes()).collect())
                }
                (Data::Float(v), DType::F16) => (
                    S::F16,
                    v.iter()
                        .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
                        .collect(),
                ),
                (Data::Float(v), DType::BF16) => (
                    S::BF16,
                    v.iter()
                        .flat_map(|&x| half::bf16::from_f64(x).to_le_bytes())
                        .collect(),
                ),
                (Data::Float(v), _) => (
                    S::F32,
                    v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
                ),
                (Data::Int(v), DType::I32) => (
                    S::I32,
                    v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                ),
                (Data::Int(v), _) => (S::I64, v.iter().flat_map(|&x| x.to_le_bytes()).collect()),
                (Data::Bool(v), _) => (S::BOOL, v.iter().map(|&b| u8::from(b)).collect()),
            };
            (name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = encoded
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| err(path, e))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize_to_file(views, &None, path).map_err(|e| err(path, e))
}

/// Reads a tensor file by extension: `.npy`, or `.safetensors` holding one tensor
/// (or one named `name`).
pub fn read_tensor_file(path: &Path, name: &str) -> Result<Tensor, IoError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path),
        Some("safetensors") => {
            let mut all = read_safetensors(path)?;
            if let Some(i) = all.iter().position(|(n, _)| n == name) {
                return Ok(all.swap_remove(i).1);
            }
            match all.len() {
                1 => Ok(all.pop().expect("one tensor").1),
                n => Err(err(
                    path,
                    format!("holds {n} tensors and none is named '{name}'"),
                )),
            }
        }
        _ => Err(err(
            path,
            "unknown tensor file type (expected .npy or .safetensors)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 tensors keep their dtype and every bit through both file formats.
    #[test]
    fn f64_round_trips_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Tensor {
            dtype: DType::F64,
            shape: vec![3],
            data: Data::Float(vec![0.1, 1.0 + f64::EPSILON, -1e300]),
        };
        let npy = dir.path().join("t.npy");
        write_npy(&npy, &t).expect("npy written");
        assert_eq!(read_npy(&npy).expect("npy read"), t);
        let st = dir.path().join("t.safetensors");
        write_safetensors(&st, &[("t".into(), t.clone())]).expect("safetensors written");
        assert_eq!(
            read_safetensors(&st).expect("safetensors read"),
            [("t".into(), t)]
        );
    }
}
