//! Helpers shared by the end-to-end CLI tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `smelt` binary in the repository root with `args`.
pub fn smelt(args: &[&str]) -> Output {
    smelt_with_cache(args, &cache_dir())
}

/// Runs the `smelt` binary with `args` and its compile cache in `cache`.
pub fn smelt_with_cache(args: &[&str], cache: &Path) -> Output {
    smelt_command(args, cache)
        .output()
        .expect("the smelt binary runs")
}

/// Runs the `smelt` binary with `args` and the environment variables `vars` set.
pub fn smelt_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    smelt_command(args, &cache_dir())
        .envs(vars.iter().copied())
        .output()
        .expect("the smelt binary runs")
}

fn smelt_command(args: &[&str], cache: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smelt"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SMELT_CACHE_DIR", cache);
    command
}

/// The compile cache directory of the CLI tests (kept out of the user's cache).
pub fn cache_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("smelt-cache")
}

/// Test data made by a script into `$VAR` (default `target/DEFAULT`), recognised by
/// the file `marker` in it. Without it the test skips, saying how to make it, except
/// under `CI`, where that is a failure.
pub fn script_data(
    var: &str,
    default: &str,
    marker: &str,
    make: &str,
) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os(var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(default)
        });
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    skip_unless_ci(&format!(
        "test data not found in {} (run: {make} {0})",
        dir.display()
    ));
    None
}

/// Stdout and stderr as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a failed run: exit code 2, no panic, and returns stderr.
pub fn expect_user_error(out: &Output) -> String {
    let (_, err) = texts(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    err
}

/// Writes a `.npy` file of any element type NumPy knows.
pub fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], values: &[T]) {
    use npyz::WriterBuilder;
    let mut f = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut f)
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// Writes a `.npy` file of f32 values.
pub fn write_f32_npy(path: &Path, shape: &[u64], values: &[f32]) {
    write_npy(path, shape, values)
}

/// Writes a `.npy` file of i32 values.
pub fn write_i32_npy(path: &Path, shape: &[u64], values: &[i32]) {
    write_npy(path, shape, values)
}

/// Reads a `.npy` file of f32 values with its shape.
pub fn read_f32_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// A small deterministic generator (xorshift), so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (sum of 12 uniforms).
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next_f64()).sum::<f64>() - 6.0
    }
}

/// Loads an example model with `--set`-style config overrides.
pub fn load_example(path: &str, sets: &[(&str, &str)]) -> smelt_compiler::ir::Graph {
    let overrides: smelt_frontend::Overrides = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    smelt_frontend::load_with(&full, &overrides)
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
}

/// A random value for graph input `id`: floats uniform in [-1, 1) (never all zero),
/// integers uniform in [0, int_max); symbolic dimensions take the size `batch`.
/// Seeded by the input's name, so every test sees the same data.
pub fn random_input(
    g: &smelt_compiler::ir::Graph,
    id: smelt_compiler::ir::ValueId,
    batch: usize,
    int_max: i64,
) -> smelt_runtime::Tensor {
    use smelt_runtime::{gradcheck::exact_f32, rng, Tensor};
    let v = g.value(id);
    let shape: Vec<usize> =
        v.ty.dims()
            .iter()
            .map(|d| d.as_static().map_or(batch, |n| n as usize))
            .collect();
    let n: usize = shape.iter().product();
    let seed = rng::seed_for(1, &v.name);
    let draw = |i: usize| rng::uniform01(seed, i as u64);
    if v.ty.dtype.is_float() {
        exact_f32(&shape, (0..n).map(|i| 2.0 * draw(i) - 1.0).collect())
    } else {
        Tensor::from_i64(
            v.ty.dtype,
            shape,
            (0..n).map(|i| (draw(i) * int_max as f64) as i64).collect(),
        )
    }
}

/// Small configurations of the examples, for tests that run them many times
/// (`--set` pairs; the full sizes are in the example files).
pub const SMALL_GPT: [(&str, &str); 6] = [
    ("d_model", "16"),
    ("heads", "2"),
    ("head_dim", "8"),
    ("d_mlp", "32"),
    ("layers", "1"),
    ("vocab", "32"),
];

/// See [`SMALL_GPT`].
pub const SMALL_MOE: [(&str, &str); 3] = [("d", "8"), ("d_ff", "12"), ("experts", "4")];

/// See [`SMALL_GPT`].
pub const SMALL_LLAMA: [(&str, &str); 7] = [
    ("vocab", "32"),
    ("dim", "16"),
    ("heads", "2"),
    ("kv_heads", "1"),
    ("head_dim", "8"),
    ("hidden", "24"),
    ("layers", "1"),
];

/// Asserts that every output and update of `got` is within
/// `tol · max(1, max |want|)` of `want`'s, elementwise (the scale is per tensor).
pub fn assert_runs_close(
    what: &str,
    got: &smelt_runtime::interp::Execution,
    want: &smelt_runtime::interp::Execution,
    tol: f64,
) {
    let close = |part: &str, got: &smelt_runtime::Tensor, want: &smelt_runtime::Tensor| {
        assert_eq!(got.shape, want.shape, "{what} {part}: shape");
        let (c, w) = (got.to_f64_vec(), want.to_f64_vec());
        let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, (a, b)) in c.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= tol * scale,
                "{what} {part}[{i}]: backend {a} vs interpreter {b}"
            );
        }
    };
    assert_eq!(got.outputs.len(), want.outputs.len(), "{what}: outputs");
    for (k, (c, w)) in got.outputs.iter().zip(&want.outputs).enumerate() {
        close(&format!("output {k}"), c, w);
    }
    assert_eq!(got.updates.len(), want.updates.len(), "{what}: updates");
    for ((name, c), (wname, w)) in got.updates.iter().zip(&want.updates) {
        assert_eq!(name, wname, "{what}: update order");
        close(&format!("update of %{name}"), c, w);
    }
}

/// The peers' fixed benchmark data (`$PEERS_HOME/data`, default
/// `~/.cache/smelt-peers/data`; `bash ../shared/peers/setup.sh` writes it), if present.
pub fn peers_data() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("PEERS_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/smelt-peers"))
        });
    let data = home.map(|h| h.join("data"));
    if let Some(data) = data.filter(|d| d.join("reference.json").is_file()) {
        return Some(data);
    }
    skip_unless_ci(
        "the peers' fixed data is missing ($PEERS_HOME/data, default ~/.cache/smelt-peers/data; \
         `python3 ../shared/peers/common/gen_data.py` writes it, as .ci/run does)",
    );
    None
}

/// The peers' data files of `workload` and the values they feed, from
/// `examples/bench/peer_data.txt` (which `smelt bench` reads too).
pub fn peer_files(workload: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/peer_data.txt");
    std::fs::read_to_string(path)
        .expect("examples/bench/peer_data.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [w, file, name] if w == workload => Some((file.to_string(), name.to_string())),
            _ => None,
        })
        .collect()
}

/// Skips a test whose data or tool is missing, saying why; under `CI` that is a
/// failure instead.
pub fn skip_unless_ci(why: &str) {
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipping: {why}");
}

/// An ONNX graph input or output of element type `elem_type` with static `dims`.
pub fn onnx_value_info(
    name: &str,
    elem_type: i32,
    dims: &[i64],
) -> smelt_frontend::onnx::proto::ValueInfoProto {
    let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
    let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
    onnx_dynamic_value_info(name, elem_type, &dims)
}

/// An ONNX graph input or output whose dimensions are sizes (`"8"`) or the names of
/// dynamic axes (`"batch"`, ONNX `dim_param`).
pub fn onnx_dynamic_value_info(
    name: &str,
    elem_type: i32,
    dims: &[&str],
) -> smelt_frontend::onnx::proto::ValueInfoProto {
    use smelt_frontend::onnx::proto::{
        tensor_shape_proto::{dimension, Dimension},
        type_proto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(n) => dimension::Value::DimValue(n),
                Err(_) => dimension::Value::DimParam((*d).into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
