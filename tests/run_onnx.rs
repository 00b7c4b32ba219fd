//! `smelt run` on ONNX models: input files given with `--input` are also import-time
//! values, so shapes computed from graph inputs (a `Reshape` whose shape is an input)
//! are known.

mod common;

use common::{onnx_value_info as value_info, smelt, texts};
use prost::Message;
use smelt_compiler::ir::DType;
use smelt_frontend::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
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
    opset_13_model(graph)
}

/// A model of `graph` in the default domain at opset 13, encoded.
fn opset_13_model(graph: GraphProto) -> Vec<u8> {
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

/// The shape computations of a PyTorch export with dynamic `batch` and `sequence` axes,
/// on `x: f32[batch, sequence, 8]`:
/// - `heads = Transpose(Reshape(x, [b, t, 2, 4]), [0, 2, 1, 3])`, the shape built by
///   `Shape -> Gather -> Unsqueeze -> Concat`;
/// - `rows = Reshape(x, [b * t, -1])`;
/// - `placed = x + Expand(Unsqueeze(Cast(Range(0, t, 1))), Shape(x))` (position ids);
/// - `zeros = ConstantOfShape([b, 1])`, and `half = Reshape(x, [b, t, 16 / 4, 2])` with
///   the 16 computed as `Gather(Shape(x), 2) * 2`;
/// - `pairs = Reshape(x, Concat(Shape(x)[0:2], [4, 2]))` (a `Slice` of the shape), and
///   `trimmed = x[:, :t]` (a `Slice` ending at a symbolic size).
fn dynamic_axes_model() -> Vec<u8> {
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| (*s).into()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let ints = |name: &str, dims: Vec<i64>, values: Vec<i64>| TensorProto {
        name: Some(name.into()),
        dims,
        data_type: Some(INT64),
        int64_data: values,
        ..Default::default()
    };
    let mut to_float = node("Cast", &["pos"], "pos_f");
    to_float.attribute = vec![smelt_frontend::onnx::proto::AttributeProto {
        name: Some("to".into()),
        i: Some(i64::from(FLOAT)),
        r#type: Some(2),
        ..Default::default()
    }];
    let graph = GraphProto {
        name: Some("dynamic_axes".into()),
        node: vec![
            node("Shape", &["x"], "s"),
            node("Gather", &["s", "zero"], "b"),
            node("Gather", &["s", "one"], "t"),
            node("Gather", &["s", "two"], "f"),
            node("Unsqueeze", &["b", "axis0"], "b1"),
            node("Unsqueeze", &["t", "axis0"], "t1"),
            node("Concat", &["b1", "t1", "two_four"], "split_shape"),
            node("Reshape", &["x", "split_shape"], "split"),
            {
                let mut n = node("Transpose", &["split"], "heads");
                n.attribute = vec![smelt_frontend::onnx::proto::AttributeProto {
                    name: Some("perm".into()),
                    ints: vec![0, 2, 1, 3],
                    r#type: Some(7),
                    ..Default::default()
                }];
                n
            },
            node("Mul", &["b", "t"], "bt"),
            node("Unsqueeze", &["bt", "axis0"], "bt1"),
            node("Concat", &["bt1", "minus_one"], "rows_shape"),
            node("Reshape", &["x", "rows_shape"], "rows"),
            node("Range", &["zero", "t", "one"], "pos"),
            to_float,
            node("Unsqueeze", &["pos_f", "axes02"], "pos3"),
            node("Expand", &["pos3", "s"], "pos_x"),
            node("Add", &["x", "pos_x"], "placed"),
            node("Concat", &["b1", "one1"], "zeros_shape"),
            node("ConstantOfShape", &["zeros_shape"], "zeros"),
            node("Mul", &["f", "two"], "f2"),
            node("Div", &["f2", "four"], "f2q"),
            node("Unsqueeze", &["f2q", "axis0"], "f2q1"),
            node("Concat", &["b1", "t1", "f2q1", "two1"], "half_shape"),
            node("Reshape", &["x", "half_shape"], "half"),
            node("Slice", &["s", "zero1", "two1"], "lead"),
            node("Concat", &["lead", "four_two"], "pairs_shape"),
            node("Reshape", &["x", "pairs_shape"], "pairs"),
            node("Slice", &["x", "zero1", "t1", "one1"], "trimmed"),
        ],
        initializer: vec![
            ints("zero", vec![], vec![0]),
            ints("one", vec![], vec![1]),
            ints("two", vec![], vec![2]),
            ints("four", vec![], vec![4]),
            ints("axis0", vec![1], vec![0]),
            ints("axes02", vec![2], vec![0, 2]),
            ints("two_four", vec![2], vec![2, 4]),
            ints("minus_one", vec![1], vec![-1]),
            ints("one1", vec![1], vec![1]),
            ints("two1", vec![1], vec![2]),
            ints("zero1", vec![1], vec![0]),
            ints("four_two", vec![2], vec![4, 2]),
        ],
        input: vec![common::onnx_dynamic_value_info(
            "x",
            FLOAT,
            &["batch", "sequence", "8"],
        )],
        output: [
            "heads", "rows", "placed", "zeros", "half", "pairs", "trimmed",
        ]
        .iter()
        .map(|n| ValueInfoProto {
            name: Some((*n).into()),
            ..Default::default()
        })
        .collect(),
        ..Default::default()
    };
    opset_13_model(graph)
}

/// A model with dynamic axes imports once with symbolic sizes (`dump-ir` shows them)
/// and runs on the CPU backend at two batch sizes and sequence lengths, the second time
/// with the compiled program from the cache; the values are checked element by element
/// against the shape algebra written out here.
#[test]
fn dynamic_axes_import_once_and_run_at_any_size() {
    let dir = temp_dir("dynamic");
    let model = dir.join("dynamic.onnx");
    std::fs::write(&model, dynamic_axes_model()).expect("model written");
    let model = model.to_str().expect("utf-8 path");

    let out = smelt(&["dump-ir", model]);
    let (ir, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    for shown in [
        "f32[batch, 2, sequence, 4]",
        "f32[batch*sequence, 8]",
        "f32[batch, sequence, 8]",
        "f32[batch, 1]",
        "f32[batch, sequence, 4, 2]",
        "iota",
    ] {
        assert!(ir.contains(shown), "{shown} missing from\n{ir}");
    }

    let cache = dir.join("cache");
    for (run, (b, t)) in [(2usize, 3usize), (1, 5)].into_iter().enumerate() {
        let values: Vec<f64> = (0..b * t * 8).map(|i| (i as f64 * 0.37).sin()).collect();
        let x = dir.join(format!("x{run}.npy"));
        smelt_runtime::io::write_npy(
            &x,
            &Tensor::from_f64(DType::F32, vec![b, t, 8], values.clone()),
        )
        .expect("input written");
        let outputs = dir.join(format!("out{run}"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smelt"))
            .args(["run", model, "--verbose", "--input"])
            .arg(format!("x={}", x.display()))
            .arg("--output-dir")
            .arg(&outputs)
            .env("SMELT_CACHE_DIR", &cache)
            .output()
            .expect("smelt runs");
        let (_, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        if run == 1 {
            assert!(stderr.contains("compile cache: hit"), "{stderr}");
        }
        let read = |name: &str| read_npy(&outputs.join(format!("{name}.npy"))).expect(name);
        let x_at = |i: usize, j: usize, k: usize| values[(i * t + j) * 8 + k];
        let close = |got: &Tensor, want: Vec<f64>, shape: Vec<usize>, name: &str| {
            assert_eq!(got.shape, shape, "{name}");
            for (g, w) in got.to_f64_vec().iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                    "{name}: {g} vs {w}"
                );
            }
        };
        let mut heads = Vec::new();
        for i in 0..b {
            for h in 0..2 {
                for j in 0..t {
                    for k in 0..4 {
                        heads.push(x_at(i, j, h * 4 + k));
                    }
                }
            }
        }
        close(&read("heads"), heads, vec![b, 2, t, 4], "heads");
        close(&read("rows"), values.clone(), vec![b * t, 8], "rows");
        let placed = (0..b * t * 8)
            .map(|n| values[n] + ((n / 8) % t) as f64)
            .collect();
        close(&read("placed"), placed, vec![b, t, 8], "placed");
        close(&read("zeros"), vec![0.0; b], vec![b, 1], "zeros");
        close(&read("half"), values.clone(), vec![b, t, 4, 2], "half");
        close(&read("pairs"), values.clone(), vec![b, t, 4, 2], "pairs");
        close(&read("trimmed"), values.clone(), vec![b, t, 8], "trimmed");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `y = Conv(x, w, b)` with strides, asymmetric pads, a dilation and two groups.
fn conv_model() -> Vec<u8> {
    let ints = |name: &str, v: &[i64]| AttributeProto {
        name: Some(name.into()),
        r#type: Some(7), // INTS
        ints: v.to_vec(),
        ..Default::default()
    };
    let graph = GraphProto {
        name: Some("conv".into()),
        node: vec![NodeProto {
            op_type: Some("Conv".into()),
            input: vec!["x".into(), "w".into(), "b".into()],
            output: vec!["y".into()],
            attribute: vec![
                ints("strides", &[2, 1]),
                ints("pads", &[1, 0, 0, 1]),
                ints("dilations", &[1, 2]),
                AttributeProto {
                    name: Some("group".into()),
                    r#type: Some(2), // INT
                    i: Some(2),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
        input: vec![
            value_info("x", FLOAT, &[2, 4, 5, 6]),
            value_info("w", FLOAT, &[4, 2, 3, 2]),
            value_info("b", FLOAT, &[4]),
        ],
        output: vec![ValueInfoProto {
            name: Some("y".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    opset_13_model(graph)
}

/// The convolution of `conv_model`, by its definition, in loops.
fn conv_by_loops(x: &[f64], w: &[f64], b: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let (n, c, h, wd) = (2, 4, 5, 6);
    let (o, cg, kh, kw) = (4, 2, 3, 2);
    let (sh, sw, dh, dw) = (2, 1, 1, 2);
    let (top, left, bottom, right) = (1, 0, 0, 1);
    let oh = (h + top + bottom - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + left + right - dw * (kw - 1) - 1) / sw + 1;
    let mut y = vec![0.0; n * o * oh * ow];
    for img in 0..n {
        for oc in 0..o {
            let group = oc / (o / 2);
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b[oc];
                    for ic in 0..cg {
                        for p in 0..kh {
                            for q in 0..kw {
                                let row = (i * sh + p * dh) as i64 - top as i64;
                                let col = (j * sw + q * dw) as i64 - left as i64;
                                if row < 0 || col < 0 || row >= h as i64 || col >= wd as i64 {
                                    continue;
                                }
                                let ch = group * cg + ic;
                                let xv = x[((img * c + ch) * h + row as usize) * wd + col as usize];
                                acc += xv * w[((oc * cg + ic) * kh + p) * kw + q];
                            }
                        }
                    }
                    y[((img * o + oc) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    (vec![n, o, oh, ow], y)
}

#[test]
fn an_onnx_convolution_runs_on_the_default_device_as_its_definition_says() {
    let dir = temp_dir("conv");
    let model = dir.join("conv.onnx");
    std::fs::write(&model, conv_model()).expect("model written");
    let values = |n: usize, k: u64| -> Vec<f64> {
        (0..n as u64)
            .map(|i| ((i * k) % 17) as f64 / 8.0 - 1.0)
            .collect()
    };
    let (x, w, b) = (values(240, 7), values(48, 5), values(4, 3));
    let inputs = dir.join("inputs.safetensors");
    let tensors = [
        (
            "x".to_string(),
            Tensor::from_f64(DType::F32, vec![2, 4, 5, 6], x.clone()),
        ),
        (
            "w".to_string(),
            Tensor::from_f64(DType::F32, vec![4, 2, 3, 2], w.clone()),
        ),
        (
            "b".to_string(),
            Tensor::from_f64(DType::F32, vec![4], b.clone()),
        ),
    ];
    write_safetensors(&inputs, &tensors).expect("inputs written");
    let given = |name: &str| format!("{name}={}", inputs.display());
    let out_dir = dir.join("out");
    let out = smelt(&[
        "run",
        model.to_str().expect("utf-8 path"),
        "--input",
        &given("x"),
        "--input",
        &given("w"),
        "--input",
        &given("b"),
        "--output-dir",
        out_dir.to_str().expect("utf-8 path"),
    ]);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let got = read_npy(&out_dir.join("y.npy")).expect("y written");
    let (shape, want) = conv_by_loops(&x, &w, &b);
    assert_eq!(got.shape, shape);
    for (i, (g, w)) in got.to_f64_vec().iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "element {i}: {g} vs {w}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
