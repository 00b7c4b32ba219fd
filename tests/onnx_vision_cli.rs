//! ONNX's node cases for the vision ops (Conv, the pools, BatchNormalization) through
//! the path users take: `smelt run MODEL.onnx --input NAME=FILE.pb` on the default
//! device (the CPU backend), against the outputs ONNX ships with each case. The
//! conformance test (`frontend/tests/onnx_conformance.rs`) runs every case in the
//! interpreter; this one runs these on the CPU. Tolerance: 1e-4 · max(1, |expected|).

mod common;

use common::{smelt, texts};
use smelt_frontend::onnx::{self, ConstData};
use smelt_runtime::io::read_npy;
use std::path::Path;

const CASES: &[&str] = &[
    "test_basic_conv_with_padding",
    "test_conv_with_autopad_same",
    "test_conv_with_strides_and_asymmetric_padding",
    "test_maxpool_2d_ceil",
    "test_maxpool_2d_dilations",
    "test_maxpool_3d_default",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
    "test_globalaveragepool",
    "test_batchnorm_example",
];

fn values(c: &onnx::Const) -> Vec<f64> {
    match &c.data {
        ConstData::Float(v) => v.clone(),
        ConstData::Int(v) => v.iter().map(|&i| i as f64).collect(),
        ConstData::Bool(v) => v.iter().map(|&b| f64::from(u8::from(b))).collect(),
    }
}

fn run_case(node: &Path, case: &str) {
    let dir = node.join(case);
    let data = dir.join("test_data_set_0");
    let mut args = vec![
        "run".to_string(),
        dir.join("model.onnx").display().to_string(),
    ];
    let mut inputs: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("input_")
        })
        .collect();
    inputs.sort();
    for path in &inputs {
        let (name, _) = onnx::parse_tensor(&std::fs::read(path).unwrap()).unwrap();
        args.push("--input".into());
        args.push(format!("{name}={}", path.display()));
    }
    let out_dir =
        std::env::temp_dir().join(format!("smelt-onnx-vision-{case}-{}", std::process::id()));
    args.push("--output-dir".into());
    args.push(out_dir.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = smelt(&args);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{case}: {stderr}");
    let (name, want) =
        onnx::parse_tensor(&std::fs::read(data.join("output_0.pb")).unwrap()).unwrap();
    let got = read_npy(&out_dir.join(format!("{name}.npy")))
        .unwrap_or_else(|e| panic!("{case}: output {name}: {e}"));
    assert_eq!(got.shape, want.shape, "{case}");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(values(&want)).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{case}: element {i}: {g} vs {w}"
        );
    }
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn vision_node_cases_run_on_the_default_device() {
    let Some(root) = common::script_data(
        "SMELT_ONNX_TESTDATA",
        "onnx-testdata",
        "node/test_basic_conv_with_padding/model.onnx",
        "scripts/fetch-onnx-testdata.sh",
    ) else {
        return;
    };
    for case in CASES {
        run_case(&root.join("node"), case);
    }
}
