//! ONNX import: `.onnx` model files into the graph IR.
//!
//! The protobuf schema is ONNX's own `onnx-ml.proto` (vendored under `frontend/proto/`,
//! Apache-2.0), compiled at build time by `protox` + `prost-build`.
//!
//! Design choices:
//! - **Initializers become constants** (`constant` nodes), not `param`s: the IR's
//!   parameters get their values from initialisers or a weights file, and an ONNX
//!   model carries trained values, so constants keep the model self-contained.
//! - **Static data is folded at import time**: ops whose operands decide a shape
//!   (`Reshape`'s shape, `Slice`'s starts, `Shape`, `Range`, `ConstantOfShape`) need
//!   those operands known when importing: initializers, `Constant` nodes, values
//!   computed from them, or graph inputs whose values are given in
//!   [`ImportOptions::input_values`] (the model is then specialised to them).
//! - **Broadcasting is made explicit** with `broadcast` nodes; negative axes are
//!   normalised; composite ops (`softmax`, `layer_norm`, `attention`, ...) are used
//!   where ONNX's op matches one, other ops are decomposed into primitives.
//! - Element types: see [`tensor`] (narrow and unsigned integers are widened; the
//!   float8 variants other than e4m3fn, and 4-bit floats, are not supported).

pub mod import;
mod ops;
pub mod shape_values;
mod strings;
pub mod tensor;

/// Rust types generated from `onnx-ml.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use import::{Fail, Importer, NodeCtx, Out, Slot};
use prost::Message;
use proto::{type_proto, ModelProto, ValueInfoProto};
use smelt_compiler::ir::{is_symbol, Builder, Dim, Graph, Op, Shape, TensorType, ValueId};
use std::collections::HashMap;
pub use tensor::{Const, ConstData};

/// Options for [`import_model`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Values of graph inputs, by ONNX name or by the name of the IR input made for
    /// it, that the importer may use wherever ONNX needs a value known at import time
    /// (a `Reshape`'s shape input). The inputs stay inputs of the IR graph; ops that
    /// need them statically use these values.
    pub input_values: HashMap<String, Const>,
}

/// What went wrong while importing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes are not an ONNX model (truncated, corrupted, not protobuf).
    Malformed,
    /// A valid model uses an op, attribute or element type the importer does not support.
    Unsupported,
    /// The model is inconsistent (bad arity, shapes that do not match).
    Invalid,
}

/// An ONNX import error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OnnxError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// What went wrong, naming the node (index, name, op, opset) where there is one.
    pub message: String,
}

impl OnnxError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> OnnxError {
        OnnxError {
            kind,
            message: message.into(),
        }
    }
}

/// An imported model: the graph and how ONNX's input and output names map onto it.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The verified graph.
    pub graph: Graph,
    /// `(ONNX input name, IR input)` in the model's order (initializers excluded).
    pub inputs: Vec<(String, ValueId)>,
    /// `(ONNX output name, IR output)` in the model's order.
    pub outputs: Vec<(String, ValueId)>,
}

/// Decodes a serialized `ModelProto`.
pub fn parse_model(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    ModelProto::decode(bytes).map_err(|e| {
        OnnxError::new(
            ErrorKind::Malformed,
            format!("not a valid ONNX model (protobuf decoding failed: {e})"),
        )
    })
}

/// Reads a serialized `TensorProto` (the `.pb` files of ONNX test data).
pub fn parse_tensor(bytes: &[u8]) -> Result<(String, Const), OnnxError> {
    let t = proto::TensorProto::decode(bytes).map_err(|e| {
        OnnxError::new(
            ErrorKind::Malformed,
            format!("not a valid ONNX TensorProto (protobuf decoding failed: {e})"),
        )
    })?;
    let c = tensor::decode_tensor(&t).map_err(|m| OnnxError::new(ErrorKind::Unsupported, m))?;
    Ok((t.name.unwrap_or_default(), c))
}

/// Imports a serialized ONNX model.
pub fn import_model(bytes: &[u8], options: &ImportOptions) -> Result<Imported, OnnxError> {
    let model = parse_model(bytes)?;
    import(&model, options)
}

/// A valid IR value name for ONNX name `name` (`/conv/Conv_output_0` -> `conv.Conv_output_0`).
fn ir_name(name: &str) -> String {
    let cleaned: String = name
        .trim_start_matches(['/', ':'])
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => c,
            '/' | ':' => '.',
            _ => '_',
        })
        .collect();
    if cleaned.is_empty() {
        "v".to_string()
    } else {
        cleaned
    }
}

/// A symbolic dimension name for ONNX `dim_param` `param` (or a fresh one).
fn symbol_for(param: &str, fallback: &str) -> Dim {
    let cleaned: String = param
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if is_symbol(&cleaned) {
        Dim::sym(&cleaned)
    } else {
        Dim::sym(fallback)
    }
}

fn input_type(info: &ValueInfoProto, index: usize) -> Result<TensorType, OnnxError> {
    let name = info.name.as_deref().unwrap_or("");
    let unsupported = |m: String| {
        OnnxError::new(
            ErrorKind::Unsupported,
            format!("graph input {index} ('{name}'): {m}"),
        )
    };
    let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(unsupported("only tensor inputs are supported".into()));
    };
    let dtype = tensor::ir_dtype(t.elem_type.unwrap_or(0)).map_err(unsupported)?;
    let shape = t
        .shape
        .as_ref()
        .ok_or_else(|| unsupported("the input has no shape (rank unknown)".into()))?;
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(axis, d)| {
            use proto::tensor_shape_proto::dimension::Value;
            let fallback = format!("D{index}_{axis}");
            match &d.value {
                Some(Value::DimValue(n)) if *n >= 0 => Ok(Dim::fixed(*n as u64)),
                Some(Value::DimValue(n)) => Err(unsupported(format!("negative dimension {n}"))),
                Some(Value::DimParam(p)) => Ok(symbol_for(p, &fallback)),
                None => Ok(Dim::sym(&fallback)),
            }
        })
        .collect::<Result<Vec<Dim>, OnnxError>>()?;
    Ok(TensorType::new(dtype, Shape(dims)))
}

/// The element types the graph declares for its inputs, outputs, initializers and
/// `value_info` entries, by ONNX name.
fn declared_elem_types(graph: &proto::GraphProto) -> HashMap<String, i32> {
    let mut types = HashMap::new();
    for info in graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
    {
        if let (Some(name), Some(type_proto::Value::TensorType(t))) = (
            &info.name,
            info.r#type.as_ref().and_then(|t| t.value.as_ref()),
        ) {
            if let Some(code) = t.elem_type {
                types.insert(name.clone(), code);
            }
        }
    }
    for init in &graph.initializer {
        if let (Some(name), Some(code)) = (&init.name, init.data_type) {
            types.insert(name.clone(), code);
        }
    }
    types
}

/// The highest default-domain opset accepted (above every released one).
pub const MAX_OPSET: i64 = 30;

/// Imports a decoded ONNX model.
pub fn import(model: &ModelProto, options: &ImportOptions) -> Result<Imported, OnnxError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::new(ErrorKind::Invalid, "the model has no graph"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(1);
    // ONNX adds about one opset a release; anything outside this range is a broken file.
    if !(1..=MAX_OPSET).contains(&opset) {
        return Err(OnnxError::new(
            ErrorKind::Invalid,
            format!("the model imports opset {opset} of the default domain; ONNX opsets run from 1 to {MAX_OPSET} at most"),
        ));
    }
    let name = ir_name(graph.name.as_deref().unwrap_or("onnx"));
    let mut im = Importer {
        b: Builder::new(&name),
        slots: HashMap::new(),
        elem_types: declared_elem_types(graph),
    };
    for (i, init) in graph.initializer.iter().enumerate() {
        let init_name = init.name.clone().unwrap_or_default();
        let c = tensor::decode_tensor(init).map_err(|m| {
            OnnxError::new(
                ErrorKind::Unsupported,
                format!("initializer {i} ('{init_name}'): {m}"),
            )
        })?;
        im.slots.insert(
            init_name,
            Slot {
                konst: Some(c),
                ..Slot::default()
            },
        );
    }
    let mut inputs = Vec::new();
    for (i, info) in graph.input.iter().enumerate() {
        let onnx_name = info.name.clone().unwrap_or_default();
        // Before IR version 4, initializers were also listed as inputs.
        if im.slots.contains_key(&onnx_name) {
            continue;
        }
        let ty = input_type(info, i)?;
        let mut ir = ir_name(&onnx_name);
        while im.b.graph().find(&ir).is_some() {
            ir.push('_');
        }
        let id =
            im.b.input(&ir, ty)
                .map_err(|m| OnnxError::new(ErrorKind::Invalid, m.to_string()))?;
        im.slots.insert(
            onnx_name.clone(),
            Slot {
                id: Some(id),
                konst: options
                    .input_values
                    .get(&onnx_name)
                    .or_else(|| options.input_values.get(&ir))
                    .cloned(),
                sizes: None,
            },
        );
        inputs.push((onnx_name, id));
    }
    for (index, node) in graph.node.iter().enumerate() {
        import_node(&mut im, node, index, opset)?;
    }
    let mut outputs = Vec::new();
    for info in &graph.output {
        let onnx_name = info.name.clone().unwrap_or_default();
        let fail = |f: Fail| {
            let (kind, m) = match f {
                Fail::Unsupported(m) => (ErrorKind::Unsupported, m),
                Fail::Invalid(m) => (ErrorKind::Invalid, m),
            };
            OnnxError::new(kind, format!("graph output '{onnx_name}': {m}"))
        };
        let mut id = im.value(&onnx_name).map_err(fail)?;
        // An output that is an input, or already an output, gets its own copy.
        let is_node = matches!(
            im.b.graph().value(id).def,
            smelt_compiler::ir::Def::Node { .. }
        );
        if !is_node || im.b.graph().outputs.contains(&id) {
            let ty = im.ty(id);
            id = im.op_typed(Op::Reshape, &[id], ty).map_err(fail)?;
            im.b.rename(id, &ir_name(&onnx_name));
        } else if im
            .b
            .graph()
            .value(id)
            .name
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            // A value folded at import time (`Shape`) gets an anonymous constant: name it.
            im.b.rename(id, &ir_name(&onnx_name));
        }
        im.b.output(id)
            .map_err(|m| OnnxError::new(ErrorKind::Invalid, m.to_string()))?;
        outputs.push((onnx_name, id));
    }
    Ok(Imported {
        graph: im.b.finish(),
        inputs,
        outputs,
    })
}

fn import_node(
    im: &mut Importer,
    node: &proto::NodeProto,
    index: usize,
    opset: i64,
) -> Result<(), OnnxError> {
    let op_type = node.op_type.as_deref().unwrap_or("");
    let node_name = node.name.as_deref().unwrap_or("");
    let domain = node.domain.as_deref().unwrap_or("");
    let place = if node_name.is_empty() {
        format!("node {index} ({op_type}, opset {opset})")
    } else {
        format!("node {index} '{node_name}' ({op_type}, opset {opset})")
    };
    if !matches!(domain, "" | "ai.onnx") {
        return Err(OnnxError::new(
            ErrorKind::Unsupported,
            format!("{place}: op '{op_type}' of domain '{domain}' is not supported"),
        ));
    }
    let ctx = NodeCtx { proto: node, opset };
    let first_new = im.b.graph().values.len();
    let fail = |f: Fail| match f {
        Fail::Unsupported(m) => OnnxError::new(ErrorKind::Unsupported, format!("{place}: {m}")),
        Fail::Invalid(m) => OnnxError::new(ErrorKind::Invalid, format!("{place}: {m}")),
    };
    let gives_strings = strings::check_node(&ctx, &im.elem_types).map_err(fail)?;
    let results = ops::import_op(im, &ctx).map_err(fail)?;
    if gives_strings {
        for out in node.output.iter().filter(|n| !n.is_empty()) {
            im.elem_types.insert(out.clone(), tensor::code::STRING);
        }
    }
    for (i, out) in results.into_iter().enumerate() {
        let Some(out_name) = node.output.get(i).filter(|n| !n.is_empty()) else {
            continue;
        };
        let slot = match out {
            Out::Ir(id) => {
                // Name values this node created after their ONNX output.
                if id.index() >= first_new {
                    im.b.rename(id, &ir_name(out_name));
                }
                Slot {
                    id: Some(id),
                    ..Slot::default()
                }
            }
            Out::Const(c) => Slot {
                konst: Some(c),
                ..Slot::default()
            },
            Out::Sizes(v) => Slot {
                sizes: Some(v),
                ..Slot::default()
            },
        };
        im.slots.insert(out_name.clone(), slot);
    }
    Ok(())
}
