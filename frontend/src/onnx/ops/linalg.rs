//! Linear algebra: `MatMul` (numpy semantics: 1-D promotion, broadcast batch axes),
//! `Gemm`, and `Einsum` (decomposed into diagonals, broadcasts, a product and sums).

use super::one;
use crate::onnx::import::{broadcast_shapes, unsupported, Importer, NodeCtx, OpResult, Out};
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, ReduceOp};
use smelt_compiler::ir::{DType, Dim, Op, TensorType, ValueId};

pub(super) fn import(im: &mut Importer, node: &NodeCtx, op: &str) -> OpResult<Option<Vec<Out>>> {
    match op {
        "MatMul" => {
            let (a, b) = (im.input(node, 0)?, im.input(node, 1)?);
            one(matmul(im, a, b)?)
        }
        "Gemm" => one(gemm(im, node)?),
        "Einsum" => one(einsum(im, node)?),
        _ => Ok(None),
    }
}

/// numpy `matmul`: a 1-D left operand is a row, a 1-D right operand a column (both
/// removed from the result); batch axes broadcast.
pub(super) fn matmul(im: &mut Importer, a: ValueId, b: ValueId) -> OpResult<ValueId> {
    let (mut da, mut db) = (im.dims(a), im.dims(b));
    if da.is_empty() || db.is_empty() {
        return Err("'MatMul' operands must have rank >= 1".into());
    }
    let (row, col) = (da.len() == 1, db.len() == 1);
    if row {
        da.insert(0, Dim::fixed(1));
    }
    if col {
        db.push(Dim::fixed(1));
    }
    let batch = broadcast_shapes(&[da[..da.len() - 2].to_vec(), db[..db.len() - 2].to_vec()])?;
    let a_dims: Vec<Dim> = batch.iter().chain(&da[da.len() - 2..]).cloned().collect();
    let b_dims: Vec<Dim> = batch.iter().chain(&db[db.len() - 2..]).cloned().collect();
    let a = im.reshape(a, da.clone())?;
    let b = im.reshape(b, db.clone())?;
    let a = im.broadcast_to(a, &a_dims)?;
    let b = im.broadcast_to(b, &b_dims)?;
    let y = im.op(Op::MatMul, &[a, b])?;
    let mut out = im.dims(y);
    if col {
        out.pop();
    }
    if row {
        let m = out.len() - if col { 1 } else { 2 };
        out.remove(m);
    }
    im.reshape(y, out)
}

fn transpose_2d(im: &mut Importer, x: ValueId, flag: bool) -> OpResult<ValueId> {
    if im.ty(x).rank() != 2 {
        return Err(format!("'Gemm' needs 2-D operands, found {}", im.ty(x)).into());
    }
    if flag {
        im.permute(x, vec![1, 0])
    } else {
        Ok(x)
    }
}

fn gemm(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let a = im.input(node, 0)?;
    let b = im.input(node, 1)?;
    let a = transpose_2d(im, a, node.int_or("transA", 0)? != 0)?;
    let b = transpose_2d(im, b, node.int_or("transB", 0)? != 0)?;
    let alpha = node.float_or("alpha", 1.0)?;
    let beta = node.float_or("beta", 1.0)?;
    let mut y = im.op(Op::MatMul, &[a, b])?;
    if alpha != 1.0 {
        let s = im.splat_like(alpha, y)?;
        y = im.op(Op::Binary(BinaryOp::Mul), &[y, s])?;
    }
    if let Some(c) = im.opt_input(node, 2)? {
        let dims = im.dims(y);
        let mut c = im.broadcast_to(c, &dims)?;
        if beta != 1.0 {
            let s = im.splat_like(beta, c)?;
            c = im.op(Op::Binary(BinaryOp::Mul), &[c, s])?;
        }
        y = im.op(Op::Binary(BinaryOp::Add), &[y, c])?;
    }
    Ok(y)
}

/// Labels of one einsum term, with `...` expanded to labels `'0'..` (right-aligned
/// across operands, as numpy broadcasts them).
fn term_labels(term: &str, rank: usize, ellipsis_rank: &mut usize) -> OpResult<Vec<char>> {
    let term = term.trim();
    let letters = term.replace("...", "");
    if letters.chars().any(|c| !c.is_ascii_alphabetic()) {
        return Err(format!("bad einsum term '{term}'").into());
    }
    if !term.contains("...") {
        if letters.len() != rank {
            return Err(format!("einsum term '{term}' does not match rank {rank}").into());
        }
        return Ok(letters.chars().collect());
    }
    let k = rank
        .checked_sub(letters.len())
        .ok_or_else(|| format!("einsum term '{term}' does not match rank {rank}"))?;
    *ellipsis_rank = (*ellipsis_rank).max(k);
    let (before, after) = term.split_once("...").unwrap_or((term, ""));
    let mut labels: Vec<char> = before.chars().collect();
    labels.extend((0..k).map(|i| ellipsis_label(i, k)));
    labels.extend(after.chars());
    Ok(labels)
}

/// The label of axis `i` of a `k`-axis ellipsis, counted from the right.
fn ellipsis_label(i: usize, k: usize) -> char {
    char::from(b'0' + (k - 1 - i).min(9) as u8)
}

fn einsum(im: &mut Importer, node: &NodeCtx) -> OpResult<ValueId> {
    let equation: String = node
        .string("equation")?
        .ok_or("'Einsum' needs attribute 'equation'")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (lhs, rhs) = match equation.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (equation.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != node.input_count() {
        return Err(format!(
            "einsum '{equation}' has {} terms for {} inputs",
            terms.len(),
            node.input_count()
        )
        .into());
    }
    let mut ellipsis_rank = 0;
    let mut operands = Vec::new();
    for (i, term) in terms.iter().enumerate() {
        let x = im.input(node, i)?;
        let labels = term_labels(term, im.ty(x).rank(), &mut ellipsis_rank)?;
        if ellipsis_rank > 10 {
            return unsupported("einsum with more than 10 ellipsis axes");
        }
        operands.push(take_diagonals(im, x, labels)?);
    }
    let ell: Vec<char> = (0..ellipsis_rank)
        .map(|i| ellipsis_label(i, ellipsis_rank))
        .collect();
    let out_labels: Vec<char> = match &rhs {
        Some(r) => {
            let mut dummy = 0;
            let letters = r.replace("...", "").len();
            term_labels(
                r,
                letters + if r.contains("...") { ellipsis_rank } else { 0 },
                &mut dummy,
            )?
        }
        None => {
            // Implicit output: the ellipsis, then letters used once, alphabetically.
            let mut once: Vec<char> = lhs
                .chars()
                .filter(|c| c.is_ascii_alphabetic())
                .filter(|&c| lhs.matches(c).count() == 1)
                .collect();
            once.sort_unstable();
            ell.iter().copied().chain(once).collect()
        }
    };
    // Every label in first-use order, output labels first, with its size.
    let mut all: Vec<char> = out_labels.clone();
    for (_, labels) in &operands {
        for &c in labels {
            if !all.contains(&c) {
                all.push(c);
            }
        }
    }
    let mut sizes = Vec::new();
    for &c in &all {
        let mut dims = Vec::new();
        for (x, labels) in &operands {
            if let Some(p) = labels.iter().position(|&l| l == c) {
                dims.push(vec![im.dims(*x)[p].clone()]);
            }
        }
        let size = broadcast_shapes(&dims)?;
        sizes.push(size.into_iter().next().unwrap_or_else(|| Dim::fixed(1)));
    }
    let dtype = im.ty(operands[0].0).dtype;
    let mut product: Option<ValueId> = None;
    for (x, labels) in operands {
        // Permute into `all` order, insert missing labels as size 1, broadcast.
        let mut present: Vec<(usize, usize)> = labels
            .iter()
            .enumerate()
            .map(|(axis, c)| (all.iter().position(|a| a == c).unwrap_or(0), axis))
            .collect();
        present.sort_unstable();
        let x = im.permute(x, present.iter().map(|&(_, axis)| axis).collect())?;
        let xd = im.dims(x);
        let mut it = xd.into_iter();
        let expanded: Vec<Dim> = (0..all.len())
            .map(|p| {
                if present.iter().any(|&(q, _)| q == p) {
                    it.next().unwrap_or_else(|| Dim::fixed(1))
                } else {
                    Dim::fixed(1)
                }
            })
            .collect();
        let x = im.reshape(x, expanded)?;
        let x = im.broadcast_to(x, &sizes)?;
        product = Some(match product {
            None => x,
            Some(p) => im.op(Op::Binary(BinaryOp::Mul), &[p, x])?,
        });
    }
    let product = product.ok_or("'Einsum' needs inputs")?;
    let summed: Vec<usize> = (out_labels.len()..all.len()).collect();
    let y = if summed.is_empty() {
        product
    } else {
        im.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: summed,
            },
            &[product],
        )?
    };
    let _ = dtype;
    Ok(y)
}

/// Resolves repeated labels in one operand (`ii`) by taking the diagonal.
fn take_diagonals(
    im: &mut Importer,
    mut x: ValueId,
    mut labels: Vec<char>,
) -> OpResult<(ValueId, Vec<char>)> {
    while let Some((i, j)) = (0..labels.len()).find_map(|i| {
        (i + 1..labels.len())
            .find(|&j| labels[j] == labels[i])
            .map(|j| (i, j))
    }) {
        let ty = im.ty(x);
        let idx_ty = TensorType::new(DType::I64, ty.shape.clone());
        let rows = im.op_typed(Op::Iota { axis: i }, &[], idx_ty.clone())?;
        let cols = im.op_typed(Op::Iota { axis: j }, &[], idx_ty)?;
        let on_diag = im.op(Op::Compare(CompareOp::Eq), &[rows, cols])?;
        let zero = im.splat_like(0.0, x)?;
        let masked = im.op(Op::Select, &[on_diag, x, zero])?;
        x = im.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: vec![j],
            },
            &[masked],
        )?;
        labels.remove(j);
    }
    Ok((x, labels))
}
