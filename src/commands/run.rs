//! `smelt run`: run a model on given inputs.

use super::{
    compile_cpu, load_compiled, load_model, load_pretrained, prepare_for_gpu, CacheArgs,
    MemoryArgs, OptArgs,
};
use smelt_compiler::gpu::GpuTarget;
use smelt_compiler::ir::{DType, Def};
use smelt_compiler::pipeline::Goal;
use smelt_frontend::llm::Pretrained;
use smelt_frontend::onnx::{Const, ConstData, ImportOptions};
use smelt_frontend::{Diagnostic, Model};
use smelt_runtime::compiled::{is_artefact, Purpose};
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::engine::{Device as EngineDevice, Engine};
use smelt_runtime::io::{read_safetensors, read_tensor_file, write_npy};
use smelt_runtime::train::{Checkpoint, TrainError};
use smelt_runtime::{interp, labels, memory, params, Data, Precision, RunError, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The model file (.smelt, .sir, .json or .onnx), a pretrained model (.gguf file or
    /// Hugging Face directory), or an artefact from `smelt compile`.
    model: PathBuf,
    /// Override a config constant of a .smelt model: NAME=VALUE. Repeat for each.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// An input or parameter value: NAME=FILE (.npy, .safetensors, or an ONNX TensorProto .pb). Repeat for each.
    /// An ONNX model is imported with these values, so shapes computed from inputs are known.
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// Parameter values from a safetensors file (tensors named like the parameters).
    /// Parameters not given anywhere are initialised from their declared initialisers.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Write each output as OUTPUT_NAME.npy into this directory (created if missing).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Where to run: `cpu` (f32 kernels, both cores), `interp` (the reference
    /// interpreter, every dtype, `--precision f64` available), `cuda` (an NVIDIA GPU)
    /// or `gpusim` (the GPU kernels simulated on the CPU; slow).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    #[command(flatten)]
    gpu: super::GpuArgs,
    /// Seed for parameter initialisers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Arithmetic precision of f32 values in the interpreter (`--device interp`).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    opt: OptArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Device {
    Cpu,
    Interp,
    Gpusim,
    Cuda,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    F32,
    F64,
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    // Inputs are read before the model: an ONNX model's shapes may depend on their values.
    let mut given: Vec<(String, String, Tensor)> = Vec::new();
    for spec in &args.inputs {
        let (name, file) = spec.split_once('=').ok_or_else(|| {
            Diagnostic::plain(format!("--input expects NAME=FILE, found '{spec}'"))
        })?;
        let t = read_input_file(&PathBuf::from(file), name)?;
        given.push((name.to_string(), file.to_string(), t));
    }
    // A compiled artefact brings its program; a model file is compiled (or found in the
    // compile cache) below.
    let mut feeds: HashMap<String, Tensor> = HashMap::new();
    let mut origin: HashMap<String, String> = HashMap::new();
    let (model, mut program) = if is_artefact(&args.model) {
        let (model, program) = load_run_artefact(&args)?;
        (model, Some(program))
    } else if Pretrained::is_pretrained(&args.model) {
        let (model, weights) = load_pretrained(&args.model, &args.sets)?;
        for w in weights {
            let values = w.values().into_iter().map(f64::from).collect();
            origin.insert(w.name.clone(), model.path.clone());
            feeds.insert(w.name, Tensor::from_f64(DType::F32, w.shape, values));
        }
        (model, None)
    } else {
        (load_with_inputs(&args.model, &args.sets, &given)?, None)
    };
    let graph = &model.graph;
    if let Some(w) = &args.weights {
        let shown = w.display().to_string();
        let is_param = |n: &str| {
            matches!(
                graph.find(n).map(|id| &graph.value(id).def),
                Some(Def::Param(_))
            )
        };
        let tensors: Vec<(String, Tensor)> = match Checkpoint::load(w) {
            // A training checkpoint also holds optimiser state: take the parameters only,
            // and all of them.
            Ok(ckpt) => {
                if let Some(id) = graph
                    .params()
                    .find(|id| !ckpt.tensors.contains_key(&graph.value(*id).name))
                {
                    let name = &graph.value(id).name;
                    return Err(Diagnostic::in_file(
                        &shown,
                        format!("the checkpoint has no tensor for parameter '{name}'"),
                    ));
                }
                ckpt.tensors
                    .into_iter()
                    .filter(|(n, _)| is_param(n))
                    .collect()
            }
            // A plain safetensors file of parameters.
            Err(TrainError::NotACheckpoint(_)) => {
                read_safetensors(w).map_err(|e| Diagnostic::in_file(&e.path, e.message))?
            }
            // A damaged checkpoint is an error, not a file to read some other way.
            Err(e) => return Err(Diagnostic::plain(e.to_string())),
        };
        for (name, t) in tensors {
            if !is_param(&name) {
                return Err(Diagnostic::in_file(
                    &shown,
                    format!("holds tensor '{name}', but the model has no parameter of that name"),
                ));
            }
            origin.insert(name.clone(), shown.clone());
            feeds.insert(name, t);
        }
    }
    for (name, file, t) in given {
        if graph.find(&name).is_none() {
            let known: Vec<String> = graph
                .inputs()
                .map(|id| graph.value(id).name.clone())
                .collect();
            return Err(Diagnostic::plain(format!(
                "--input {name}: the model has no input or parameter '{name}' (inputs: {})",
                known.join(", ")
            )));
        }
        origin.insert(name.clone(), file);
        feeds.insert(name, t);
    }
    // Size everything before the parameters and the run allocate anything.
    let held = |n: &str| {
        graph
            .find(n)
            .is_some_and(|id| matches!(graph.value(id).def, Def::Param(_) | Def::State(_)))
    };
    // Static sizes first (parameters), so that a missing input is not reported instead.
    // The CPU backend's intermediates are sized by its memory plan once it is compiled;
    // the other devices count every value.
    let limit = args.memory.limit();
    let counted = match args.device {
        Device::Cpu => memory::Held::Arguments,
        _ => memory::Held::Everything,
    };
    let bindings = memory::check(graph, &Default::default(), limit, counted)
        .map_err(RunError::from)
        .and_then(|()| interp::bind_shapes_except(graph, &feeds, &held))
        .and_then(|b| {
            memory::check(graph, &b, limit, counted)?;
            Ok(b)
        })
        .and_then(|b| {
            labels::check_class_labels(graph, &feeds)?;
            Ok(b)
        })
        .map_err(|e| run_error(&model, &origin, e))?;
    for (name, t) in params::init_params(graph, args.seed) {
        feeds.entry(name).or_insert(t);
    }
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::F64 => Precision::F64,
    };
    let outputs = match args.device {
        Device::Interp => interp::run(graph, &feeds, precision),
        Device::Cpu => {
            let program = match program.take() {
                Some(p) => p,
                None => compile_cpu(graph, Purpose::Run, &args.opt, &args.cache)?.program,
            };
            let plan = program.memory_plan(&bindings);
            memory::check_planned(&program.schedule().graph, &plan, &bindings, limit)
                .map_err(|e| run_error(&model, &origin, e.into()))?;
            program.run(&feeds).map(|e| e.outputs)
        }
        Device::Gpusim | Device::Cuda => {
            let device = match args.device {
                Device::Cuda => EngineDevice::Cuda(args.gpu.options()),
                _ => EngineDevice::GpuSim(args.gpu.options()),
            };
            let options = args.gpu.options();
            let target =
                GpuTarget::by_name(options.target).map_err(|e| Diagnostic::plain(e.to_string()))?;
            let graph = prepare_for_gpu(graph, &Goal::Run, &target, &args.opt)?;
            let engine =
                Engine::new(&graph, device).map_err(|e| Diagnostic::plain(e.to_string()))?;
            engine.run(&feeds).map(|e| e.outputs)
        }
    }
    .map_err(|e| run_error(&model, &origin, e))?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Diagnostic::in_file(
                &dir.display().to_string(),
                format!("cannot create directory: {e}"),
            )
        })?;
    }
    for (&id, t) in graph.outputs.iter().zip(&outputs) {
        let name = &graph.value(id).name;
        println!("{name}: {}", summary(t));
        if let Some(dir) = &args.output_dir {
            let path = dir.join(format!("{name}.npy"));
            write_npy(&path, t).map_err(|e| Diagnostic::in_file(&e.path, e.message))?;
        }
    }
    Ok(())
}

/// Loads a compiled artefact for `run`: it must be compiled without `--train`, and
/// settings fixed at compile time cannot be given again.
fn load_run_artefact(args: &Args) -> Result<(Model, CpuProgram), Diagnostic> {
    let shown = args.model.display().to_string();
    if !args.sets.is_empty() {
        return Err(Diagnostic::in_file(
            &shown,
            "--set applies when compiling; this is a compiled artefact",
        ));
    }
    if matches!(args.device, Device::Interp) {
        return Err(Diagnostic::in_file(
            &shown,
            "a compiled artefact runs on --device cpu; give the model file to use the interpreter",
        ));
    }
    let compiled = load_compiled(&args.model)?;
    if compiled.purpose != Purpose::Run {
        return Err(Diagnostic::in_file(
            &shown,
            "this artefact holds a training step (compiled with --train); use smelt train",
        ));
    }
    let model = Model {
        graph: compiled.forward,
        path: shown,
        source: None,
    };
    Ok((model, compiled.program))
}

/// Loads the model. An ONNX model is imported with the given input values, so that
/// shapes computed from graph inputs (a `Reshape` whose shape is an input) are known.
fn load_with_inputs(
    path: &Path,
    sets: &[String],
    given: &[(String, String, Tensor)],
) -> Result<Model, Diagnostic> {
    let is_onnx = path.extension().and_then(|e| e.to_str()) == Some("onnx");
    // `--set` on an ONNX model is an error that `load_model` reports.
    if !is_onnx || !sets.is_empty() {
        return load_model(path, sets);
    }
    let input_values = given
        .iter()
        .map(|(name, _, t)| (name.clone(), to_const(t)))
        .collect();
    smelt_frontend::load_onnx(path, &ImportOptions { input_values }).map_err(|e| e.0)
}

/// A runtime tensor as an ONNX importer constant.
fn to_const(t: &Tensor) -> Const {
    let data = match &t.data {
        Data::Float(v) => ConstData::Float(v.clone()),
        Data::Int(v) => ConstData::Int(v.clone()),
        Data::Bool(v) => ConstData::Bool(v.clone()),
    };
    Const {
        dtype: t.dtype,
        shape: t.shape.clone(),
        data,
    }
}

/// Reads an input tensor: ONNX `TensorProto` files (`.pb`) here, others by the runtime.
fn read_input_file(path: &Path, name: &str) -> Result<Tensor, Diagnostic> {
    if path.extension().and_then(|e| e.to_str()) != Some("pb") {
        return read_tensor_file(path, name).map_err(|e| Diagnostic::in_file(&e.path, e.message));
    }
    let shown = path.display().to_string();
    let bytes = smelt_compiler::input::read_limited(
        path,
        smelt_compiler::input::PROTOBUF_LIMIT,
        "ONNX tensor file",
    )
    .map_err(|e| Diagnostic::in_file(&shown, e.to_string()))?;
    let (_, c) = smelt_frontend::onnx::parse_tensor(&bytes)
        .map_err(|e| Diagnostic::in_file(&shown, e.message))?;
    let data = match c.data {
        ConstData::Float(v) => Data::Float(v),
        ConstData::Int(v) => Data::Int(v),
        ConstData::Bool(v) => Data::Bool(v),
    };
    Ok(Tensor {
        dtype: c.dtype,
        shape: c.shape,
        data,
    })
}

/// Points run errors at the model line that declares the value, naming the given file.
fn run_error(model: &Model, origin: &HashMap<String, String>, e: RunError) -> Diagnostic {
    match &e {
        RunError::Missing {
            value, kind, name, ..
        } => model.diagnostic_at(
            *value,
            format!(
                "{e}; give it with --input {name}=FILE{}",
                if *kind == "param" {
                    " or --weights"
                } else {
                    ""
                }
            ),
        ),
        RunError::Mismatch { value, name, .. } => {
            let from = origin
                .get(name)
                .map(|f| format!(" (from {f})"))
                .unwrap_or_default();
            model.diagnostic_at(*value, format!("{e}{from}"))
        }
        RunError::Eval { value, .. } => model.diagnostic_at(*value, e.to_string()),
        RunError::Unknown(_) | RunError::Unbound(_) | RunError::Size(_) | RunError::Memory(_) => {
            Diagnostic::plain(e.to_string())
        }
    }
}

/// `f32[2, 10] min -1.2 mean 0.01 max 1.9`, or the value of a scalar.
fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    if v.len() == 1 {
        return format!("{} = {}", t.type_string(), v[0]);
    }
    if v.is_empty() {
        return format!("{} (empty)", t.type_string());
    }
    // NaNs are counted apart: min and max would skip them, and the mean would be NaN.
    let numbers: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    let nans = v.len() - numbers.len();
    if numbers.is_empty() {
        return format!("{} all {nans} values NaN", t.type_string());
    }
    let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = numbers.iter().sum::<f64>() / numbers.len() as f64;
    let nan_note = if nans > 0 {
        format!(" ({nans} NaN)")
    } else {
        String::new()
    };
    format!(
        "{} min {min:.6} mean {mean:.6} max {max:.6}{nan_note}",
        t.type_string()
    )
}
