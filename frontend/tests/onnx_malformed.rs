//! Truncated or corrupted `.onnx` bytes give an error, never a panic.

use prost::Message;
use smelt_frontend::onnx::proto::{
    tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use smelt_frontend::onnx::{import_model, ImportOptions};

fn input(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A small valid model: `y = Softmax(MatMul(a, b) + a)`.
fn sample_model() -> Vec<u8> {
    let node = |op: &str, ins: &[&str], out: &str| NodeProto {
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("sample".into()),
            node: vec![
                node("MatMul", &["a", "b"], "m"),
                node("Add", &["m", "a"], "s"),
                node("Softmax", &["s"], "y"),
            ],
            input: vec![input("a", &[2, 3]), input("b", &[3, 3])],
            output: vec![input("y", &[2, 3])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn import_never_panics(bytes: &[u8]) {
    let result = std::panic::catch_unwind(|| import_model(bytes, &ImportOptions::default()));
    assert!(result.is_ok(), "import panicked on {} bytes", bytes.len());
}

#[test]
fn the_sample_model_imports() {
    let imported = import_model(&sample_model(), &ImportOptions::default()).expect("imports");
    assert_eq!(imported.inputs.len(), 2);
    assert_eq!(imported.outputs.len(), 1);
}

#[test]
fn every_truncation_is_an_error_or_a_model() {
    let bytes = sample_model();
    for len in 0..bytes.len() {
        import_never_panics(&bytes[..len]);
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = sample_model();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut corrupted = bytes.clone();
            corrupted[i] ^= flip;
            import_never_panics(&corrupted);
        }
    }
}

#[test]
fn garbage_is_reported_as_malformed() {
    let err = import_model(
        b"definitely not protobuf \xff\xff\xff",
        &ImportOptions::default(),
    )
    .expect_err("garbage");
    assert!(
        err.message.contains("not a valid ONNX model"),
        "{}",
        err.message
    );
}

#[test]
fn unsupported_ops_name_the_op_opset_and_node() {
    let mut model = ModelProto::decode(sample_model().as_slice()).expect("decodes");
    if let Some(g) = model.graph.as_mut() {
        g.node[1].op_type = Some("FancyOp".into());
        g.node[1].name = Some("the_node".into());
    }
    let err = import_model(&model.encode_to_vec(), &ImportOptions::default()).expect_err("fails");
    for part in ["FancyOp", "opset 17", "node 1", "the_node"] {
        assert!(
            err.message.contains(part),
            "{part} missing in: {}",
            err.message
        );
    }
}

/// Real models from the conformance data, truncated, when the data is present.
#[test]
fn truncated_real_models_never_panic() {
    let dir = std::env::var_os("SMELT_ONNX_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onnx-testdata")
        })
        .join("node");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        let why = format!(
            "no ONNX test data in {} (run scripts/fetch-onnx-testdata.sh)",
            dir.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return;
    };
    let mut paths: Vec<_> = entries
        .flatten()
        .map(|e| e.path().join("model.onnx"))
        .collect();
    paths.sort();
    for path in paths.iter().step_by(25) {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        for cut in [
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len().saturating_sub(1),
        ] {
            import_never_panics(&bytes[..cut]);
        }
    }
}
