//! GGUF v2/v3 files (llama.cpp's model format): metadata, tensor infos and the
//! tensors' bytes, read from a memory map with every length and offset checked against
//! the file's real size, so a hostile header is an error, never a huge allocation.
//!
//! Layout (little-endian): `GGUF`, version (u32), tensor count (u64), metadata count
//! (u64); the metadata as key (string) / type (u32) / value; one info per tensor (name,
//! dimension count, dimensions innermost first, ggml type, offset into the data);
//! then the data section, which starts at the next multiple of `general.alignment`
//! (default 32). Strings are a u64 length and UTF-8 bytes.
//!
//! `quants.rs` turns each ggml block format into f32.

pub mod quants;

use memmap2::Mmap;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

pub use quants::{dequantize, GgmlType};

/// Why a GGUF file cannot be read.
#[derive(Debug, Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    /// Not a GGUF file.
    #[error("not a GGUF file (the first four bytes are {0:02x?}, not \"GGUF\")")]
    BadMagic([u8; 4]),
    /// A version this reader does not know.
    #[error("GGUF version {0} is not supported (versions 2 and 3 are)")]
    Version(u32),
    /// The file ends inside something.
    #[error("the file ends inside {what} at byte {at} (the file has {len} bytes)")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where.
        at: u64,
        /// The file's length.
        len: u64,
    },
    /// Something malformed, with where it is.
    #[error("{what} at byte {at}")]
    Malformed {
        /// What is wrong.
        what: String,
        /// Where.
        at: u64,
    },
    /// A tensor's data is not inside the data section.
    #[error("tensor '{name}': {why}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// An unsigned integer (u8, u16, u32 or u64 in the file).
    Uint(u64),
    /// A signed integer (i8, i16, i32 or i64 in the file).
    Int(i64),
    /// A float (f32 or f64 in the file).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array of values of one type.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::Uint(v) => Some(v),
            MetaValue::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::Float(v) => Some(v),
            MetaValue::Uint(v) => Some(v as f64),
            MetaValue::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::Uint(v) => write!(f, "{v}"),
            MetaValue::Int(v) => write!(f, "{v}"),
            MetaValue::Float(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(s) => write!(f, "{s:?}"),
            MetaValue::Array(items) => write!(f, "[{} values]", items.len()),
        }
    }
}

/// Where one tensor's bytes are and how to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, outermost first (the reverse of the file's order, as NumPy and
    /// smelt write shapes).
    pub shape: Vec<u64>,
    /// The block format.
    pub ggml_type: GgmlType,
    /// Byte range inside the file.
    pub bytes: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// An open GGUF file.
pub struct GgufFile {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    map: Arc<Mmap>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Most metadata entries, tensors, dimensions and array items a file may declare:
/// far above real models (SmolLM2 has 272 tensors, a 49,152-token vocabulary), and a
/// bound on what a hostile count can make the reader try.
const MAX_COUNT: u64 = 1 << 24;
const MAX_DIMS: u32 = 8;

impl GgufFile {
    /// Maps and reads `path`.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = std::fs::File::open(path)?;
        // SAFETY: the map is read-only, and smelt does not write model files while
        // reading them; a file truncated by another process meanwhile would fault,
        // which is the usual caveat of mapping a file.
        let map = unsafe { Mmap::map(&file)? };
        GgufFile::parse(map)
    }

    fn parse(map: Mmap) -> Result<GgufFile, GgufError> {
        let mut r = Reader { bytes: &map, at: 0 };
        let magic: [u8; 4] = r.take(4, "the magic number")?.try_into().expect("4 bytes");
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensor_count = r.count("the tensor count")?;
        let meta_count = r.count("the metadata count")?;
        let mut metadata = Vec::new();
        for _ in 0..meta_count {
            let key = r.string("a metadata key")?;
            let ty = r.u32("a metadata type")?;
            let value = r.value(ty, &key, 0)?;
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => 32,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(GgufError::Malformed {
                        what: format!("general.alignment {v} is not a power of two up to 2^20"),
                        at: 0,
                    })
                }
            },
        };
        let mut infos = Vec::new();
        for _ in 0..tensor_count {
            let at = r.at as u64;
            let name = r.string("a tensor name")?;
            let dims = r.u32("a dimension count")?;
            if dims > MAX_DIMS {
                return Err(GgufError::Malformed {
                    what: format!("tensor '{name}' has {dims} dimensions (at most {MAX_DIMS})"),
                    at,
                });
            }
            let mut shape = Vec::new();
            for _ in 0..dims {
                shape.push(r.u64("a dimension")?);
            }
            shape.reverse();
            let raw_type = r.u32("a tensor type")?;
            let ggml_type = GgmlType::from_id(raw_type).ok_or_else(|| GgufError::Tensor {
                name: name.clone(),
                why: format!("unknown or unsupported ggml type {raw_type}"),
            })?;
            let offset = r.u64("a tensor offset")?;
            infos.push((name, shape, ggml_type, offset));
        }
        let data_start = (r.at as u64).div_ceil(alignment) * alignment;
        let len = map.len() as u64;
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (name, shape, ggml_type, offset) in infos {
            let fail = |why: String| GgufError::Tensor {
                name: name.clone(),
                why,
            };
            let elements = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .ok_or_else(|| fail(format!("{shape:?} has more elements than fit in 64 bits")))?;
            let bytes = ggml_type
                .bytes_for(shape.last().copied().unwrap_or(1), elements)
                .map_err(fail)?;
            if offset % alignment != 0 {
                return Err(fail(format!(
                    "offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(bytes));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(fail("its byte range overflows".into()));
            };
            if end > len {
                return Err(fail(format!(
                    "its {bytes} bytes at {start} run past the end of the file ({len} bytes)"
                )));
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(fail("the name appears twice".into()));
            }
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
                bytes: start as usize..end as usize,
            });
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            by_name,
            map: Arc::new(map),
        })
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's raw bytes (its blocks, as stored).
    pub fn raw(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.bytes.clone()]
    }

    /// A tensor's raw bytes, sharing the file's mapping: they stay readable after the
    /// `GgufFile` is dropped, and the mapping goes when the last of them does.
    pub fn raw_shared(&self, info: &TensorInfo) -> MappedBytes {
        MappedBytes {
            map: self.map.clone(),
            range: info.bytes.clone(),
        }
    }

    /// A tensor's values as f32, dequantised block by block.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let n = usize::try_from(info.elements()).map_err(|_| GgufError::Tensor {
            name: info.name.clone(),
            why: "too many elements for this machine".into(),
        })?;
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| GgufError::Tensor {
            name: info.name.clone(),
            why: format!("cannot allocate {n} f32 values"),
        })?;
        quants::dequantize(info.ggml_type, self.raw(info), &mut out);
        Ok(out)
    }
}

/// Bytes of a mapped GGUF file (one tensor's blocks), kept without a copy.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MappedBytes({} bytes at {})",
            self.range.len(),
            self.range.start
        )
    }
}

impl PartialEq for MappedBytes {
    fn eq(&self, other: &MappedBytes) -> bool {
        **self == **other
    }
}

/// A cursor over the file's bytes; every read is checked against the length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let len = self.bytes.len() as u64;
        let end = (self.at as u64).checked_add(n).filter(|&e| e <= len);
        let Some(end) = end else {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                at: self.at as u64,
                len,
            });
        };
        let s = &self.bytes[self.at..end as usize];
        self.at = end as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count, bounded by `MAX_COUNT`.
    fn count(&mut self, what: &str) -> Result<u64, GgufError> {
        let at = self.at as u64;
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(GgufError::Malformed {
                what: format!("{what} {n} is over the limit of {MAX_COUNT}"),
                at,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        let at = self.at as u64;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Malformed {
            what: format!("{what} is not UTF-8"),
            at,
        })
    }

    /// A value of metadata type `ty`; `depth` bounds nested arrays.
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let what = format!("the value of {key}");
        Ok(match ty {
            0 => MetaValue::Uint(u64::from(self.array::<1>(&what)?[0])),
            1 => MetaValue::Int(i64::from(self.array::<1>(&what)?[0] as i8)),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.array(&what)?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array(&what)?))),
            4 => MetaValue::Uint(u64::from(self.u32(&what)?)),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array(&what)?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array(&what)?))),
            7 => MetaValue::Bool(self.array::<1>(&what)?[0] != 0),
            8 => MetaValue::Str(self.string(&what)?),
            9 => {
                let at = self.at as u64;
                if depth > 0 {
                    return Err(GgufError::Malformed {
                        what: format!("{key} nests arrays"),
                        at,
                    });
                }
                let item = self.u32(&what)?;
                let n = self.count(&what)?;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(item, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::Uint(self.u64(&what)?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(GgufError::Malformed {
                    what: format!("{key} has unknown metadata type {other}"),
                    at: self.at as u64 - 4,
                })
            }
        })
    }
}
