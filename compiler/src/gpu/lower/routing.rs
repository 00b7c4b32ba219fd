//! The routing ops (`ir::ops::routing`) as simple SIMT kernels, one thread per output
//! element (correct for any grid; not tuned):
//!
//! - `top_k`: element `(r, j)` is the index of row `r` whose rank is `j`, where an
//!   element's rank counts the elements ordered before it (larger, or equal at a lower
//!   index; NaN as `+inf`). `O(n²)` per element, meant for expert counts.
//! - `grouped_matmul`: `y[t, c] = Σ_p x[t, p] · w[group[t], p, c]` (w possibly read
//!   through a transpose the schedule folded into the product).
//! - `grouped_matmul_weight_grad`: `dw[e, p, c] = Σ_{t: group[t] = e} x[t, p] · dy[t, c]`,
//!   a pass over all rows per element.
//!
//! A group outside `0..E` reads as group 0 (the interpreter reports it as an error).

use super::movement::{load_index, per_element};
use super::{KernelCall, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::{BinOp, Cmp, Operand, Reg, Space, Ty};
use crate::ir::{Graph, ValueId};
use crate::schedule::MatMulOperand;

/// `top_k`'s sort key: NaN ranks as `+inf`.
fn key(b: &mut KernelBuilder, x: Reg) -> Reg {
    let number = b.setp(Cmp::Eq, x, x);
    b.selp(number, x, f32::INFINITY)
}

pub(super) fn top_k(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    x: ValueId,
) -> Result<KernelCall, String> {
    let n = *shapes[x.index()].last().expect("rank >= 1 (verified)");
    let k = *shapes[v.index()].last().expect("rank >= 1 (verified)");
    per_element(name, g, shapes, v, &[x], |b, p, e, _| {
        let row = b.div(e, k as i32);
        let j = b.rem(e, k as i32);
        let start = b.mul(row, n as i32);
        let chosen = b.mov(Operand::I32(0));
        b.for_range(0, n as i32, 1, |b, i| {
            let at = b.add(start, i);
            let xi = b.ld(p[0], at);
            let ki = key(b, xi);
            let rank = b.mov(Operand::I32(0));
            b.for_range(0, n as i32, 1, |b, m| {
                let at = b.add(start, m);
                let xm = b.ld(p[0], at);
                let km = key(b, xm);
                let larger = b.setp(Cmp::Gt, km, ki);
                let equal = b.setp(Cmp::Eq, km, ki);
                let earlier = b.setp(Cmp::Lt, m, i);
                let tie = b.bin(BinOp::And, equal, earlier);
                let before = b.bin(BinOp::Or, larger, tie);
                let one = b.selp(before, 1, 0);
                b.update(BinOp::Add, rank, one);
            });
            let hit = b.setp(Cmp::Eq, rank, j);
            let pick = b.selp(hit, i, chosen);
            b.assign(chosen, pick);
        });
        b.cvt(Ty::I64, chosen)
    })
}

/// `grouped_matmul` of `x`, the weight `w` (`[E, K, N]`, or `[E, N, K]` read
/// transposed when the schedule folded a transpose into it) and `group`.
pub(super) fn grouped_matmul(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    (x, w, group): (ValueId, MatMulOperand, ValueId),
) -> Result<KernelCall, String> {
    let (t, k) = (shapes[v.index()][0], shapes[x.index()][1]);
    let groups = shapes[w.value.index()][0];
    let n = shapes[v.index()][1];
    // Strides of w[group] along K and along N.
    let (w_k, w_n) = if w.transposed { (1, k) } else { (n, 1) };
    let sources = [x, w.value, group];
    let mut call = per_element(name, g, shapes, v, &sources, |b, p, _, idx| {
        let row = idx[0].map_or(Operand::I32(0), Operand::Reg);
        let col = idx[1].map_or(Operand::I32(0), Operand::Reg);
        let group = load_index(b, p[2], row, groups);
        let x_row = b.mul(row, k as i32);
        // w[group, 0, col], then one step along K per term.
        let w_group = b.mul(group, (k * n) as i32);
        let w_col = b.mul(col, w_n as i32);
        let w_at = b.add(w_group, w_col);
        strided_dot(b, k, (p[0], x_row, 1), (p[1], w_at, w_k), |_, _| None)
    })?;
    call.flops = 2.0 * (t * k * n) as f64;
    Ok(call)
}

pub(super) fn grouped_weight_grad(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    operands: &[ValueId],
) -> Result<KernelCall, String> {
    let (groups, k, n) = {
        let s = &shapes[v.index()];
        (s[0], s[1], s[2])
    };
    let t = shapes[operands[0].index()][0];
    let mut call = per_element(name, g, shapes, v, operands, |b, p, _, idx| {
        let zero = Operand::I32(0);
        let (e, q, c) = (
            idx[0].map_or(zero, Operand::Reg),
            idx[1].map_or(zero, Operand::Reg),
            idx[2].map_or(zero, Operand::Reg),
        );
        // Over every row, counting those of group `e`.
        strided_dot(b, t, (p[0], q, k), (p[1], c, n), |b, row| {
            let group = load_index(b, p[2], row, groups);
            Some(b.setp(Cmp::Eq, group, e))
        })
    })?;
    call.flops = 2.0 * (t * k * n) as f64;
    Ok(call)
}

/// `Σ_i x[x0 + i·xs] · y[y0 + i·ys]` over `i` in `0..len` (f32), counting only the terms
/// where `keep(i)` gives a true predicate (`None`: every term).
fn strided_dot(
    b: &mut KernelBuilder,
    len: usize,
    (x, x0, xs): (Space, impl Into<Operand> + Copy, usize),
    (y, y0, ys): (Space, impl Into<Operand> + Copy, usize),
    keep: impl Fn(&mut KernelBuilder, Reg) -> Option<Reg>,
) -> Reg {
    let acc = b.mov(Operand::F32(0.0));
    b.for_range(0, len as i32, 1, |b, i| {
        let term = |b: &mut KernelBuilder| {
            let xi = b.mul(i, xs as i32);
            let xa = b.add(xi, x0);
            let xv = b.ld(x, xa);
            let yi = b.mul(i, ys as i32);
            let ya = b.add(yi, y0);
            let yv = b.ld(y, ya);
            let s = b.fma(xv, yv, acc);
            b.assign(acc, s);
        };
        match keep(b, i) {
            Some(cond) => b.if_then(cond, term),
            None => term(b),
        }
    });
    acc
}
