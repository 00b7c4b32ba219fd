//! Fuzzing that stays (issue 22): every reader of untrusted bytes (`.smelt`, `.sir`,
//! JSON, ONNX, `.npy`, safetensors, checkpoints, GGUF) gets random and
//! mutated inputs, seeded from `examples/` and from small valid files of its format, and
//! must return an error or a value, never panic. Each target runs for a bounded time
//! (`SMELT_FUZZ_SECONDS`, default 6 s each; `.ci/run` sets it) from a fixed seed
//! (`SMELT_FUZZ_SEED`), and the count of inputs tried is printed. A crash found here
//! becomes a regression file under `tests/malformed/` (text formats) or a test in
//! `tests/hostile.rs`.

mod common;

use common::Rng;
use prost::Message;
use smelt_compiler::ir::{json, text};
use smelt_frontend::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};
use smelt_frontend::onnx::{import_model, parse_tensor, ImportOptions};
use smelt_runtime::io::{read_npy, read_safetensors, write_npy, write_safetensors};
use smelt_runtime::train::Checkpoint;
use smelt_runtime::{Data, Tensor};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// Byte strings that stress size and number handling when spliced into an input.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "-inf",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999",
    "4294967296*4294967296",
    "B*B*B*B",
];

/// One mutation of `input`: bit flips, byte insertions and deletions, copies of a
/// range, truncation, or an extreme number spliced over a digit run.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + (rng.next_f64() * 4.0) as usize;
    for _ in 0..rounds {
        let len = out.len().max(1);
        let at = (rng.next_f64() * len as f64) as usize % len;
        match (rng.next_f64() * 7.0) as usize {
            0 if !out.is_empty() => out[at] ^= 1 << ((rng.next_f64() * 8.0) as u32),
            1 => out.insert(at.min(out.len()), (rng.next_f64() * 256.0) as u8),
            2 if !out.is_empty() => {
                let end = (at + 1 + (rng.next_f64() * 16.0) as usize).min(out.len());
                out.drain(at..end);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + (rng.next_f64() * 32.0) as usize).min(out.len());
                let piece = out[at..end].to_vec();
                let to = (rng.next_f64() * out.len() as f64) as usize;
                out.splice(to..to, piece);
            }
            4 => out.truncate(at),
            _ => {
                // Replace the digit run at or after `at` with an extreme number.
                let start = (at..out.len()).find(|&i| out[i].is_ascii_digit());
                if let Some(s) = start {
                    let end = (s..out.len())
                        .find(|&i| !out[i].is_ascii_digit())
                        .unwrap_or(out.len());
                    let pick = EXTREMES[(rng.next_f64() * EXTREMES.len() as f64) as usize];
                    out.splice(s..end, pick.bytes());
                }
            }
        }
    }
    out
}

/// Feeds `run` mutated seeds and random bytes for the time budget; returns how many
/// inputs it tried, and fails with the inputs that panicked (saved for a regression).
fn fuzz(target: &str, seeds: &[Vec<u8>], run: impl Fn(&[u8])) -> usize {
    let budget = std::env::var("SMELT_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6.0);
    let seed = std::env::var("SMELT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let mut rng = Rng(seed ^ target.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let began = Instant::now();
    let mut tried = 0usize;
    let mut crashes = Vec::new();
    // A panic prints its message; the failures are summarised at the end instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while began.elapsed() < Duration::from_secs_f64(budget) || tried < seeds.len() {
        let input = match seeds.get(tried) {
            // Every seed once as it is, then mutations (and a little pure noise).
            Some(s) => s.clone(),
            None if rng.next_f64() < 0.05 => {
                let n = (rng.next_f64() * 64.0) as usize;
                (0..n).map(|_| (rng.next_f64() * 256.0) as u8).collect()
            }
            None => {
                let base = &seeds[(rng.next_f64() * seeds.len() as f64) as usize];
                mutate(&mut rng, base)
            }
        };
        tried += 1;
        if catch_unwind(AssertUnwindSafe(|| run(&input))).is_err() {
            crashes.push(input);
        }
    }
    std::panic::set_hook(hook);
    eprintln!("fuzz {target}: {tried} inputs, {} panics", crashes.len());
    if !crashes.is_empty() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-crashes-{target}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, c) in crashes.iter().enumerate().take(20) {
            std::fs::write(dir.join(format!("crash-{i}")), c).unwrap();
        }
        panic!(
            "fuzz {target}: {} of {tried} inputs panicked; they are in {}",
            crashes.len(),
            dir.display()
        );
    }
    tried
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap()
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fuzz_smelt_parser() {
    let seeds: Vec<Vec<u8>> = ["mlp.smelt", "gpt.smelt", "moe.smelt", "llama.smelt"]
        .iter()
        .map(|n| example(n))
        .collect();
    fuzz("smelt", &seeds, |b| {
        let _ = smelt_frontend::lang::compile(&text_of(b), "fuzz", &HashMap::new());
    });
}

#[test]
fn fuzz_sir_parser_and_json_reader() {
    let mlp = example("mlp.sir");
    let graph = text::parse(&text_of(&mlp)).unwrap().graph;
    let mut sir = vec![mlp];
    let mut dir: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sir"))
            .collect();
    dir.sort();
    sir.extend(dir.iter().map(|p| std::fs::read(p).unwrap()));
    fuzz("sir", &sir, |b| {
        let _ = text::parse(&text_of(b));
    });
    let seeds = vec![json::to_json(&graph).into_bytes()];
    fuzz("json", &seeds, |b| {
        let _ = json::from_json(&text_of(b));
    });
}

/// Small valid ONNX models: a few ops with initializers, folded shapes and constants.
fn onnx_seeds() -> Vec<Vec<u8>> {
    let tensor = |name: &str, dims: Vec<i64>, data_type: i32, ints: Vec<i64>, floats: Vec<f32>| {
        TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(data_type),
            int64_data: ints,
            float_data: floats,
            ..Default::default()
        }
    };
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let model = |nodes: Vec<NodeProto>, inits: Vec<TensorProto>, out: &str| {
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                name: Some("seed".into()),
                node: nodes,
                initializer: inits,
                output: vec![smelt_frontend::onnx::proto::ValueInfoProto {
                    name: Some(out.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let a = tensor(
        "a",
        vec![2, 3],
        1,
        vec![],
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    let shape = tensor("shape", vec![2], 7, vec![3, 2], vec![]);
    vec![
        model(
            vec![
                node("Reshape", &["a", "shape"], "r"),
                node("Relu", &["r"], "y"),
            ],
            vec![a.clone(), shape.clone()],
            "y",
        ),
        model(
            vec![
                node("ConstantOfShape", &["shape"], "c"),
                node("Shape", &["c"], "y"),
            ],
            vec![shape],
            "y",
        ),
        model(
            vec![
                node("Transpose", &["a"], "t"),
                node("MatMul", &["a", "t"], "m"),
                node("Softmax", &["m"], "y"),
            ],
            vec![a.clone()],
            "y",
        ),
        a.encode_to_vec(),
    ]
}

#[test]
fn fuzz_onnx_importer() {
    let seeds = onnx_seeds();
    fuzz("onnx", &seeds, |b| {
        let _ = import_model(b, &ImportOptions::default());
        let _ = parse_tensor(b);
    });
}

/// Small valid tensor files of each kind `write` makes, as bytes.
fn tensor_file_seeds(write: impl Fn(&Path, &Tensor)) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let tensors = [
        Tensor {
            dtype: smelt_compiler::ir::DType::F32,
            shape: vec![2, 3],
            data: Data::Float(vec![0.5; 6]),
        },
        Tensor {
            dtype: smelt_compiler::ir::DType::I64,
            shape: vec![4],
            data: Data::Int(vec![1, -2, 3, 4]),
        },
        Tensor {
            dtype: smelt_compiler::ir::DType::Bool,
            shape: vec![],
            data: Data::Bool(vec![true]),
        },
    ];
    tensors
        .iter()
        .map(|t| {
            let p = dir.path().join("seed");
            write(&p, t);
            std::fs::read(&p).unwrap()
        })
        .collect()
}

/// Runs `read` on `bytes` written to a scratch file (the readers take paths).
fn via_file(dir: &Path, name: &str, bytes: &[u8], read: impl FnOnce(&Path)) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    read(&p);
}

#[test]
fn fuzz_npy_and_safetensors_readers() {
    let scratch = tempfile::tempdir().unwrap();
    let npy = tensor_file_seeds(|p, t| write_npy(p, t).unwrap());
    fuzz("npy", &npy, |b| {
        via_file(scratch.path(), "f.npy", b, |p| {
            let _ = read_npy(p);
        })
    });
    let st = tensor_file_seeds(|p, t| write_safetensors(p, &[("t".into(), t.clone())]).unwrap());
    fuzz("safetensors", &st, |b| {
        via_file(scratch.path(), "f.safetensors", b, |p| {
            let _ = read_safetensors(p);
        })
    });
    let ckpt = Checkpoint {
        step: 3,
        tensors: [(
            "w".to_string(),
            Tensor {
                dtype: smelt_compiler::ir::DType::F32,
                shape: vec![2],
                data: Data::Float(vec![1.0, 2.0]),
            },
        )]
        .into(),
        meta: [("smelt.seed".to_string(), "0".to_string())].into(),
    };
    let seeds = vec![ckpt.encode().unwrap()];
    fuzz("checkpoint", &seeds, |b| {
        via_file(scratch.path(), "checkpoint.safetensors", b, |p| {
            let _ = Checkpoint::load(p);
        })
    });
}

/// A small valid GGUF (version 3): two metadata entries and an f32 [2, 3] and an f16
/// [4] tensor, laid out as the format says (data aligned to 32 bytes).
fn gguf_seed() -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&2u64.to_le_bytes()); // tensors
    out.extend_from_slice(&2u64.to_le_bytes()); // metadata entries
    string(&mut out, "general.name");
    out.extend_from_slice(&8u32.to_le_bytes()); // string
    string(&mut out, "seed");
    string(&mut out, "general.alignment");
    out.extend_from_slice(&4u32.to_le_bytes()); // u32
    out.extend_from_slice(&32u32.to_le_bytes());
    // (name, dims, type: 0 = f32, 1 = f16, offset in the data section)
    for (name, dims, kind, offset) in [("a", &[3u64, 2][..], 0u32, 0u64), ("b", &[4], 1, 32)] {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for x in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for x in [0x3c00u16, 0x4000, 0xc000, 0x0000] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

#[test]
fn fuzz_gguf_reader() {
    use smelt_frontend::gguf::GgufFile;
    let scratch = tempfile::tempdir().unwrap();
    let seed = gguf_seed();
    {
        let p = scratch.path().join("seed.gguf");
        std::fs::write(&p, &seed).unwrap();
        let f = GgufFile::open(&p).expect("the seed is a valid GGUF file");
        assert_eq!(f.tensors.len(), 2);
        for t in &f.tensors {
            f.dequantize(t).expect("the seed's tensors decode");
        }
    }
    fuzz("gguf", &[seed], |b| {
        via_file(scratch.path(), "f.gguf", b, |p| {
            if let Ok(f) = GgufFile::open(p) {
                for t in &f.tensors {
                    let _ = f.dequantize(t);
                }
            }
        })
    });
}
