//! String tensors import as hashed keys: equality and movement are defined on them,
//! any other op is an import error naming the op.

use prost::Message;
use smelt_frontend::onnx::proto::{
    attribute_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use smelt_frontend::onnx::{import_model, ImportOptions};

const FLOAT: i32 = 1;
const STRING: i32 = 8;

fn value_info(name: &str, elem_type: i32) -> ValueInfoProto {
    let dim = vec![tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(2)),
        ..Default::default()
    }];
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

/// A node `op(inputs) -> out` from `"Op a b -> out"`, plus attributes.
fn node(spec: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    let (lhs, out) = spec.split_once(" -> ").expect("spec");
    let mut words = lhs.split_whitespace();
    NodeProto {
        op_type: words.next().map(String::from),
        input: words.map(String::from).collect(),
        output: vec![out.into()],
        attribute,
        ..Default::default()
    }
}

fn strings(values: &[&str]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: Some(STRING),
        string_data: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// Imports `nodes` over string inputs `s`, `t` and float input `x` (all of shape [2])
/// with output `y`; `expect` is `Ok(())` or a part of the error message.
fn check(nodes: Vec<NodeProto>, expect: Result<(), &str>) {
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(19),
        }],
        graph: Some(GraphProto {
            name: Some("strings".into()),
            node: nodes,
            input: vec![
                value_info("s", STRING),
                value_info("t", STRING),
                value_info("x", FLOAT),
            ],
            output: vec![ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: Some("words".into()),
                ..strings(&["a", "b"])
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = import_model(&model.encode_to_vec(), &ImportOptions::default());
    match (expect, got) {
        (Ok(()), Ok(_)) => {}
        (Err(part), Err(e)) => assert!(e.message.contains(part), "{part:?} not in: {}", e.message),
        (expect, got) => panic!("expected {expect:?}, got {:?}", got.map(|_| ())),
    }
}

#[test]
fn equality_and_movement_are_defined_on_strings() {
    check(vec![node("Equal s t -> y", vec![])], Ok(()));
    check(vec![node("Equal s words -> y", vec![])], Ok(()));
    check(
        vec![
            node("Identity s -> u", vec![]),
            node("Concat u t -> w", vec![int_attr("axis", 0)]),
            node("Equal w w -> y", vec![]),
        ],
        Ok(()),
    );
    check(
        vec![
            node(
                "Constant -> c",
                vec![tensor_attr("value", strings(&["x", "y"]))],
            ),
            node("Equal s c -> y", vec![]),
        ],
        Ok(()),
    );
}

#[test]
fn other_ops_on_strings_are_errors_naming_the_op() {
    let not_defined = "is not defined on string tensors";
    check(
        vec![node("Add s t -> y", vec![])],
        Err("op 'Add' is not defined"),
    );
    check(
        vec![node("Cast s -> y", vec![int_attr("to", 1)])],
        Err("op 'Cast'"),
    );
    check(
        vec![node("Cast x -> y", vec![int_attr("to", 8)])],
        Err("casting to strings"),
    );
    // Strings moved elsewhere are still strings.
    check(
        vec![node("Identity s -> u", vec![]), node("Neg u -> y", vec![])],
        Err("op 'Neg'"),
    );
    check(
        vec![
            node(
                "Constant -> c",
                vec![tensor_attr("value", strings(&["x", "y"]))],
            ),
            node("Mul c c -> y", vec![]),
        ],
        Err(not_defined),
    );
    // A string as an index, not as the data moved.
    check(vec![node("Gather x s -> y", vec![])], Err("op 'Gather'"));
}
