//! The GGUF reader against the `gguf` Python package: `scripts/gguf-testdata.py` writes
//! a file with one tensor of random blocks per ggml type and metadata of every value
//! type, and the values `gguf.quants.dequantize` gives. The data lives in
//! `$SMELT_GGUF_TESTDATA` (default `target/gguf-testdata`); `.ci/run` makes it. Without
//! it the test skips, saying so, except under `CI`, where it fails.
//!
//! Tolerance: the reader and gguf compute each value with the same f32 operations, so
//! values agree to 1 ulp (|a − b| ≤ 2^-23 · max(|b|, 2^-10)).

mod common;

use smelt_frontend::gguf::{GgmlType, GgufError, GgufFile, MetaValue};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let make = "python3 scripts/gguf-testdata.py (with pip's gguf and numpy)";
    common::script_data("SMELT_GGUF_TESTDATA", "gguf-testdata", "blocks.gguf", make)
}

fn expected(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}

#[test]
fn every_block_format_matches_ggufs_dequantiser() {
    let Some(dir) = data_dir() else { return };
    let file = GgufFile::open(&dir.join("blocks.gguf")).unwrap();
    let shapes = &expected(&dir)["shapes"];
    assert_eq!(file.tensors.len(), GgmlType::ALL.len());
    for ty in GgmlType::ALL {
        let name = format!("{ty:?}");
        let info = file
            .tensor(&name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        assert_eq!(info.ggml_type, ty);
        let shape: Vec<u64> = serde_json::from_value(shapes[&name].clone()).unwrap();
        assert_eq!(info.shape, shape, "{name}");
        let got = file.dequantize(info).unwrap();
        let want: Vec<f32> = std::fs::read(dir.join(format!("{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let tol = f32::EPSILON * w.abs().max(1.0 / 1024.0);
            assert!(
                (g - w).abs() <= tol,
                "{name}[{i}] (block {}): {g} against gguf's {w}",
                i as u64 / ty.block_elems()
            );
        }
    }
}

/// The CPU backend's quantised matrices (the blocks products read directly, Q4_K
/// unpacked into per-32 scales and offsets at load) hold the values gguf gives, to
/// 1 ulp as above.
#[test]
fn the_backends_quantised_matrices_hold_ggufs_values() {
    use smelt_runtime::decode::WeightData;
    let Some(dir) = data_dir() else { return };
    let file = GgufFile::open(&dir.join("blocks.gguf")).unwrap();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
    ] {
        let name = format!("{ty:?}");
        let info = file.tensor(&name).unwrap();
        let (rows, cols) = (info.shape[0] as usize, info.shape[1] as usize);
        let table = WeightData::quantised(ty.id(), [rows, cols], file.raw(info), true);
        let Some(WeightData::QuantisedTable(matrix)) = table else {
            panic!("{name} is not held quantised");
        };
        let want: Vec<f32> = std::fs::read(dir.join(format!("{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        for (i, (g, w)) in matrix.dequantize_rows().iter().zip(&want).enumerate() {
            let tol = f32::EPSILON * w.abs().max(1.0 / 1024.0);
            assert!((g - w).abs() <= tol, "{name}[{i}]: {g} against gguf's {w}");
        }
    }
}

#[test]
fn metadata_of_every_value_type() {
    let Some(dir) = data_dir() else { return };
    let file = GgufFile::open(&dir.join("blocks.gguf")).unwrap();
    assert_eq!(file.version, 3);
    let want = expected(&dir)["metadata"].clone();
    for (key, value) in want.as_object().unwrap() {
        let got = file
            .meta(key)
            .unwrap_or_else(|| panic!("no metadata {key}"));
        let same = match (got, value) {
            (MetaValue::Str(s), serde_json::Value::String(w)) => s == w,
            (MetaValue::Bool(b), serde_json::Value::Bool(w)) => b == w,
            (MetaValue::Array(items), serde_json::Value::Array(w)) => {
                items.len() == w.len()
                    && items.iter().zip(w).all(|(i, w)| match (i, w) {
                        (MetaValue::Str(s), serde_json::Value::String(w)) => s == w,
                        (v, serde_json::Value::Number(n)) => v.as_f64() == n.as_f64(),
                        _ => false,
                    })
            }
            (MetaValue::Uint(u), serde_json::Value::Number(n)) => Some(*u) == n.as_u64(),
            (MetaValue::Int(i), serde_json::Value::Number(n)) => Some(*i) == n.as_i64(),
            (MetaValue::Float(f), serde_json::Value::Number(n)) => Some(*f) == n.as_f64(),
            _ => false,
        };
        assert!(same, "{key}: {got:?} against {value}");
    }
}

/// Damaged copies of the test file: every one is an error naming what is wrong, never
/// a panic or a huge allocation.
#[test]
fn damaged_files_are_errors() {
    let Some(dir) = data_dir() else { return };
    let good = std::fs::read(dir.join("blocks.gguf")).unwrap();
    let tmp = std::env::temp_dir().join(format!("smelt-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let open = |bytes: &[u8], name: &str| {
        let path = tmp.join(name);
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    };
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(matches!(
        open(&bad_magic, "magic"),
        Err(GgufError::BadMagic(_))
    ));
    let mut bad_version = good.clone();
    bad_version[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(
        open(&bad_version, "version"),
        Err(GgufError::Version(7))
    ));
    // A tensor count of 2^62.
    let mut many = good.clone();
    many[8..16].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let err = open(&many, "count").unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
    // Every truncation: an error, never a panic.
    for cut in (0..good.len()).step_by(97) {
        let err = open(&good[..cut], "cut").expect_err("a truncated file must not open");
        let text = err.to_string();
        assert!(
            text.contains("ends inside")
                || text.contains("past the end")
                || text.contains("cannot read"),
            "cut at {cut}: {text}"
        );
    }
    // A byte flipped anywhere in the header: an error or a file that still reads.
    let header_end = good.len().min(1024);
    for at in (0..header_end).step_by(7) {
        let mut flipped = good.clone();
        flipped[at] ^= 0xa5;
        if let Ok(f) = open(&flipped, "flip") {
            for t in &f.tensors {
                let _ = f.dequantize(t);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
