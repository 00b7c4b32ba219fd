//! `smelt run` on ONNX models: input files given with `--input` are also import-time
//! values, so shapes computed from graph inputs (a `Reshape` whose shape is an input)
//! are known.

mod common;

use common::{onnx_value_info as value_info, smelt, texts};
use prost::Message;
use smelt_compiler::ir::DType;
use smelt_frontend::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use smelt_runtime::io::{read_npy, write_safetensors};
use smelt_runtime::Tensor;
use std::path::PathBuf;

/// ONNX element type codes.
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const STRING: i32 = 8;
const BOOL: i32 = 9;

/// `reshaped = Reshape(data, shape)` with `shape` a graph input, not an initializer.
fn reshape_model() -> Vec<u8> {
    let graph = GraphProto {
        name: Some("reshape_by_input".into()),
        node: vec![NodeProto {
            op_type: Some("Reshape".into()),
            input: vec!["data".into(), "shape".into()],
            output: vec!["reshaped".into()],
            ..Default::default()
        }],
        input: vec![
            value_info("data", FLOAT, &[2, 3]),
            value_info("shape", INT64, &[2]),
        ],
        output: vec![ValueInfoProto {
            name: Some("reshaped".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smelt-run-onnx-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn run_uses_input_files_as_import_time_values() {
    let dir = temp_dir("reshape");
    let model = dir.join("reshape.onnx");
    std::fs::write(&model, reshape_model()).expect("model written");
    let inputs = dir.join("inputs.safetensors");
    let tensors = [
        (
            "data".to_string(),
            Tensor::from_f64(DType::F32, vec![2, 3], (0..6).map(f64::from).collect()),
        ),
        (
            "shape".to_string(),
            Tensor::from_i64(DType::I64, vec![2], vec![3, 2]),
        ),
    ];
    write_safetensors(&inputs, &tensors).expect("inputs written");
    let given = |name: &str| format!("{name}={}", inputs.display());
    for device in ["interp", "cpu"] {
        let out = smelt(&[
            "run",
            model.to_str().expect("utf-8 path"),
            "--input",
            &given("data"),
            "--input",
            &given("shape"),
            "--device",
            device,
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{device}: {stderr}");
        assert!(
            stdout.contains("reshaped: f32[3, 2] min 0.000000 mean 2.500000 max 5.000000"),
            "{device}: {stdout}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_without_the_shape_input_says_it_must_be_known() {
    let dir = temp_dir("missing");
    let model = dir.join("reshape.onnx");
    std::fs::write(&model, reshape_model()).expect("model written");
    let out = smelt(&["run", model.to_str().expect("utf-8 path")]);
    let err = common::expect_user_error(&out);
    assert!(err.contains("must be known at import time"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `same = Equal(a, b)` on string inputs.
fn equal_strings_model() -> Vec<u8> {
    let graph = GraphProto {
        name: Some("equal_strings".into()),
        node: vec![NodeProto {
            op_type: Some("Equal".into()),
            input: vec!["a".into(), "b".into()],
            output: vec!["same".into()],
            ..Default::default()
        }],
        input: vec![value_info("a", STRING, &[3]), value_info("b", STRING, &[3])],
        output: vec![value_info("same", BOOL, &[3])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(19),
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn string_tensor(name: &str, strings: &[&str]) -> Vec<u8> {
    TensorProto {
        name: Some(name.into()),
        dims: vec![strings.len() as i64],
        data_type: Some(STRING),
        string_data: strings.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn run_reads_string_tensor_files() {
    let dir = temp_dir("strings");
    let model = dir.join("equal.onnx");
    std::fs::write(&model, equal_strings_model()).expect("model written");
    let (a, b) = (dir.join("a.pb"), dir.join("b.pb"));
    std::fs::write(&a, string_tensor("a", &["cat", "dog", "ému"])).expect("a written");
    std::fs::write(&b, string_tensor("b", &["cat", "cow", "ému"])).expect("b written");
    let saved = dir.join("out");
    let out = smelt(&[
        "run",
        model.to_str().expect("utf-8 path"),
        "--input",
        &format!("a={}", a.display()),
        "--input",
        &format!("b={}", b.display()),
        "--output-dir",
        saved.to_str().expect("utf-8 path"),
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("same: bool[3]"), "{stdout}");
    let same = read_npy(&saved.join("same.npy")).expect("output written");
    assert_eq!(same.dtype, DType::Bool);
    assert_eq!(same.to_f64_vec(), [1.0, 0.0, 1.0]);
    std::fs::remove_dir_all(&dir).ok();
}
