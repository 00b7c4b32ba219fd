//! Lowering a schedule to GPU kernels: each step becomes one or more [`KernelCall`]s.
//!
//! Shapes are concrete here (symbols bound), so every size is an immediate and index
//! arithmetic folds in ptxas. Every kernel walks its work with a grid-stride loop, so
//! it is correct for any grid size: the SM plan may cap a compute kernel's grid at the
//! compute SMs' share without the kernel knowing.

pub mod attention;
mod attention_bwd;
mod collective;
mod matmul;
mod movement;
mod pointwise;
mod reduce;
mod routing;
pub mod rows;
mod wgmma_matmul;

use super::build::KernelBuilder;
use super::kir::{Elem, Kernel, Operand, Reg, Ty};
use super::target::Arch;
use crate::ir::ops::Op;
use crate::ir::{DType, Def, Graph, ValueId};
use crate::schedule::{MatMulOperand, Step};

/// Whether a kernel computes or communicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs on the compute SMs.
    Compute,
    /// Runs on the SMs reserved for communication.
    Comm,
}

/// One launch of a generated kernel.
#[derive(Clone, Debug)]
pub struct KernelCall {
    /// The kernel.
    pub kernel: Kernel,
    /// The graph value bound to each buffer parameter.
    pub args: Vec<ValueId>,
    /// Blocks needed to give every work item its own threads (the plan may launch
    /// fewer: the kernels loop).
    pub work_blocks: u32,
    /// Compute or communication.
    pub role: Role,
    /// Floating-point operations it performs (for the cost model).
    pub flops: f64,
}

/// Concrete shapes of a graph's values.
pub type Shapes = Vec<Vec<usize>>;

/// The memory element type of a dtype on the GPU.
pub(crate) fn elem_of(dt: DType) -> Result<Elem, String> {
    Ok(match dt {
        DType::F32 => Elem::F32,
        DType::F16 => Elem::F16,
        DType::BF16 => Elem::BF16,
        DType::I32 => Elem::I32,
        DType::I64 => Elem::I64,
        DType::Bool => Elem::U8,
        DType::F64 | DType::F8E4M3 => {
            return Err(format!(
                "{dt} tensors are not supported by the PTX backend yet (use f32, bf16 or f16)"
            ))
        }
    })
}

/// The register type values of a dtype are computed in.
pub(crate) fn reg_ty(dt: DType) -> Ty {
    match dt {
        DType::I32 => Ty::I32,
        DType::I64 => Ty::I64,
        DType::Bool => Ty::Pred,
        _ => Ty::F32,
    }
}

/// Lowers step `index` of a schedule of `g` (shapes in `shapes`) to kernel calls.
/// `arch` is the newest architecture the kernels may use (`Sm90a` allows wgmma).
pub(crate) fn lower_step(
    g: &Graph,
    shapes: &Shapes,
    index: usize,
    step: &Step,
    arch: Arch,
) -> Result<Vec<KernelCall>, String> {
    let out = step.output();
    let name = format!("k{index}_{}", identifier(&g.value(out).name));
    let numel = |v: ValueId| shapes[v.index()].iter().product::<usize>();
    for v in step_values(g, step) {
        if numel(v) > i32::MAX as usize / 4 {
            return Err(format!(
                "%{} has {} elements; GPU kernels index with 32 bits",
                g.value(v).name,
                numel(v)
            ));
        }
        elem_of(g.ty(v).dtype)?;
    }
    match step {
        Step::Pointwise(k) => Ok(vec![pointwise::lower(&name, g, shapes, k)?]),
        Step::MatMul {
            output,
            lhs,
            rhs,
            init: None,
        } => Ok(vec![matmul::lower(
            &name, g, shapes, *output, *lhs, *rhs, arch,
        )?]),
        Step::MatMul { init: Some(_), .. } => {
            Err("additive epilogues are a CPU schedule's (gpu::schedule folds none)".into())
        }
        Step::Library(v) => {
            let Def::Node { op, operands } = &g.value(*v).def else {
                unreachable!("library steps are nodes")
            };
            library(&name, g, shapes, *v, op, operands, arch)
        }
    }
}

fn step_values(g: &Graph, step: &Step) -> Vec<ValueId> {
    let mut values = step.reads(g);
    values.push(step.output());
    values
}

fn library(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    op: &Op,
    operands: &[ValueId],
    arch: Arch,
) -> Result<Vec<KernelCall>, String> {
    let calls = match op {
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => {
            vec![pointwise::lower_single(name, g, shapes, v)?]
        }
        Op::Reduce { op, axes } => vec![reduce::lower(name, g, shapes, v, *op, axes)?],
        Op::MatMul => {
            let plain = |value| MatMulOperand {
                value,
                transposed: false,
            };
            vec![matmul::lower(
                name,
                g,
                shapes,
                v,
                plain(operands[0]),
                plain(operands[1]),
                arch,
            )?]
        }
        Op::Reshape => vec![movement::copy(name, g, shapes, v, operands[0])?],
        Op::Slice {
            axis, start, step, ..
        } => vec![movement::slice(
            name,
            g,
            shapes,
            v,
            operands[0],
            *axis,
            *start,
            *step,
        )?],
        Op::Concat { axis } => vec![movement::concat(name, g, shapes, v, operands, *axis)?],
        Op::Pad {
            axis, low, value, ..
        } => vec![movement::pad(
            name,
            g,
            shapes,
            v,
            operands[0],
            *axis,
            *low,
            *value,
        )?],
        Op::Gather { axis } => vec![movement::gather(name, g, shapes, v, operands, *axis)?],
        Op::ScatterAdd { axis } => movement::scatter_add(name, g, shapes, v, operands, *axis)?,
        Op::Composite(crate::ir::ops::Composite::Attention { causal, scale })
        | Op::Composite(crate::ir::ops::Composite::AttentionGrad {
            part: crate::ir::ops::AttentionPart::Lse,
            causal,
            scale,
        }) => {
            vec![attention::lower(
                name, g, shapes, v, operands, *causal, *scale,
            )?]
        }
        Op::Composite(crate::ir::ops::Composite::AttentionGrad {
            part,
            causal,
            scale,
        }) => vec![attention_bwd::lower(
            name, g, shapes, v, operands, *part, *causal, *scale,
        )?],
        // The row composites and their gradients (`gpu::schedule` keeps only supported ones).
        Op::Composite(c)
            if operands
                .first()
                .is_some_and(|&o| c.is_row_op_along_last(g.ty(o))) =>
        {
            vec![rows::lower(name, g, shapes, v, operands, c)?]
        }
        Op::AllReduce | Op::AllToAll { .. } => {
            vec![collective::loopback(name, g, shapes, v, operands[0])?]
        }
        Op::TopK { .. } => vec![routing::top_k(name, g, shapes, v, operands[0])?],
        Op::GroupedMatMul => {
            // The weight may be read through a transpose folded into the product.
            let w = Step::Library(v).library_operands(g)[1];
            vec![routing::grouped_matmul(
                name,
                g,
                shapes,
                v,
                (operands[0], w, operands[2]),
            )?]
        }
        Op::GroupedMatMulWeightGrad { .. } => {
            vec![routing::grouped_weight_grad(name, g, shapes, v, operands)?]
        }
        // Uploaded with the program's data; no kernel.
        Op::Constant { .. } => Vec::new(),
        other => {
            return Err(format!(
                "'{}' (%{}) has no GPU kernel yet",
                other.name(),
                g.value(v).name
            ))
        }
    };
    Ok(calls)
}

/// A PTX identifier made from a value name.
pub fn identifier(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Threads per block of the elementwise-style kernels.
pub(crate) const BLOCK: u32 = 256;

/// Blocks for `items` work items of `per` threads each.
pub(crate) fn blocks_for(items: usize, per: u32, block: u32) -> u32 {
    let threads = items as u64 * u64::from(per);
    threads.div_ceil(u64::from(block)).clamp(1, i32::MAX as u64) as u32
}

/// Row-major strides.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat element `flat` of `shape`: one register per axis (`None`
/// for axes of size 1, whose index is 0), computed only for `wanted` axes.
pub(crate) fn unflatten(
    b: &mut KernelBuilder,
    flat: Reg,
    shape: &[usize],
    wanted: &[bool],
) -> Vec<Option<Reg>> {
    let s = strides(shape);
    (0..shape.len())
        .map(|a| {
            if shape[a] == 1 || !wanted[a] {
                return None;
            }
            let q = if s[a] == 1 {
                flat
            } else {
                b.div(flat, s[a] as i32)
            };
            Some(if a == 0 { q } else { b.rem(q, shape[a] as i32) })
        })
        .collect()
}

/// `Σ idx[a] · strides[a]` (+ `base`) as an `i32` register or immediate.
pub(crate) fn linear(
    b: &mut KernelBuilder,
    idx: &[Option<Reg>],
    strides: &[usize],
    base: Operand,
) -> Operand {
    let mut acc = base;
    for (i, &s) in idx.iter().zip(strides) {
        let (Some(i), true) = (i, s != 0) else {
            continue;
        };
        let term = if s == 1 { *i } else { b.mul(*i, s as i32) };
        acc = match acc {
            Operand::I32(0) => Operand::Reg(term),
            a => Operand::Reg(b.add(a, term)),
        };
    }
    acc
}

/// Converts a computed value into what a buffer of `elem` stores (bools as 0/1 ints).
pub(crate) fn to_stored(b: &mut KernelBuilder, v: Reg, elem: Elem) -> Reg {
    match (b.ty(v), elem) {
        (Ty::Pred, _) => b.cvt(Ty::I32, v),
        _ => v,
    }
}

/// Converts a loaded element into the register type its dtype computes in.
pub(crate) fn from_loaded(b: &mut KernelBuilder, v: Reg, dt: DType) -> Reg {
    if dt == DType::Bool {
        b.setp(super::kir::Cmp::Ne, v, 0)
    } else {
        v
    }
}
