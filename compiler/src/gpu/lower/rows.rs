//! Fused row kernels for the composites that normalise along the last axis: softmax,
//! log_softmax, layer_norm, rms_norm, and cross_entropy (whose rows then meet in one
//! atomic sum, in no fixed order), and their gradients (`softmax_grad`, ...,
//! `cross_entropy_grad`: the adjoint of the first operand). A warp takes a row: each pass strides the
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
/// the last axis (or is the gradient of one that does), and its operands are floats
/// the GPU stores (and integer labels).
pub fn supported(c: &Composite, types: &[&TensorType]) -> bool {
    let stored_float = |t: &&TensorType| {
        elem_of(t.dtype).is_ok_and(|e| matches!(e, Elem::F32 | Elem::F16 | Elem::BF16))
    };
    let labels = || types.get(1).is_some_and(|t| elem_of(t.dtype).is_ok());
    let Some(first) = types.first() else {
        return false;
    };
    if !c.is_row_op_along_last(first) {
        return false;
    }
    match c {
        // The loss is summed with f32 atomics.
        Composite::CrossEntropy => first.dtype == crate::ir::DType::F32 && labels(),
        Composite::CrossEntropyGrad => {
            stored_float(first) && labels() && types.get(2).is_some_and(stored_float)
        }
        _ => types.iter().all(stored_float),
    }
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
        // Combines `f(at, j)` over the row with each `(op, init)`, in every lane and in one
        // pass (`at` is the element's index, `j` its column).
        let row_sums =
            |b: &mut KernelBuilder,
             ops: &[(BinOp, f32)],
             f: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Vec<Reg>| {
                let accs: Vec<Reg> = ops.iter().map(|&(_, init)| b.mov(init)).collect();
                b.for_range(lane, width, 32, |b, j| {
                    let at = b.add(base, j);
                    for ((&(op, _), &acc), y) in ops.iter().zip(&accs).zip(f(b, at, j)) {
                        b.update(op, acc, y);
                    }
                });
                for (&(op, _), &acc) in ops.iter().zip(&accs) {
                    b.warp_combine(op, acc);
                }
                accs
            };
        let row_sum = |b: &mut KernelBuilder,
                       op: BinOp,
                       init: f32,
                       f: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Reg| {
            row_sums(b, &[(op, init)], &|b, at, j| vec![f(b, at, j)])[0]
        };
        // Writes `f(at, j)` over the row.
        let write = |b: &mut KernelBuilder, f: &dyn Fn(&mut KernelBuilder, Reg, Reg) -> Reg| {
            b.for_range(lane, width, 32, |b, j| {
                let at = b.add(base, j);
                let y = f(b, at, j);
                b.st(out, at, y);
            });
        };
        let x = |b: &mut KernelBuilder, at: Reg| b.ld(ins[0], at);
        // The row's maximum and `Σ exp(x − max)` (softmax's statistics).
        let exp_stats = |b: &mut KernelBuilder| {
            let max = row_sum(b, BinOp::Max, f32::NEG_INFINITY, &|b, at, _| x(b, at));
            let sum = row_sum(b, BinOp::Add, 0.0, &|b, at, _| {
                let x = x(b, at);
                let d = b.bin(BinOp::Sub, x, max);
                math::exp(b, d)
            });
            (max, sum)
        };
        // The row's mean (0 for rms_norm) and `rsqrt(mean (x − mean)² + eps)`.
        let norm_stats = |b: &mut KernelBuilder, layer: bool, eps: f64| {
            let mean = if layer {
                let s = row_sum(b, BinOp::Add, 0.0, &|b, at, _| x(b, at));
                b.div(s, len as f32)
            } else {
                b.mov(0.0f32)
            };
            let sq = row_sum(b, BinOp::Add, 0.0, &|b, at, _| {
                let x = x(b, at);
                let d = b.bin(BinOp::Sub, x, mean);
                b.mul(d, d)
            });
            let ms = b.div(sq, len as f32);
            let ms = b.add(ms, eps as f32);
            (mean, b.un(UnOp::Rsqrt, ms))
        };
        // This row's label, and whether it names a class.
        let label = |b: &mut KernelBuilder| {
            let label = b.ld(ins[1], row);
            let label = b.cvt(crate::gpu::kir::Ty::I32, label);
            let low = b.setp(Cmp::Ge, label, 0);
            let high = b.setp(Cmp::Lt, label, width);
            (label, b.bin(BinOp::And, low, high))
        };
        match c {
            Composite::Softmax { .. } | Composite::LogSoftmax { .. } => {
                let (max, sum) = exp_stats(b);
                if matches!(c, Composite::Softmax { .. }) {
                    write(b, &|b, at, _| {
                        let x = x(b, at);
                        let d = b.bin(BinOp::Sub, x, max);
                        let e = math::exp(b, d);
                        b.div(e, sum)
                    });
                } else {
                    let log_sum = math::unary(b, crate::ir::ops::UnaryOp::Log, sum);
                    write(b, &|b, at, _| {
                        let x = x(b, at);
                        let d = b.bin(BinOp::Sub, x, max);
                        b.bin(BinOp::Sub, d, log_sum)
                    });
                }
            }
            Composite::LayerNorm { eps } | Composite::RmsNorm { eps } => {
                let layer = matches!(c, Composite::LayerNorm { .. });
                let (mean, r) = norm_stats(b, layer, *eps);
                write(b, &|b, at, j| {
                    let x = x(b, at);
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
                let (max, sum) = exp_stats(b);
                let log_sum = math::unary(b, crate::ir::ops::UnaryOp::Log, sum);
                // -log p(label) / rows, from lane 0; a label outside the classes picks
                // nothing (the decomposition's one-hot is all zeros there).
                let (label, valid) = label(b);
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
            // Gradients: `ins` are the forward operands the rule needs, then the adjoint.
            Composite::SoftmaxGrad { .. } => {
                // y ∘ (dy − Σ dy∘y)
                let s = row_sum(b, BinOp::Add, 0.0, &|b, at, _| {
                    let (y, dy) = (b.ld(ins[0], at), b.ld(ins[1], at));
                    b.mul(y, dy)
                });
                write(b, &|b, at, _| {
                    let (y, dy) = (b.ld(ins[0], at), b.ld(ins[1], at));
                    let d = b.bin(BinOp::Sub, dy, s);
                    b.mul(y, d)
                });
            }
            Composite::LogSoftmaxGrad { .. } => {
                // dy − exp(y) Σ dy
                let s = row_sum(b, BinOp::Add, 0.0, &|b, at, _| b.ld(ins[1], at));
                write(b, &|b, at, _| {
                    let (y, dy) = (b.ld(ins[0], at), b.ld(ins[1], at));
                    let p = math::exp(b, y);
                    let ps = b.mul(p, s);
                    b.bin(BinOp::Sub, dy, ps)
                });
            }
            Composite::LayerNormGrad { eps } | Composite::RmsNormGrad { eps } => {
                // r (ĝ − x̂ mean(ĝ∘x̂) [− mean ĝ]), ĝ = dy∘gamma, x̂ = (x − mean) r
                let layer = matches!(c, Composite::LayerNormGrad { .. });
                let (mean, r) = norm_stats(b, layer, *eps);
                let ghat_xhat = |b: &mut KernelBuilder, at: Reg, j: Reg| {
                    let (x, gamma, dy) = (b.ld(ins[0], at), b.ld(ins[1], j), b.ld(ins[2], at));
                    let d = b.bin(BinOp::Sub, x, mean);
                    (b.mul(dy, gamma), b.mul(d, r))
                };
                let sums = row_sums(b, &[(BinOp::Add, 0.0), (BinOp::Add, 0.0)], &|b, at, j| {
                    let (ghat, xhat) = ghat_xhat(b, at, j);
                    vec![ghat, b.mul(ghat, xhat)]
                });
                let mg = if layer {
                    b.div(sums[0], len as f32)
                } else {
                    b.mov(0.0f32)
                };
                let mgx = b.div(sums[1], len as f32);
                write(b, &|b, at, j| {
                    let (ghat, xhat) = ghat_xhat(b, at, j);
                    let along = b.mul(xhat, mgx);
                    let d = b.bin(BinOp::Sub, ghat, along);
                    let d = b.bin(BinOp::Sub, d, mg);
                    b.mul(r, d)
                });
            }
            Composite::CrossEntropyGrad => {
                // (softmax · valid − onehot) · dloss / rows
                let (max, sum) = exp_stats(b);
                let (label, valid) = label(b);
                let weight = b.selp(valid, 1.0f32, 0.0f32);
                let weight = b.div(weight, sum);
                let dloss = b.ld(ins[2], 0);
                let share = b.div(dloss, rows.max(1) as f32);
                write(b, &|b, at, j| {
                    let x = x(b, at);
                    let d = b.bin(BinOp::Sub, x, max);
                    let e = math::exp(b, d);
                    let p = b.mul(e, weight);
                    let hit = b.setp(Cmp::Eq, j, label);
                    let onehot = b.selp(hit, 1.0f32, 0.0f32);
                    let diff = b.bin(BinOp::Sub, p, onehot);
                    b.mul(diff, share)
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
