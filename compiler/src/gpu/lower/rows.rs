//! Fused row kernels for the composites that normalise along the last axis: softmax,
//! log_softmax, layer_norm, rms_norm, and cross_entropy (whose rows then meet in one
//! atomic sum, in no fixed order). A warp takes a row: each pass strides the
//! lanes over the row and meets in a butterfly of shuffles, and the last pass writes
//! the result, so the row statistics never go through memory (the decomposition needs
//! a reduction kernel per statistic and pointwise kernels between them).

use super::{blocks_for, elem_of, KernelCall, Role, Shapes, BLOCK};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Elem, Reg, Special, UnOp};
use crate::gpu::math;
use crate::ir::ops::Composite;
use crate::ir::{Graph, TensorType, ValueId};

/// True if `c` over operands of `types` has a fused row kernel: it normalises along
/// the last axis, and its operands are floats the GPU stores.
pub fn supported(c: &Composite, types: &[&TensorType]) -> bool {
    let along_last = match c {
        Composite::Softmax { axis } | Composite::LogSoftmax { axis } => {
            types.first().is_some_and(|t| *axis + 1 == t.rank())
        }
        Composite::LayerNorm { .. } | Composite::RmsNorm { .. } => true,
        // The loss is summed with f32 atomics.
        Composite::CrossEntropy => {
            return types
                .first()
                .is_some_and(|t| t.dtype == crate::ir::DType::F32)
                && types.get(1).is_some_and(|t| elem_of(t.dtype).is_ok())
        }
        _ => false,
    };
    along_last
        && types.iter().all(|t| {
            elem_of(t.dtype).is_ok_and(|e| matches!(e, Elem::F32 | Elem::F16 | Elem::BF16))
        })
}

pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    operands: &[ValueId],
    c: &Composite,
) -> Result<KernelCall, String> {
    // Rows run along the last axis of the (first) operand.
    let shape = &shapes[operands[0].index()];
    let len = *shape.last().unwrap_or(&1);
    let rows: usize = shape.iter().product::<usize>() / len.max(1);
    let mut b = KernelBuilder::new(name, BLOCK);
    let out_len = shapes[v.index()].iter().product();
    let out = b.param("out", elem_of(g.ty(v).dtype)?, out_len);
    let mut ins = Vec::new();
    for (i, &o) in operands.iter().enumerate() {
        let n = shapes[o.index()].iter().product();
        ins.push(b.param(&format!("in{i}"), elem_of(g.ty(o).dtype)?, n));
    }
    let tid = b.special(Special::Tid);
    let lane = b.rem(tid, 32);
    let width = len as i32;
    b.grid_stride_by(rows, 32, |b, row| {
        let base = b.mul(row, width);
        // `sum over the row of f(x)`, in every lane.
        let row_sum = |b: &mut KernelBuilder,
                       op: BinOp,
                       init: f32,
                       f: &dyn Fn(&mut KernelBuilder, Reg) -> Reg| {
            let acc = b.mov(init);
            b.for_range(lane, width, 32, |b, j| {
                let at = b.add(base, j);
                let x = b.ld(ins[0], at);
                let y = f(b, x);
                b.update(op, acc, y);
            });
            b.warp_combine(op, acc);
            acc
        };
        // Writes `f(x, j)` over the row.
        let write = |b: &mut KernelBuilder, f: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Reg| {
            b.for_range(lane, width, 32, |b, j| {
                let at = b.add(base, j);
                let x = b.ld(ins[0], at);
                let y = f(b, x, j);
                b.st(out, at, y);
            });
        };
        match c {
            Composite::Softmax { .. } | Composite::LogSoftmax { .. } => {
                let max = row_sum(b, BinOp::Max, f32::NEG_INFINITY, &|_, x| x);
                let sum = row_sum(b, BinOp::Add, 0.0, &|b, x| {
                    let d = b.bin(BinOp::Sub, x, max);
                    math::exp(b, d)
                });
                if matches!(c, Composite::Softmax { .. }) {
                    write(b, &|b, x, _| {
                        let d = b.bin(BinOp::Sub, x, max);
                        let e = math::exp(b, d);
                        b.div(e, sum)
                    });
                } else {
                    let log_sum = math::unary(b, crate::ir::ops::UnaryOp::Log, sum);
                    write(b, &|b, x, _| {
                        let d = b.bin(BinOp::Sub, x, max);
                        b.bin(BinOp::Sub, d, log_sum)
                    });
                }
            }
            Composite::LayerNorm { eps } | Composite::RmsNorm { eps } => {
                let layer = matches!(c, Composite::LayerNorm { .. });
                let mean = if layer {
                    let s = row_sum(b, BinOp::Add, 0.0, &|_, x| x);
                    b.div(s, len as f32)
                } else {
                    b.mov(0.0f32)
                };
                let sq = row_sum(b, BinOp::Add, 0.0, &|b, x| {
                    let d = b.bin(BinOp::Sub, x, mean);
                    b.mul(d, d)
                });
                let ms = b.div(sq, len as f32);
                let ms = b.add(ms, *eps as f32);
                let r = b.un(UnOp::Rsqrt, ms);
                write(b, &|b, x, j| {
                    let d = b.bin(BinOp::Sub, x, mean);
                    let n = b.mul(d, r);
                    let gain = b.ld(ins[1], j);
                    let y = b.mul(n, gain);
                    if layer {
                        let bias = b.ld(ins[2], j);
                        b.add(y, bias)
                    } else {
                        y
                    }
                });
            }
            Composite::CrossEntropy => {
                let max = row_sum(b, BinOp::Max, f32::NEG_INFINITY, &|_, x| x);
                let sum = row_sum(b, BinOp::Add, 0.0, &|b, x| {
                    let d = b.bin(BinOp::Sub, x, max);
                    math::exp(b, d)
                });
                let log_sum = math::unary(b, crate::ir::ops::UnaryOp::Log, sum);
                // -log p(label) / rows, from lane 0; a label outside the classes picks
                // nothing (the decomposition's one-hot is all zeros there).
                let label = b.ld(ins[1], row);
                let label = b.cvt(crate::gpu::kir::Ty::I32, label);
                let low = b.setp(Cmp::Ge, label, 0);
                let high = b.setp(Cmp::Lt, label, width);
                let valid = b.bin(BinOp::And, low, high);
                let first = b.setp(Cmp::Eq, lane, 0);
                let pick = b.bin(BinOp::And, valid, first);
                b.if_then(pick, |b| {
                    let at = b.add(base, label);
                    let x = b.ld(ins[0], at);
                    let d = b.bin(BinOp::Sub, x, max);
                    let logp = b.bin(BinOp::Sub, d, log_sum);
                    let share = b.mul(logp, -1.0 / rows.max(1) as f32);
                    b.atom_add(out, 0, share);
                });
            }
            _ => unreachable!("only supported composites are kept whole"),
        }
    });
    Ok(KernelCall {
        kernel: b.finish(),
        args: std::iter::once(v).chain(operands.iter().copied()).collect(),
        work_blocks: blocks_for(rows, 32, BLOCK),
        role: Role::Compute,
        flops: (rows * len * 8) as f64,
    })
}
