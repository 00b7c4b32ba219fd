//! Checkpoints are written atomically: a write that dies midway leaves the previous
//! checkpoint readable and no half-written file in its place.

use smelt_compiler::ir::DType;
use smelt_runtime::train::checkpoint::{write_atomically, Checkpoint, SyncAll, FILE};
use smelt_runtime::Tensor;
use std::collections::BTreeMap;
use std::io::Write;

fn checkpoint(step: usize, value: f64) -> Checkpoint {
    Checkpoint {
        step,
        tensors: BTreeMap::from([(
            "w".to_string(),
            Tensor::from_f64(DType::F32, vec![2, 3], vec![value; 6]),
        )]),
        meta: BTreeMap::from([("smelt.seed".to_string(), "7".to_string())]),
    }
}

/// A file that accepts `budget` bytes and then fails, like a process killed or a disk
/// filling up mid-write.
struct DyingFile {
    inner: std::fs::File,
    budget: usize,
}

impl Write for DyingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::other("simulated crash"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.inner.write(&buf[..n])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl SyncAll for DyingFile {
    fn sync_all(&self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = checkpoint(3, 0.25);
    c.save(dir.path()).unwrap();
    let back = Checkpoint::load(dir.path()).unwrap();
    assert_eq!(back.step, 3);
    assert_eq!(back.tensors, c.tensors);
    assert_eq!(back.meta.get("smelt.seed").map(String::as_str), Some("7"));
}

#[test]
fn a_write_that_dies_midway_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(3, 0.25).save(dir.path()).unwrap();
    let bytes = checkpoint(4, 0.5).encode().unwrap();
    for budget in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        let tmp = dir.path().join(".partial");
        let file = DyingFile {
            inner: std::fs::File::create(&tmp).unwrap(),
            budget,
        };
        let err = write_atomically(file, &bytes, &tmp, &dir.path().join(FILE)).unwrap_err();
        assert!(
            err.to_string().contains("the previous one is kept"),
            "{err}"
        );
        assert!(!tmp.exists(), "the partial file is removed");
        let kept = Checkpoint::load(dir.path()).unwrap();
        assert_eq!((kept.step, kept.tensors["w"].to_f64_vec()[0]), (3, 0.25));
    }
}

#[test]
fn a_leftover_temporary_file_from_a_killed_process_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    checkpoint(3, 0.25).save(dir.path()).unwrap();
    std::fs::write(
        dir.path().join(format!(".{FILE}.tmp-999999")),
        b"half a checkpoint",
    )
    .unwrap();
    assert_eq!(Checkpoint::load(dir.path()).unwrap().step, 3);
    checkpoint(5, 1.0).save(dir.path()).unwrap();
    assert_eq!(Checkpoint::load(dir.path()).unwrap().step, 5);
}

#[test]
fn a_corrupt_checkpoint_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}",
    )
    .unwrap();
    assert!(Checkpoint::load(dir.path()).is_err());
    let empty = tempfile::tempdir().unwrap();
    let err = Checkpoint::load(empty.path()).unwrap_err().to_string();
    assert!(err.contains(FILE), "{err}");
}
