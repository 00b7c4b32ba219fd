//! ONNX backend conformance: runs the test cases shipped in the `onnx==1.22.0` wheel
//! (`node`, and the whole-model suites `simple`, `pytorch-converted`,
//! `pytorch-operator`) through the importer and the reference interpreter (rounding
//! each value to its dtype: f32 to f32, f64 kept), and compares with ONNX's tolerances
//! (rtol 1e-3, atol 1e-7).
//!
//! The data is looked up in `$SMELT_ONNX_TESTDATA` (default `target/onnx-testdata`);
//! `scripts/fetch-onnx-testdata.sh` puts it there. Without it the test is skipped,
//! unless `CI` is set, where it fails.

use smelt_compiler::ir::DType;
use smelt_frontend::onnx::{self, Const, ConstData, ErrorKind, ImportOptions};
use smelt_runtime::{interp, Data, Precision, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The ops whose every node case must pass.
const TARGET_OPS: &[&str] = &[
    "MatMul",
    "Gemm",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Exp",
    "Log",
    "Sqrt",
    "Neg",
    "Abs",
    "Reciprocal",
    "Relu",
    "Gelu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Softsign",
    "Sinh",
    "Cosh",
    "Asinh",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "RMSNormalization",
    "Reshape",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Gather",
    "Where",
    "Cast",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "Max",
    "Min",
    "Equal",
    "Less",
    "Greater",
    "Clip",
    "Flatten",
    "Shape",
    "ConstantOfShape",
    "Range",
    "Trilu",
    "CumSum",
    "Einsum",
    "SoftmaxCrossEntropyLoss",
    "Attention",
    "Conv",
    "MaxPool",
    "AveragePool",
    "GlobalMaxPool",
    "GlobalAveragePool",
    "BatchNormalization",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ArgMax",
    "ArgMin",
];

/// Target-op cases that cannot pass, with the reason: `(pattern, reason)`, where the
/// pattern is a substring of the case name (an exception only excuses a case that does
/// not pass; passing cases are counted as passes).
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[
    (
        "maxpool_with_argmax",
        "MaxPool's second output (the argmax indices) is not imported",
    ),
    (
        "batchnorm_epsilon_training_mode",
        "BatchNormalization in training mode (batch statistics, running-mean outputs) is not imported",
    ),
    (
        "batchnorm_example_training_mode",
        "BatchNormalization in training mode (batch statistics, running-mean outputs) is not imported",
    ),
    // The issue asks for Cast between float and integer types. These cases cast between
    // floats, to or from a float format the IR has no dtype for, so the result cannot
    // be represented (holding them in a wider float would give the wrong dtype and skip
    // their rounding, saturation and NaN rules).
    (
        "FLOAT8E4M3FNUZ",
        "float<->float cast: the IR has no float8 e4m3fnuz dtype",
    ),
    (
        "FLOAT8E5M2",
        "float<->float cast: the IR has no float8 e5m2 (or e5m2fnuz) dtype",
    ),
    (
        "FLOAT4E2M1",
        "float<->float cast: the IR has no 4-bit float (e2m1) dtype",
    ),
    (
        "FLOAT8E8M0",
        "float<->float cast: the IR has no float8 e8m0 (power-of-two scale) dtype",
    ),
];

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;
/// Half-precision outputs: 4 ulps of f16 (2^-11 each, relative), since the reference
/// and the interpreter round intermediate results at different steps.
const RTOL_F16: f64 = 4.0 / 2048.0;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

fn data_dir() -> PathBuf {
    match std::env::var_os("SMELT_ONNX_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onnx-testdata"),
    }
}

fn to_tensor(c: Const) -> Tensor {
    let data = match c.data {
        ConstData::Float(v) => Data::Float(v),
        ConstData::Int(v) => Data::Int(v),
        ConstData::Bool(v) => Data::Bool(v),
    };
    Tensor {
        dtype: c.dtype,
        shape: c.shape,
        data,
    }
}

/// `input_0.pb`, `input_1.pb`, ... in index order.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let index = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((index, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

fn read_pb(path: &Path) -> Result<Const, Outcome> {
    let bytes = std::fs::read(path).map_err(|e| Outcome::Fail(format!("{e}")))?;
    onnx::parse_tensor(&bytes)
        .map(|(_, c)| c)
        .map_err(|e| match e.kind {
            ErrorKind::Unsupported => Outcome::Unsupported(format!("test data: {}", e.message)),
            _ => Outcome::Fail(e.message),
        })
}

fn close(got: f64, want: f64, rtol: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= ATOL + rtol * want.abs()
}

fn compare(name: &str, got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype != want.dtype || got.shape != want.shape {
        return Err(format!(
            "output '{name}': got {}, expected {}",
            got.type_string(),
            want.type_string()
        ));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let exact = !want.dtype.is_float();
    let rtol = if want.dtype == DType::F16 {
        RTOL_F16
    } else {
        RTOL
    };
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact { a == b } else { close(a, b, rtol) };
        if !ok {
            return Err(format!(
                "output '{name}' element {i}: got {a}, expected {b}"
            ));
        }
    }
    Ok(())
}

/// Imports and runs one case directory (`model.onnx`, `test_data_set_*`).
fn run_case(dir: &Path) -> Outcome {
    let bytes = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(format!("cannot read model: {e}")),
    };
    let model = match onnx::parse_model(&bytes) {
        Ok(m) => m,
        Err(e) => return Outcome::Fail(e.message),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Unsupported("no test data sets".into());
    }
    for set in sets {
        if let Err(outcome) = run_set(&model, &set) {
            return outcome;
        }
    }
    Outcome::Pass
}

fn run_set(model: &onnx::proto::ModelProto, set: &Path) -> Result<(), Outcome> {
    let graph = model
        .graph
        .as_ref()
        .ok_or(Outcome::Fail("no graph".into()))?;
    let initializers: Vec<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let input_names: Vec<String> = graph
        .input
        .iter()
        .filter_map(|i| i.name.clone())
        .filter(|n| !initializers.contains(&n.as_str()))
        .collect();
    let mut values = HashMap::new();
    for (name, path) in input_names.iter().zip(numbered(set, "input_")) {
        values.insert(name.clone(), read_pb(&path)?);
    }
    let expected = numbered(set, "output_")
        .iter()
        .map(|p| read_pb(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Every input's value is offered for import-time use (shape operands).
    let options = ImportOptions {
        input_values: values.clone(),
    };
    let imported = onnx::import(model, &options).map_err(|e| match e.kind {
        ErrorKind::Unsupported => Outcome::Unsupported(e.message),
        _ => Outcome::Fail(e.message),
    })?;
    let mut feeds = HashMap::new();
    for (onnx_name, id) in &imported.inputs {
        let value = values
            .get(onnx_name)
            .ok_or_else(|| Outcome::Fail(format!("no test data for input '{onnx_name}'")))?;
        feeds.insert(
            imported.graph.value(*id).name.clone(),
            to_tensor(value.clone()),
        );
    }
    let outputs = interp::run(&imported.graph, &feeds, Precision::F32)
        .map_err(|e| Outcome::Fail(format!("run: {e}")))?;
    for (((name, _), got), want) in imported.outputs.iter().zip(&outputs).zip(expected) {
        compare(name, got, &to_tensor(want)).map_err(Outcome::Fail)?;
    }
    Ok(())
}

/// The op a node case tests: its node's op type (the last node for multi-node cases).
fn case_op(dir: &Path) -> String {
    std::fs::read(dir.join("model.onnx"))
        .ok()
        .and_then(|b| onnx::parse_model(&b).ok())
        .and_then(|m| m.graph)
        .and_then(|g| g.node.last().and_then(|n| n.op_type.clone()))
        .unwrap_or_else(|| "?".into())
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    v
}

fn run_guarded(dir: &Path) -> Outcome {
    std::panic::catch_unwind(|| run_case(dir)).unwrap_or_else(|_| Outcome::Fail("panicked".into()))
}

#[derive(Default, Clone, Copy)]
struct Tally {
    pass: usize,
    fail: usize,
    unsupported: usize,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail(_) => self.fail += 1,
            Outcome::Unsupported(_) => self.unsupported += 1,
        }
    }
}

fn known_exception(case: &str) -> Option<&'static str> {
    KNOWN_EXCEPTIONS
        .iter()
        .find_map(|(pattern, why)| case.contains(pattern).then_some(*why))
}

#[test]
fn onnx_backend_conformance() {
    let root = data_dir();
    let node_dir = root.join("node");
    if !node_dir.is_dir() {
        let message = format!(
            "ONNX test data not found in {} (run scripts/fetch-onnx-testdata.sh, or set SMELT_ONNX_TESTDATA)",
            root.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("skipping: {message}");
        return;
    }
    // Panics inside cases are caught and reported; keep their messages off the output.
    std::panic::set_hook(Box::new(|_| {}));
    let mut per_op: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut all, mut target) = (Tally::default(), Tally::default());
    let mut target_problems = Vec::new();
    for dir in cases(&node_dir) {
        let case = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let op = case_op(&dir);
        let outcome = run_guarded(&dir);
        if let Outcome::Fail(why) = &outcome {
            println!("fails: {case} [{op}]: {why}");
        }
        all.add(&outcome);
        per_op.entry(op.clone()).or_default().add(&outcome);
        let is_target = TARGET_OPS.contains(&op.as_str()) && !case.contains("_expanded");
        if is_target {
            target.add(&outcome);
            if outcome != Outcome::Pass && known_exception(&case).is_none() {
                target_problems.push(format!("{case} [{op}]: {outcome:?}"));
            }
        }
    }
    let _ = std::panic::take_hook();
    println!("{:<28} {:>5} {:>5} {:>5}", "op", "pass", "fail", "unsup");
    for (op, t) in &per_op {
        println!("{op:<28} {:>5} {:>5} {:>5}", t.pass, t.fail, t.unsupported);
    }
    let show = |label: &str, t: Tally| {
        println!(
            "{label}: {} passed, {} failed, {} unsupported",
            t.pass, t.fail, t.unsupported
        )
    };
    show("node cases (target ops)", target);
    show("node cases (all)", all);
    for suite in ["simple", "pytorch-converted", "pytorch-operator"] {
        let mut t = Tally::default();
        for dir in cases(&root.join(suite)) {
            t.add(&run_guarded(&dir));
        }
        show(&format!("{suite} models"), t);
    }
    for dir in cases(&node_dir) {
        let case = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(why) = known_exception(&case) {
            if TARGET_OPS.contains(&case_op(&dir).as_str()) && !case.contains("_expanded") {
                println!("known exception: {case}: {why}");
            }
        }
    }
    for p in &target_problems {
        println!("TARGET CASE NOT PASSING: {p}");
    }
    assert!(
        target_problems.is_empty(),
        "{} target-op cases do not pass (listed above)",
        target_problems.len()
    );
}
