//! Runs a graph's GPU kernels on the CPU, in the kernel-IR evaluator, with the grids
//! the SM plan gives them: the GPU path's logic, checkable on any machine
//! (`smelt run --device gpusim`). Slow by design: every thread is interpreted.

use crate::interp::{bind_shapes, Execution, RunError};
use crate::tensor::{Data, Tensor};
use smelt_compiler::gpu::eval::Data as DeviceData;
use smelt_compiler::gpu::kir::Elem;
use smelt_compiler::gpu::plan::planned_grid;
use smelt_compiler::gpu::program::Contents;
use smelt_compiler::gpu::{GpuProgram, GpuTarget};
use smelt_compiler::ir::{DType, Graph, ValueId};
use std::collections::HashMap;

/// A host tensor as device memory of `elem`.
pub fn to_device(t: &Tensor, elem: Elem) -> DeviceData {
    let n = t.numel();
    let f = |i: usize| t.data.get_f64(i);
    match (&t.data, elem) {
        (Data::Int(v), Elem::I64) => DeviceData::I64(v.clone()),
        (Data::Int(v), Elem::I32) => DeviceData::I32(v.iter().map(|&x| x as i32).collect()),
        (Data::Bool(v), Elem::U8) => DeviceData::U8(v.iter().map(|&b| u8::from(b)).collect()),
        (_, Elem::F32) => DeviceData::F32((0..n).map(|i| f(i) as f32).collect()),
        (_, Elem::F16) => DeviceData::F16(
            (0..n)
                .map(|i| half::f16::from_f64(f(i)).to_bits())
                .collect(),
        ),
        (_, Elem::BF16) => DeviceData::BF16(
            (0..n)
                .map(|i| half::bf16::from_f64(f(i)).to_bits())
                .collect(),
        ),
        (_, Elem::I64) => DeviceData::I64((0..n).map(|i| f(i) as i64).collect()),
        (_, Elem::I32) => DeviceData::I32((0..n).map(|i| f(i) as i32).collect()),
        (_, Elem::U8) => DeviceData::U8((0..n).map(|i| u8::from(f(i) != 0.0)).collect()),
    }
}

/// Device memory back as a host tensor of `dtype` and `shape`.
pub fn to_host(d: &DeviceData, dtype: DType, shape: Vec<usize>) -> Tensor {
    let n = d.len();
    if dtype.is_float() {
        Tensor::from_f64(dtype, shape, (0..n).map(|i| d.get_f64(i)).collect())
    } else if dtype.is_int() {
        let v = match d {
            DeviceData::I64(v) => v.clone(),
            DeviceData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            other => (0..n).map(|i| other.get_f64(i) as i64).collect(),
        };
        Tensor::from_i64(dtype, shape, v)
    } else {
        Tensor {
            dtype,
            shape,
            data: Data::Bool((0..n).map(|i| d.get_f64(i) != 0.0).collect()),
        }
    }
}

/// Lowers `graph` for `target` and runs it in the evaluator on `feeds`.
pub fn execute(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    target: &GpuTarget,
    comm_sms: u32,
) -> Result<Execution, RunError> {
    let bindings = bind_shapes(graph, feeds)?;
    let fail = |message: String| RunError::Eval {
        value: ValueId(0),
        name: graph.name.clone(),
        message,
    };
    let program = GpuProgram::for_arch(
        &smelt_compiler::gpu::schedule(graph),
        &bindings,
        target.arch,
    )
    .map_err(|e| fail(e.to_string()))?;
    let g = &program.graph;
    let given: HashMap<ValueId, DeviceData> = program
        .buffers
        .iter()
        .filter(|b| b.contents == Contents::Given)
        .map(|b| (b.value, to_device(&feeds[&g.value(b.value).name], b.elem)))
        .collect();
    let mem = program
        .simulate(&given, |call| planned_grid(target, comm_sms, call))
        .map_err(|e| fail(e.to_string()))?;
    let host = |v: ValueId| to_host(&mem[&v], g.ty(v).dtype, program.shapes[v.index()].clone());
    Ok(Execution {
        outputs: g.outputs.iter().map(|&o| host(o)).collect(),
        updates: g
            .updates
            .iter()
            .map(|&(target, value)| (g.value(target).name.clone(), host(value)))
            .collect(),
    })
}
