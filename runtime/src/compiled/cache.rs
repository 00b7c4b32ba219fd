//! The compile cache: compiled artefacts stored under the hash of what they were
//! compiled from ([`Compiled::cache_key`]), so a second run of the same model with the
//! same settings skips compilation.
//!
//! The directory is `$SMELT_CACHE_DIR`, else `$XDG_CACHE_HOME/smelt`, else
//! `~/.cache/smelt`. Entries are written atomically; an entry that cannot be read (a
//! corrupt file, an old format) counts as a miss and is replaced.

use super::{write_atomic, Compiled, Purpose};
use smelt_compiler::ir::Graph;
use smelt_compiler::optimize::Options;
use std::fmt;
use std::path::{Path, PathBuf};

/// A cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// What the cache did for one compilation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The program was loaded from this entry.
    Hit(PathBuf),
    /// The program was compiled and stored in this entry.
    Stored(PathBuf),
    /// The program was compiled; storing it failed (the run goes on).
    NotStored(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Hit(p) => write!(f, "compile cache: hit {}", p.display()),
            Outcome::Stored(p) => write!(f, "compile cache: miss, stored {}", p.display()),
            Outcome::NotStored(why) => write!(f, "compile cache: miss, not stored: {why}"),
        }
    }
}

impl Cache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The cache in the default directory, or `None` when no directory is known.
    pub fn from_env() -> Option<Cache> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        var("SMELT_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("smelt")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("smelt")))
            .map(Cache::new)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.smeltc"))
    }

    /// Loads the program for `forward`, `purpose` and `optimize` from the cache, or
    /// compiles and stores it.
    pub fn compile(
        &self,
        forward: &Graph,
        purpose: Purpose,
        optimize: Option<&Options>,
    ) -> Result<(Compiled, Outcome), super::ArtefactError> {
        let path = self.entry(&Compiled::cache_key(forward, &purpose, optimize));
        if let Ok(c) = Compiled::load(&path) {
            return Ok((c, Outcome::Hit(path)));
        }
        let compiled = Compiled::compile(forward, purpose, optimize)?;
        let stored = std::fs::create_dir_all(&self.dir)
            .and_then(|()| write_atomic(&path, &compiled.to_bytes()));
        let outcome = match stored {
            Ok(()) => Outcome::Stored(path),
            Err(e) => Outcome::NotStored(format!("{}: {e}", path.display())),
        };
        Ok((compiled, outcome))
    }
}
