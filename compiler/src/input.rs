//! Bounded reading of input files: a file is read only if it is a regular file no
//! larger than a limit for its kind, checked against its real length first, so that
//! `/dev/zero` or a huge file is an error instead of unbounded memory use.

use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// The most bytes of model text (`.smelt`, `.sir`) read.
pub const MODEL_TEXT_LIMIT: u64 = 16 << 20;
/// The most bytes of JSON IR read.
pub const JSON_LIMIT: u64 = 64 << 20;
/// The most bytes of an ONNX model or tensor read (protobuf's own limit is 2 GiB).
pub const PROTOBUF_LIMIT: u64 = 2 << 30;
/// The most bytes of a tensor file (`.npy`, safetensors, checkpoints) read.
pub const TENSOR_FILE_LIMIT: u64 = 1 << 40;

/// Why an input file was not read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The system could not open or read it.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A directory, a device or a pipe.
    #[error("cannot read: not a regular file")]
    NotAFile,
    /// Over the limit for its kind.
    #[error("the file has {size} bytes, more than the {limit} a {kind} may have")]
    TooLarge {
        /// Its length.
        size: u64,
        /// The limit.
        limit: u64,
        /// What it was read as.
        kind: &'static str,
    },
}

/// The bytes of the regular file `path`, if it has at most `limit` bytes; `kind` names
/// what it is for the error.
pub fn read_limited(path: &Path, limit: u64, kind: &'static str) -> Result<Vec<u8>, ReadError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    let size = meta.len();
    if size > limit {
        return Err(ReadError::TooLarge { size, limit, kind });
    }
    // The file may grow while it is read: take at most one byte past the limit.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
            kind,
        });
    }
    Ok(bytes)
}

/// Like [`read_limited`], as UTF-8 text.
pub fn read_limited_text(path: &Path, limit: u64, kind: &'static str) -> Result<String, ReadError> {
    String::from_utf8(read_limited(path, limit, kind)?).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_large_files_are_refused() {
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 1 << 20, "model"),
            Err(ReadError::NotAFile)
        ));
        let dir = std::env::temp_dir().join(format!("smelt-input-{}", std::process::id()));
        std::fs::write(&dir, vec![b'x'; 100]).unwrap();
        assert_eq!(read_limited(&dir, 100, "model").unwrap().len(), 100);
        assert!(matches!(
            read_limited(&dir, 99, "model"),
            Err(ReadError::TooLarge { size: 100, .. })
        ));
        std::fs::remove_file(&dir).unwrap();
    }
}
