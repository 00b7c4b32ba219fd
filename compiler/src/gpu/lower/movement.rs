//! Data movement that fusion leaves to library steps: reshape (a copy), slice, concat,
//! pad, gather and scatter-add. Each is one thread per output element computing where
//! its value comes from.

use super::{blocks_for, elem_of, linear, strides, unflatten, KernelCall, Role, Shapes, BLOCK};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Elem, Operand, Reg, Space, Ty};
use crate::ir::{DType, Graph, ValueId};

/// A kernel writing each element of `v` from `value(b, flat index, multi-index)`;
/// `sources` become parameters 1.. in order.
pub(super) fn per_element(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    sources: &[ValueId],
    value: impl FnOnce(&mut KernelBuilder, &[Space], Reg, &[Option<Reg>]) -> Reg,
) -> Result<KernelCall, String> {
    let shape = &shapes[v.index()];
    let n: usize = shape.iter().product();
    let mut b = KernelBuilder::new(name, BLOCK);
    let out = b.param("out", elem_of(g.ty(v).dtype)?, n);
    let mut params = Vec::new();
    for (i, &s) in sources.iter().enumerate() {
        let len = shapes[s.index()].iter().product();
        params.push(b.param(&format!("in{i}"), elem_of(g.ty(s).dtype)?, len));
    }
    b.grid_stride(n, |b, e| {
        let idx = unflatten(b, e, shape, &vec![true; shape.len()]);
        let x = value(b, &params, e, &idx);
        b.st(out, e, x);
    });
    Ok(KernelCall {
        kernel: b.finish(),
        args: std::iter::once(v).chain(sources.iter().copied()).collect(),
        work_blocks: blocks_for(n, 1, BLOCK),
        role: Role::Compute,
        flops: 0.0,
    })
}

/// `reshape`: the same elements in the same order.
pub(super) fn copy(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    x: ValueId,
) -> Result<KernelCall, String> {
    per_element(name, g, shapes, v, &[x], |b, p, e, _| b.ld(p[0], e))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn slice(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    x: ValueId,
    axis: usize,
    start: u64,
    step: u64,
) -> Result<KernelCall, String> {
    let mut s = strides(&shapes[x.index()]);
    let offset = start as usize * s[axis];
    s[axis] *= step as usize;
    per_element(name, g, shapes, v, &[x], |b, p, _, idx| {
        let at = linear(b, idx, &s, Operand::I32(offset as i32));
        b.ld(p[0], at)
    })
}

pub(super) fn concat(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    parts: &[ValueId],
    axis: usize,
) -> Result<KernelCall, String> {
    let part_shapes: Vec<Vec<usize>> = parts.iter().map(|p| shapes[p.index()].clone()).collect();
    let elem = elem_of(g.ty(v).dtype)?;
    per_element(name, g, shapes, v, parts, |b, p, _, idx| {
        let result = b.reg(elem.reg_ty());
        let along = idx[axis].map_or(Operand::I32(0), Operand::Reg);
        let mut start = 0usize;
        for (i, ps) in part_shapes.iter().enumerate() {
            let end = start + ps[axis];
            let from = b.setp(Cmp::Ge, along, start as i32);
            let to = b.setp(Cmp::Lt, along, end as i32);
            let here = b.bin(BinOp::And, from, to);
            let s = strides(ps);
            let lo = start;
            b.if_then(here, |b| {
                let mut local = idx.to_vec();
                if ps[axis] > 1 {
                    let shifted = b.bin(BinOp::Sub, along, lo as i32);
                    local[axis] = Some(shifted);
                } else {
                    local[axis] = None;
                }
                let at = linear(b, &local, &s, Operand::I32(0));
                let x = b.ld(p[i], at);
                b.assign(result, x);
            });
            start = end;
        }
        result
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn pad(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    x: ValueId,
    axis: usize,
    low: u64,
    fill: f64,
) -> Result<KernelCall, String> {
    let xs = shapes[x.index()].clone();
    let s = strides(&xs);
    let dt = g.ty(v).dtype;
    per_element(name, g, shapes, v, &[x], |b, p, _, idx| {
        let result = b.mov(immediate(fill, dt));
        let along = idx[axis].map_or(Operand::I32(0), Operand::Reg);
        let from = b.setp(Cmp::Ge, along, low as i32);
        let to = b.setp(Cmp::Lt, along, (low as usize + xs[axis]) as i32);
        let inside = b.bin(BinOp::And, from, to);
        b.if_then(inside, |b| {
            let mut local = idx.to_vec();
            local[axis] = if xs[axis] > 1 {
                Some(b.bin(BinOp::Sub, along, low as i32))
            } else {
                None
            };
            let at = linear(b, &local, &s, Operand::I32(0));
            let x = b.ld(p[0], at);
            b.assign(result, x);
        });
        result
    })
}

/// An immediate of the stored register type of `dt` (bools as 0/1).
fn immediate(x: f64, dt: DType) -> Operand {
    match elem_of(dt).map(|e| e.reg_ty()) {
        Ok(Ty::I64) => Operand::I64(x as i64),
        Ok(Ty::I32) => Operand::I32(if dt == DType::Bool {
            i32::from(x != 0.0)
        } else {
            x as i64 as i32
        }),
        _ => Operand::F32(x as f32),
    }
}

/// Loads index `at` of `indices` as an `i32` in `0..n`; one outside reads as 0 (the
/// interpreter reports it as an error; kernels cannot).
pub(super) fn load_index(
    b: &mut KernelBuilder,
    indices: Space,
    at: impl Into<Operand>,
    n: usize,
) -> Reg {
    let raw = b.ld(indices, at);
    let i = b.cvt(Ty::I32, raw);
    let neg = b.setp(Cmp::Lt, i, 0);
    let high = b.setp(Cmp::Ge, i, n as i32);
    let bad = b.bin(BinOp::Or, neg, high);
    b.selp(bad, 0, i)
}

/// Where element `idx` of a gather's output (`table[..axis] ++ indices ++
/// table[axis+1..]`) reads in the table; an index outside the axis reads element 0 of
/// it (the interpreter reports it as an error; kernels cannot).
fn table_position(
    b: &mut KernelBuilder,
    indices: Space,
    idx: &[Option<Reg>],
    table: &[usize],
    index_shape: &[usize],
    axis: usize,
) -> Operand {
    let k = index_shape.len();
    let is = strides(index_shape);
    let at = linear(b, &idx[axis..axis + k], &is, Operand::I32(0));
    let i = load_index(b, indices, at, table[axis]);
    let ts = strides(table);
    let mut pos: Vec<Option<Reg>> = idx[..axis].to_vec();
    pos.push(Some(i));
    pos.extend_from_slice(&idx[axis + k..]);
    linear(b, &pos, &ts, Operand::I32(0))
}

pub(super) fn gather(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    operands: &[ValueId],
    axis: usize,
) -> Result<KernelCall, String> {
    let table = shapes[operands[0].index()].clone();
    let index_shape = shapes[operands[1].index()].clone();
    per_element(name, g, shapes, v, operands, |b, p, _, idx| {
        let at = table_position(b, p[1], idx, &table, &index_shape, axis);
        b.ld(p[0], at)
    })
}

/// `scatter_add(base, indices, updates)`: a copy of `base`, then one atomic add per
/// update (two kernels: every copy must land before any add).
pub(super) fn scatter_add(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    operands: &[ValueId],
    axis: usize,
) -> Result<Vec<KernelCall>, String> {
    let (base, indices, updates) = (operands[0], operands[1], operands[2]);
    let elem = elem_of(g.ty(v).dtype)?;
    if !matches!(elem, Elem::F32 | Elem::I32 | Elem::I64) {
        return Err(format!(
            "scatter_add on {} (%{}) has no GPU kernel yet",
            g.ty(v).dtype,
            g.value(v).name
        ));
    }
    let first = copy(&format!("{name}_init"), g, shapes, v, base)?;
    let table = shapes[v.index()].clone();
    let index_shape = shapes[indices.index()].clone();
    let upd_shape = shapes[updates.index()].clone();
    let n: usize = upd_shape.iter().product();
    let mut b = KernelBuilder::new(&format!("{name}_add"), BLOCK);
    let out = b.param("out", elem, table.iter().product());
    let ip = b.param(
        "indices",
        elem_of(g.ty(indices).dtype)?,
        index_shape.iter().product(),
    );
    let up = b.param("updates", elem_of(g.ty(updates).dtype)?, n);
    b.grid_stride(n, |b, e| {
        let idx = unflatten(b, e, &upd_shape, &vec![true; upd_shape.len()]);
        let at = table_position(b, ip, &idx, &table, &index_shape, axis);
        let x = b.ld(up, e);
        b.atom_add(out, at, x);
    });
    let second = KernelCall {
        kernel: b.finish(),
        args: vec![v, indices, updates],
        work_blocks: blocks_for(n, 1, BLOCK),
        role: Role::Compute,
        flops: n as f64,
    };
    Ok(vec![first, second])
}
