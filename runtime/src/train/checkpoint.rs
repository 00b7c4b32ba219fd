//! Checkpoints: every parameter and optimiser state tensor in one safetensors file,
//! with the step, the model's IR and the run's settings in its metadata.
//!
//! Writing is atomic: the file is written to a temporary name in the same directory,
//! synced, then renamed over the old checkpoint. A crash or a full disk mid-write
//! leaves the previous checkpoint intact and readable; the temporary files of killed
//! runs are removed by the next save.
//!
//! The metadata holds a checksum (`smelt.checksum`, 128-bit FNV-1a as artefacts use)
//! of every tensor's name, dtype, shape and bytes and of the other metadata, so a
//! checkpoint changed after it was written is refused on load.

use super::TrainError;
use crate::tensor::{Data, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The checkpoint file inside a checkpoint directory.
pub const FILE: &str = "checkpoint.safetensors";

/// A saved training state.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Training steps completed.
    pub step: usize,
    /// Parameter and state tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Settings (`graph`: the forward IR text; `optimizer`, `seed`, `lr`, ...).
    pub meta: BTreeMap<String, String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint(format!("{}: {e}", path.display()))
}

impl Checkpoint {
    /// The file's bytes (safetensors).
    pub fn encode(&self) -> Result<Vec<u8>, TrainError> {
        use safetensors::tensor::TensorView;
        use safetensors::Dtype;
        let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let (dtype, bytes) = match &t.data {
                    Data::Float(v) => (
                        Dtype::F32,
                        v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
                    ),
                    Data::Int(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                    Data::Bool(v) => (Dtype::BOOL, v.iter().map(|&b| u8::from(b)).collect()),
                };
                (name.clone(), dtype, t.shape.clone(), bytes)
            })
            .collect();
        let views = raw
            .iter()
            .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let mut meta = self.meta.clone();
        meta.insert(STEP.into(), self.step.to_string());
        let sum = checksum(
            &meta,
            raw.iter()
                .map(|(n, d, s, b)| (n.as_str(), format!("{d:?}"), s.as_slice(), b.as_slice())),
        );
        let mut meta: HashMap<String, String> = meta.into_iter().collect();
        meta.insert(CHECKSUM.into(), sum);
        safetensors::serialize(views, &Some(meta))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))
    }

    /// Writes the checkpoint into `dir` atomically (see the module docs).
    pub fn save(&self, dir: &Path) -> Result<PathBuf, TrainError> {
        let bytes = self.encode()?;
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        remove_stale_temporaries(dir);
        let tmp = dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        write_atomically(file, &bytes, &tmp, &dir.join(FILE))
    }

    /// Reads the checkpoint in `dir`.
    pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
        let path = if dir.is_dir() {
            dir.join(FILE)
        } else {
            dir.to_path_buf()
        };
        let bytes = smelt_compiler::input::read_limited(
            &path,
            smelt_compiler::input::TENSOR_FILE_LIMIT,
            "checkpoint",
        )
        .map_err(|e| io_err(&path, e))?;
        let not_one =
            |why: String| TrainError::NotACheckpoint(format!("{}: {why}", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            not_one(format!(
                "not a checkpoint: {}",
                crate::io::explain_safetensors(&e)
            ))
        })?;
        let mut meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let step = meta
            .get(STEP)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| not_one("not a smelt checkpoint (no step in its metadata)".into()))?;
        let saved_sum = meta
            .remove(CHECKSUM)
            .ok_or_else(|| io_err(&path, "the checkpoint has no checksum (smelt.checksum)"))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| io_err(&path, crate::io::explain_safetensors(&e)))?;
        let mut views = st.tensors();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let sum = checksum(
            &meta,
            views
                .iter()
                .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())),
        );
        if sum != saved_sum {
            return Err(io_err(
                &path,
                "corrupt: the checksum does not match (the checkpoint was changed after it was written)",
            ));
        }
        meta.remove(STEP);
        let tensors = crate::io::safetensors_tensors(&st, &path)
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?
            .into_iter()
            .collect();
        Ok(Checkpoint {
            step,
            tensors,
            meta,
        })
    }
}

/// The metadata key of the step.
const STEP: &str = "smelt.step";
/// The metadata key of the checksum.
const CHECKSUM: &str = "smelt.checksum";

/// The checksum of the metadata (without the checksum) and the tensors (name, dtype,
/// shape, stored bytes; in name order), as 32 hex digits.
fn checksum<'a>(
    meta: &BTreeMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = crate::compiled::hash::Hasher::default();
    for (key, value) in meta {
        h.field(key);
        h.field(value);
    }
    for (name, dtype, shape, bytes) in tensors {
        h.field(name);
        h.field(&dtype);
        h.field(&format!("{shape:?}"));
        h.write(&(bytes.len() as u64).to_le_bytes());
        h.write(bytes);
    }
    h.hex()
}

/// Removes the temporary files of runs killed mid-write (`.checkpoint.safetensors.tmp-PID`
/// whose process is gone); best effort, as the next successful save makes them moot.
fn remove_stale_temporaries(dir: &Path) {
    let prefix = format!(".{FILE}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` is running (where `/proc` is not there, it is assumed to be,
/// so nothing of a live writer is removed).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Writes `bytes` to `file` (at `tmp`), syncs it and renames it to `dest`. On any error
/// the temporary file is removed and `dest` is untouched.
pub fn write_atomically<W: Write + SyncAll>(
    mut file: W,
    bytes: &[u8],
    tmp: &Path,
    dest: &Path,
) -> Result<PathBuf, TrainError> {
    let result = file
        .write_all(bytes)
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(tmp, dest));
    match result {
        Ok(()) => {
            if let Some(dir) = dest.parent() {
                // Persist the rename itself (best effort: not every platform syncs directories).
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(dest.to_path_buf())
        }
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(io_err(
                dest,
                format!("checkpoint not written ({e}); the previous one is kept"),
            ))
        }
    }
}

/// Files that can be flushed to stable storage.
pub trait SyncAll {
    /// Flushes data and metadata to disk.
    fn sync_all(&self) -> std::io::Result<()>;
}

impl SyncAll for std::fs::File {
    fn sync_all(&self) -> std::io::Result<()> {
        std::fs::File::sync_all(self)
    }
}
