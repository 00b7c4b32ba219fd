//! Row reductions (`reduce_sum`, `reduce_max`, `reduce_mean`): the reduced axes form
//! a row per output element. Float rows are reduced by a warp each (lanes stride over
//! the row, then a butterfly of warp shuffles), or, for a few long rows, by a whole
//! block (warp results meet in shared memory behind a barrier). Integer rows, which
//! need exact 64-bit sums that shuffles do not carry, take one thread each.

use super::{
    blocks_for, elem_of, linear, reg_ty, strides, unflatten, KernelCall, Role, Shapes, BLOCK,
};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Operand, Reg, Space, Ty};
use crate::ir::ops::ReduceOp;
use crate::ir::{Graph, ValueId};

/// Rows at most this long, or this many rows, get a warp each; others a block.
const WARP_ROW_MAX: usize = 4096;
const MANY_ROWS: usize = 1024;

/// How a kernel walks one row's elements.
struct RowLayout {
    /// Input shape and strides.
    shape: Vec<usize>,
    strides: Vec<usize>,
    /// Kept axes (in order) and reduced axes.
    kept: Vec<usize>,
    reduced: Vec<usize>,
    /// True if the reduced axes are the trailing ones: row `r` is `r*len .. (r+1)*len`.
    trailing: bool,
    len: usize,
}

impl RowLayout {
    fn new(shape: &[usize], axes: &[usize]) -> RowLayout {
        let kept: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
        let mut reduced = axes.to_vec();
        reduced.sort_unstable();
        let trailing = reduced
            .iter()
            .enumerate()
            .all(|(i, &a)| a == shape.len() - reduced.len() + i);
        RowLayout {
            shape: shape.to_vec(),
            strides: strides(shape),
            len: reduced.iter().map(|&a| shape[a]).product(),
            kept,
            reduced,
            trailing,
        }
    }

    /// Index of row `row`'s first element.
    fn row_base(&self, b: &mut KernelBuilder, row: Reg) -> Operand {
        if self.trailing {
            return b.mul(row, self.len as i32).into();
        }
        self.offset(b, row, &self.kept)
    }

    /// Offset of element `j` of a row from the row's base.
    fn element(&self, b: &mut KernelBuilder, base: Operand, j: Reg) -> Operand {
        if self.trailing {
            return b.add(base, j).into();
        }
        let off = self.offset(b, j, &self.reduced);
        b.add(base, off).into()
    }

    /// `Σ idx_a · stride_a` over `axes`, with `flat` unflattened over those axes' sizes.
    fn offset(&self, b: &mut KernelBuilder, flat: Reg, axes: &[usize]) -> Operand {
        let sub: Vec<usize> = axes.iter().map(|&a| self.shape[a]).collect();
        let idx = unflatten(b, flat, &sub, &vec![true; sub.len()]);
        let s: Vec<usize> = axes.iter().map(|&a| self.strides[a]).collect();
        linear(b, &idx, &s, Operand::I32(0))
    }
}

pub(super) fn lower(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    op: ReduceOp,
    axes: &[usize],
) -> Result<KernelCall, String> {
    let crate::ir::Def::Node { operands, .. } = &g.value(v).def else {
        unreachable!("a reduction is a node")
    };
    let x = operands[0];
    let layout = RowLayout::new(&shapes[x.index()], axes);
    let rows: usize = shapes[v.index()].iter().product();
    let dt = g.ty(v).dtype;
    let mut b = KernelBuilder::new(name, BLOCK);
    let out_elem = elem_of(dt)?;
    let out = b.param("out", out_elem, rows);
    let input = b.param("in", elem_of(g.ty(x).dtype)?, layout.shape.iter().product());
    let ty = reg_ty(dt);
    let blocks = if ty != Ty::F32 {
        integer_rows(&mut b, &layout, rows, op, input, out);
        blocks_for(rows, 1, BLOCK)
    } else if layout.len <= WARP_ROW_MAX || rows >= MANY_ROWS {
        warp_rows(&mut b, &layout, rows, op, input, out);
        blocks_for(rows, 32, BLOCK)
    } else {
        block_rows(&mut b, &layout, rows, op, input, out);
        blocks_for(rows, BLOCK, BLOCK)
    };
    Ok(KernelCall {
        kernel: b.finish(),
        args: vec![v, x],
        work_blocks: blocks,
        role: Role::Compute,
        flops: (rows * layout.len) as f64,
    })
}

fn identity(op: ReduceOp, ty: Ty) -> Operand {
    match (op, ty) {
        (ReduceOp::Max, Ty::F32) => Operand::F32(f32::NEG_INFINITY),
        (ReduceOp::Max, Ty::I32) => Operand::I32(i32::MIN),
        (ReduceOp::Max, _) => Operand::I64(i64::MIN),
        (_, Ty::F32) => Operand::F32(0.0),
        (_, Ty::I32) => Operand::I32(0),
        _ => Operand::I64(0),
    }
}

fn combine(op: ReduceOp) -> BinOp {
    match op {
        ReduceOp::Max => BinOp::Max,
        _ => BinOp::Add,
    }
}

/// Lanes `lane, lane + 32, ...` of the row into `acc`.
#[allow(clippy::too_many_arguments)]
fn accumulate_strided(
    b: &mut KernelBuilder,
    layout: &RowLayout,
    base: Operand,
    first: Reg,
    step: i32,
    op: ReduceOp,
    input: Space,
    acc: Reg,
) {
    b.for_range(first, layout.len as i32, step, |b, j| {
        let at = layout.element(b, base, j);
        let x = b.ld(input, at);
        b.update(combine(op), acc, x);
    });
}

fn finish_value(b: &mut KernelBuilder, layout: &RowLayout, op: ReduceOp, acc: Reg) -> Reg {
    if op == ReduceOp::Mean {
        b.div(acc, layout.len as f32)
    } else {
        acc
    }
}

fn warp_rows(
    b: &mut KernelBuilder,
    layout: &RowLayout,
    rows: usize,
    op: ReduceOp,
    input: Space,
    out: Space,
) {
    let tid = b.special(crate::gpu::kir::Special::Tid);
    let lane = b.rem(tid, 32);
    b.grid_stride_by(rows, 32, |b, row| {
        let base = layout.row_base(b, row);
        let acc = b.mov(identity(op, Ty::F32));
        accumulate_strided(b, layout, base, lane, 32, op, input, acc);
        b.warp_combine(combine(op), acc);
        let value = finish_value(b, layout, op, acc);
        let first = b.setp(Cmp::Eq, lane, 0);
        b.if_then(first, |b| b.st(out, row, value));
    });
}

fn block_rows(
    b: &mut KernelBuilder,
    layout: &RowLayout,
    rows: usize,
    op: ReduceOp,
    input: Space,
    out: Space,
) {
    let warps = (b.block() / 32) as usize;
    let partial = b.shared("partial", crate::gpu::kir::Elem::F32, warps);
    let tid = b.special(crate::gpu::kir::Special::Tid);
    let lane = b.rem(tid, 32);
    let warp = b.div(tid, 32);
    let block = b.block() as i32;
    b.grid_stride_by(rows, b.block(), |b, row| {
        let base = layout.row_base(b, row);
        let acc = b.mov(identity(op, Ty::F32));
        accumulate_strided(b, layout, base, tid, block, op, input, acc);
        b.warp_combine(combine(op), acc);
        let lane0 = b.setp(Cmp::Eq, lane, 0);
        b.if_then(lane0, |b| b.st(partial, warp, acc));
        b.bar();
        let total = b.mov(identity(op, Ty::F32));
        let mine = b.setp(Cmp::Lt, lane, warps as i32);
        b.if_then(mine, |b| {
            let p = b.ld(partial, lane);
            b.assign(total, p);
        });
        b.warp_combine(combine(op), total);
        let value = finish_value(b, layout, op, total);
        let thread0 = b.setp(Cmp::Eq, tid, 0);
        b.if_then(thread0, |b| b.st(out, row, value));
        // The next row reuses `partial`.
        b.bar();
    });
}

fn integer_rows(
    b: &mut KernelBuilder,
    layout: &RowLayout,
    rows: usize,
    op: ReduceOp,
    input: Space,
    out: Space,
) {
    let ty = b.elem(out).reg_ty();
    b.grid_stride(rows, |b, row| {
        let base = layout.row_base(b, row);
        let acc = b.mov(identity(op, ty));
        let zero = b.mov(0);
        accumulate_strided(b, layout, base, zero, 1, op, input, acc);
        let value = if op == ReduceOp::Mean {
            let n = if ty == Ty::I32 {
                Operand::I32(layout.len as i32)
            } else {
                Operand::I64(layout.len as i64)
            };
            b.div(acc, n)
        } else {
            acc
        };
        b.st(out, row, value);
    });
}
