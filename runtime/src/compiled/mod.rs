//! Compiled artefacts: a program for the CPU backend, scheduled once and stored, so
//! later runs skip autodiff, decomposition and fusion (`smelt compile`, the compile
//! cache in `cache.rs`).
//!
//! An artefact stores the *scheduled program*, not machine code: the model graph as
//! loaded, the scheduled graph (after autodiff and decomposition), its steps with their
//! kernel IR, and the settings used. Loading parses both graphs and JIT-compiles the
//! pointwise kernels again, which is cheap; the memory plan is not stored because the
//! CPU backend does not allocate from it.
//!
//! The file is a short text header and a JSON payload:
//!
//! ```text
//! smelt-compiled
//! format 1
//! length <payload bytes>
//! fnv128 <hash of the payload, 32 hex digits>
//! {"smelt_version": ..., "target": "cpu", "purpose": ..., "forward": ..., "schedule": ...}
//! ```
//!
//! A file with another magic line, another format version, a payload of the wrong
//! length or hash, or another smelt version is refused with a message that says so.

pub mod cache;
pub mod hash;

use crate::cpu::{CpuProgram, Unsupported};
use serde_json::{json, Value};
use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::ir::{text, Graph};
use smelt_compiler::optimize::{Options, RooflineTarget};
use smelt_compiler::pipeline::{prepare, Goal, PipelineError};
use smelt_compiler::schedule::serial::{self, ScheduleJsonError};
use std::path::{Path, PathBuf};

/// The first line of every artefact.
const MAGIC: &str = "smelt-compiled\n";
/// The payload layout version; bump it whenever the layout or meaning changes.
/// 2: matrix-product steps may carry an additive epilogue (`init`), which a reader of
/// format 1 would ignore and so compute the wrong sum.
pub const FORMAT: u32 = 2;
/// The smelt version that writes and reads artefacts.
pub const SMELT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a program computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Purpose {
    /// The model itself (`smelt run`).
    Run,
    /// One training step with this optimiser (`smelt train`).
    Train(Optimizer),
    /// One data-parallel rank's training step, its gradients averaged over `replicas`
    /// ranks (`mpirun -np N smelt train --data-parallel N`).
    TrainReplica {
        /// The optimiser.
        optimizer: Optimizer,
        /// The data-parallel ranks (at least 2).
        replicas: usize,
    },
}

impl Purpose {
    /// The optimiser of a training step.
    pub fn optimizer(&self) -> Option<&Optimizer> {
        match self {
            Purpose::Run => None,
            Purpose::Train(optimizer) | Purpose::TrainReplica { optimizer, .. } => Some(optimizer),
        }
    }

    /// The data-parallel ranks the program's gradients are averaged over (1 unless
    /// it is a replica's step).
    pub fn replicas(&self) -> usize {
        match self {
            Purpose::TrainReplica { replicas, .. } => *replicas,
            _ => 1,
        }
    }

    /// The pipeline goal that computes it.
    pub fn goal(&self) -> Goal {
        match self {
            Purpose::Run => Goal::Run,
            Purpose::Train(opt) => Goal::Train(opt.clone()),
            Purpose::TrainReplica {
                optimizer,
                replicas,
            } => Goal::TrainReplica {
                optimizer: optimizer.clone(),
                replicas: *replicas,
            },
        }
    }

    /// A canonical description, part of the payload and of cache keys.
    fn to_json(&self) -> Value {
        let optimizer = |opt: &Optimizer| match opt {
            Optimizer::Sgd {
                momentum,
                weight_decay,
            } => json!({ "sgd": {
                "momentum": momentum.to_bits(), "weight_decay": weight_decay.to_bits() } }),
            Optimizer::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => json!({ "adamw": {
                "beta1": beta1.to_bits(), "beta2": beta2.to_bits(), "eps": eps.to_bits(),
                "weight_decay": weight_decay.to_bits() } }),
        };
        match self {
            Purpose::Run => json!("run"),
            Purpose::Train(opt) => json!({ "train": optimizer(opt) }),
            Purpose::TrainReplica {
                optimizer: opt,
                replicas,
            } => json!({ "train": optimizer(opt), "replicas": replicas }),
        }
    }

    fn from_json(v: &Value) -> Result<Purpose, String> {
        if v == "run" {
            return Ok(Purpose::Run);
        }
        let bad = || format!("unknown purpose {v}");
        let f = |o: &Value, k: &str| o[k].as_u64().map(f64::from_bits).ok_or_else(bad);
        let t = &v["train"];
        let optimizer = if let Some(o) = t.get("sgd") {
            Optimizer::Sgd {
                momentum: f(o, "momentum")?,
                weight_decay: f(o, "weight_decay")?,
            }
        } else if let Some(o) = t.get("adamw") {
            Optimizer::AdamW {
                beta1: f(o, "beta1")?,
                beta2: f(o, "beta2")?,
                eps: f(o, "eps")?,
                weight_decay: f(o, "weight_decay")?,
            }
        } else {
            return Err(bad());
        };
        match v.get("replicas") {
            None => Ok(Purpose::Train(optimizer)),
            Some(r) => match r.as_u64() {
                Some(replicas @ 2..) => Ok(Purpose::TrainReplica {
                    optimizer,
                    replicas: replicas as usize,
                }),
                _ => Err(bad()),
            },
        }
    }
}

/// A program compiled for the CPU backend, with what it was compiled from.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// What it computes.
    pub purpose: Purpose,
    /// The model graph as loaded (the graph checkpoints and `--weights` refer to).
    pub forward: Graph,
    /// The runnable program.
    pub program: CpuProgram,
}

/// Identifies the compiler build that runs: the size and modification time of the
/// running executable. Another build with the same version string (a rebuilt checkout)
/// then misses the cache instead of loading programs its code did not make.
fn build_id() -> String {
    std::env::current_exe()
        .and_then(|exe| exe.metadata())
        .map(|m| format!("{} {:?}", m.len(), m.modified().ok()))
        .unwrap_or_default()
}

/// Why an artefact could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    /// The pipeline (optimiser, autodiff) failed on the model.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The CPU backend cannot run the model.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The bytes do not start with the artefact header.
    #[error(
        "not a smelt compiled artefact (no 'smelt-compiled' header; make one with smelt compile)"
    )]
    NotArtefact,
    /// Written in another artefact format.
    #[error("artefact format {0}, but this smelt reads format {FORMAT}; compile the model again")]
    WrongFormat(String),
    /// A header line is absent or unreadable.
    #[error("truncated or corrupt header: no '{0}' line")]
    MissingHeader(&'static str),
    /// The header's length is not a number.
    #[error("corrupt header: length '{0}'")]
    BadLength(String),
    /// The payload is shorter or longer than the header says.
    #[error(
        "truncated or corrupt: the header promises {promised} payload bytes, the file has {found}"
    )]
    Truncated {
        /// Bytes the header promises.
        promised: usize,
        /// Bytes present.
        found: usize,
    },
    /// The payload's hash differs from the header's.
    #[error(
        "corrupt: the content hash does not match (the file was changed after it was written)"
    )]
    Checksum,
    /// The payload is not JSON.
    #[error("corrupt payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// Compiled by another smelt version.
    #[error("compiled by smelt {0}, but this is smelt {SMELT_VERSION}; compile the model again")]
    WrongVersion(String),
    /// Compiled for another target (as the payload spells it).
    #[error("compiled for target {0}, not cpu")]
    WrongTarget(String),
    /// The purpose field is not one this smelt writes.
    #[error("{0}")]
    Purpose(String),
    /// The model graph does not parse.
    #[error("corrupt model graph: {0}")]
    Graph(#[from] text::ParseError),
    /// The schedule is malformed.
    #[error(transparent)]
    Schedule(#[from] ScheduleJsonError),
    /// The file could not be written.
    #[error("{}: cannot write: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's contents are rejected.
    #[error("{}: {source}", .path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Why its contents are rejected.
        source: Box<ArtefactError>,
    },
}

impl Compiled {
    /// Compiles `forward` (verified) for `purpose` through the pipeline
    /// ([`smelt_compiler::pipeline`]: the e-graph optimiser unless `optimize` is `None`,
    /// autodiff and the optimiser update for training), then schedules it and compiles
    /// its kernels.
    pub fn compile(
        forward: &Graph,
        purpose: Purpose,
        optimize: Option<&Options>,
    ) -> Result<Compiled, ArtefactError> {
        let goal = purpose.goal();
        let graph = prepare(forward, &goal, &RooflineTarget::cpu(), optimize)?.graph;
        let program = CpuProgram::compile(&graph)?;
        Ok(Compiled {
            purpose,
            forward: forward.clone(),
            program,
        })
    }

    /// The cache key of compiling `forward` for `purpose`: a hash of the canonical text
    /// of the graph, the settings, the artefact format, the smelt version and the
    /// compiler build.
    pub fn cache_key(forward: &Graph, purpose: &Purpose, optimize: Option<&Options>) -> String {
        let mut h = hash::Hasher::default();
        h.field(SMELT_VERSION);
        h.field(&build_id());
        h.field(&FORMAT.to_string());
        h.field("cpu");
        h.field(&purpose.to_json().to_string());
        h.field(&format!("{optimize:?}"));
        h.field(&text::print(forward));
        h.hex()
    }

    /// The artefact file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = json!({
            "smelt_version": SMELT_VERSION,
            "target": "cpu",
            "purpose": self.purpose.to_json(),
            "forward": text::print(&self.forward),
            "schedule": serial::to_json(self.program.schedule()),
        })
        .to_string();
        let mut out = format!(
            "{MAGIC}format {FORMAT}\nlength {}\nfnv128 {}\n",
            payload.len(),
            hash::hex(payload.as_bytes())
        )
        .into_bytes();
        out.extend_from_slice(payload.as_bytes());
        out
    }

    /// Reads an artefact file's bytes, checking its header, length, hash and version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Compiled, ArtefactError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_bytes())
            .ok_or(ArtefactError::NotArtefact)?;
        let (format, rest) = header_line(rest, "format")?;
        if format != FORMAT.to_string() {
            return Err(ArtefactError::WrongFormat(format));
        }
        let (length, rest) = header_line(rest, "length")?;
        let (hash, payload) = header_line(rest, "fnv128")?;
        let length: usize = length
            .parse()
            .map_err(|_| ArtefactError::BadLength(length.clone()))?;
        if payload.len() != length {
            return Err(ArtefactError::Truncated {
                promised: length,
                found: payload.len(),
            });
        }
        if hash::hex(payload) != hash {
            return Err(ArtefactError::Checksum);
        }
        let v: Value = serde_json::from_slice(payload)?;
        let version = v["smelt_version"].as_str().unwrap_or("an unknown version");
        if version != SMELT_VERSION {
            return Err(ArtefactError::WrongVersion(version.to_string()));
        }
        if v["target"] != "cpu" {
            return Err(ArtefactError::WrongTarget(v["target"].to_string()));
        }
        let purpose = Purpose::from_json(&v["purpose"]).map_err(ArtefactError::Purpose)?;
        let forward = text::parse(v["forward"].as_str().unwrap_or_default())?.graph;
        let schedule = serial::from_json(&v["schedule"])?;
        let program = CpuProgram::from_schedule(schedule, true)?;
        Ok(Compiled {
            purpose,
            forward,
            program,
        })
    }

    /// Writes the artefact to `path` atomically (a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), ArtefactError> {
        write_atomic(path, &self.to_bytes()).map_err(|source| ArtefactError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads the artefact at `path`; errors name the file.
    pub fn load(path: &Path) -> Result<Compiled, ArtefactError> {
        let bytes = std::fs::read(path).map_err(|source| ArtefactError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Compiled::from_bytes(&bytes).map_err(|e| ArtefactError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}

/// True if `bytes` begin like an artefact (so a CLI can tell one from a model file).
pub fn is_artefact(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; MAGIC.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == MAGIC.as_bytes())
}

/// Splits `KEY VALUE\n` off the front of `bytes`.
fn header_line<'a>(
    bytes: &'a [u8],
    key: &'static str,
) -> Result<(String, &'a [u8]), ArtefactError> {
    let corrupt = || ArtefactError::MissingHeader(key);
    let end = bytes.iter().position(|&b| b == b'\n').ok_or_else(corrupt)?;
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| corrupt())?;
    let value = line
        .strip_prefix(key)
        .and_then(|v| v.strip_prefix(' '))
        .ok_or_else(corrupt)?;
    Ok((value.to_string(), &bytes[end + 1..]))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so
/// readers see the old file or the new one, never a partial one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and per call, so concurrent writers never share a temporary.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
    // The rename would replace whatever `path` is: a device or a directory is not ours.
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            return Err(std::io::Error::other(
                "it exists and is not a regular file (refusing to replace it)",
            ));
        }
    }
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
