//! Running NVIDIA's `ptxas` on generated PTX, with no GPU: it assembles for `sm_90`,
//! rejects invalid PTX, and (`-v`) reports registers, shared memory and spills per
//! kernel. It ships in the `nvidia-cuda-nvcc-cu12` pip package.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What ptxas reported about one kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelReport {
    /// Entry name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory, bytes.
    pub shared_bytes: u32,
    /// Bytes spilled to local memory (stores + loads).
    pub spill_bytes: u32,
}

/// Finds ptxas: `$SMELT_PTXAS`, then `ptxas` on `PATH`, then the pip package of any
/// `python3` on `PATH`.
pub fn find() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SMELT_PTXAS") {
        return Some(PathBuf::from(p));
    }
    if Command::new("ptxas")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(PathBuf::from("ptxas"));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import nvidia.cuda_nvcc, os; print(os.path.join(list(nvidia.cuda_nvcc.__path__)[0], 'bin', 'ptxas'))",
        ])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// ptxas for a test of `what`: `None`, with the reason printed, where it is not
/// installed; a panic when `CI` is set, because CI must assemble every kernel (`.ci/run`
/// installs it).
pub fn find_for_test(what: &str) -> Option<PathBuf> {
    let found = find();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "ptxas is required in CI (.ci/run installs nvidia-cuda-nvcc-cu12)"
        );
        eprintln!(
            "skipping ptxas for {what}: not found (pip install nvidia-cuda-nvcc-cu12, or set SMELT_PTXAS)"
        );
    }
    found
}

/// Why ptxas did not assemble a module.
#[derive(Debug, thiserror::Error)]
pub enum PtxasError {
    /// The scratch directory or the PTX file could not be written.
    #[error("{}: {source}", .path.display())]
    Scratch {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// ptxas could not be started.
    #[error("cannot run {}: {source}", .ptxas.display())]
    Spawn {
        /// The ptxas binary.
        ptxas: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// ptxas rejected the module; its own output says why.
    #[error("{output}")]
    Rejected {
        /// ptxas's stdout and stderr.
        output: String,
    },
}

/// Assembles `ptx` for `arch` (`sm_90` or `sm_90a`) with `ptxas -v`; the error carries
/// ptxas's own message.
pub fn assemble(ptxas: &Path, ptx: &str, arch: &str) -> Result<Vec<KernelReport>, PtxasError> {
    let dir = std::env::temp_dir().join(format!(
        "smelt-ptxas-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|source| PtxasError::Scratch {
        path: dir.clone(),
        source,
    })?;
    let src = dir.join("module.ptx");
    std::fs::write(&src, ptx).map_err(|source| PtxasError::Scratch {
        path: src.clone(),
        source,
    })?;
    let out = Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-v")
        .arg(&src)
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .output()
        .map_err(|source| PtxasError::Spawn {
            ptxas: ptxas.to_path_buf(),
            source,
        });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(PtxasError::Rejected { output: text });
    }
    Ok(parse_report(&text))
}

/// Reads ptxas's `-v` lines into one report per kernel.
pub fn parse_report(text: &str) -> Vec<KernelReport> {
    let mut reports: Vec<KernelReport> = Vec::new();
    let number_before = |line: &str, word: &str| -> u32 {
        line.split(word)
            .next()
            .and_then(|head| head.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            reports.push(KernelReport {
                name,
                ..KernelReport::default()
            });
            continue;
        }
        let Some(r) = reports.last_mut() else {
            continue;
        };
        if line.contains("bytes spill stores") {
            r.spill_bytes = number_before(line, "bytes spill stores")
                + number_before(line.split(',').nth(2).unwrap_or(""), "bytes spill loads");
        }
        if line.contains("Used") && line.contains("registers") {
            r.registers = number_before(line, "registers");
            if line.contains("bytes smem") {
                let smem = line
                    .split(',')
                    .find(|p| p.contains("bytes smem"))
                    .unwrap_or("");
                r.shared_bytes = number_before(smem, "bytes smem");
            }
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_verbose_output() {
        let text = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'k1_mm' for 'sm_90'\n\
ptxas info    : Function properties for k1_mm\n\
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 40 registers, 8192 bytes smem, 384 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'k2_add' for 'sm_90'\n\
ptxas info    : Function properties for k2_add\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, 368 bytes cmem[0]\n";
        let r = parse_report(text);
        assert_eq!(
            r,
            vec![
                KernelReport {
                    name: "k1_mm".into(),
                    registers: 40,
                    shared_bytes: 8192,
                    spill_bytes: 12
                },
                KernelReport {
                    name: "k2_add".into(),
                    registers: 10,
                    shared_bytes: 0,
                    spill_bytes: 0
                },
            ]
        );
    }
}
