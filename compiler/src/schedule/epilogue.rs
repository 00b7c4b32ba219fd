//! Additive epilogues of matrix products (CPU): a pointwise kernel computing
//! `product + rest` (a bias, a residual, both) where nothing else reads the product
//! becomes the product's *initialiser*. The step first evaluates `rest` into the output
//! buffer, then the product accumulates into it (`gemm` reads its destination), so the
//! product is never written and read back as a separate tensor.
//!
//! Invariants: only `f32` products whose sole reader is the kernel qualify; the kernel
//! loads the product exactly once, elementwise (identity axes), as a term of the sum it
//! stores (reached through `add`s that nothing else reads), so `rest` cannot depend on
//! it. The result is the same sum, regrouped: `rest` is rounded to f32 before the product
//! is added (the backend's tolerance covers it; tests compare with the interpreter). The
//! product's step moves to where the kernel was: its own operands were ready earlier,
//! and the other terms of the sum may be computed between the two.

use super::Step;
use crate::ir::ops::BinaryOp;
use crate::ir::{DType, Graph, ValueId};
use crate::kernel::{Expr, ExprId, PointwiseKernel};

/// Folds every qualifying kernel into the product it adds to.
pub fn fold_additive_epilogues(g: &Graph, steps: Vec<Step>) -> Vec<Step> {
    let mut readers = vec![0usize; g.values.len()];
    for s in &steps {
        for r in s.reads(g) {
            readers[r.index()] += 1;
        }
    }
    for &o in g.outputs.iter().chain(g.updates.iter().map(|(_, v)| v)) {
        readers[o.index()] += 1;
    }
    // Steps in order; a product that takes an initialiser moves to its kernel's place
    // (`None` where it was), since the other terms may be computed after the product.
    let mut out: Vec<Option<Step>> = Vec::with_capacity(steps.len());
    // Where each product's step sits in `out`, while it can still take an initialiser.
    let mut product_at: Vec<Option<usize>> = vec![None; g.values.len()];
    for step in steps {
        if let Step::Pointwise(k) = &step {
            let foldable = |input: usize| {
                let v = k.inputs[input];
                readers[v.index()] == 1 && product_at[v.index()].is_some()
            };
            let fold = split_off_product(k, &foldable);
            if let Some((input, init)) = fold {
                let at = product_at[k.inputs[input].index()].take().expect("checked");
                let mut product = out[at].take().expect("a product not yet moved");
                if let Step::MatMul { init: slot, .. } = &mut product {
                    *slot = Some(Box::new(init));
                }
                out.push(Some(product));
                continue;
            }
        }
        if let Step::MatMul {
            output, init: None, ..
        } = &step
        {
            if g.ty(*output).dtype == DType::F32 {
                product_at[output.index()] = Some(out.len());
            }
        }
        out.push(Some(step));
    }
    out.into_iter().flatten().collect()
}

/// For a kernel storing a sum in which `load x` is one term (reached from the stored
/// expression through `add`s used nowhere else), where `x` is loaded only there and
/// elementwise: the input index of `x` and the kernel computing the other terms into the
/// same output.
fn split_off_product(
    k: &PointwiseKernel,
    foldable: &dyn Fn(usize) -> bool,
) -> Option<(usize, PointwiseKernel)> {
    let root = k.exprs.len().checked_sub(1)?;
    let mut uses = vec![0usize; k.exprs.len()];
    for (e, _) in &k.exprs {
        for o in operands(e) {
            uses[o] += 1;
        }
    }
    let (sum, load, other) = find_term(k, &uses, foldable, root)?;
    let Expr::Load { input, .. } = k.exprs[load].0 else {
        unreachable!("find_term returns a load")
    };
    let other_loads =
        k.exprs.iter().enumerate().any(|(i, (e, _))| {
            i != load && matches!(e, Expr::Load { input: j, .. } if *j == input)
        });
    if other_loads || k.exprs[load].1 != DType::F32 {
        return None;
    }
    // Without the term, the sum that held it is just its other operand.
    let resolve = |e: ExprId| if e == sum { other } else { e };
    let kept = reachable(k, resolve(root), &resolve);
    if kept[load] {
        // Another term reads the product too (`p + exp(p)`).
        return None;
    }
    Some((input, subkernel(k, &kept, &resolve, input)))
}

/// Searches the `add` tree under `e` for an elementwise load of a `foldable` input: the
/// `add` holding it, the load and the `add`'s other operand.
fn find_term(
    k: &PointwiseKernel,
    uses: &[usize],
    foldable: &dyn Fn(usize) -> bool,
    e: ExprId,
) -> Option<(ExprId, ExprId, ExprId)> {
    let Expr::Binary(BinaryOp::Add, a, b) = k.exprs[e].0 else {
        return None;
    };
    let elementwise = |x: ExprId| {
        matches!(&k.exprs[x].0, Expr::Load { input, axes }
            if foldable(*input)
                && axes.len() == k.rank
                && axes.iter().enumerate().all(|(i, &ax)| ax == Some(i)))
    };
    if elementwise(a) {
        return Some((e, a, b));
    }
    if elementwise(b) {
        return Some((e, b, a));
    }
    // Only sums read once: rewriting a shared one would change its other readers.
    [a, b]
        .into_iter()
        .filter(|&x| uses[x] == 1)
        .find_map(|x| find_term(k, uses, foldable, x))
}

/// Which expressions `root` depends on (itself included), operands seen through
/// `resolve`.
fn reachable(k: &PointwiseKernel, root: ExprId, resolve: &dyn Fn(ExprId) -> ExprId) -> Vec<bool> {
    let mut seen = vec![false; k.exprs.len()];
    seen[root] = true;
    // Operands come before their users, so one backward sweep finds them all.
    for i in (0..=root).rev() {
        if !seen[i] {
            continue;
        }
        for o in operands(&k.exprs[i].0) {
            seen[resolve(o)] = true;
        }
    }
    seen
}

fn operands(e: &Expr) -> Vec<ExprId> {
    match *e {
        Expr::Load { .. } | Expr::Const(_) | Expr::Index(_) => vec![],
        Expr::Unary(_, x) | Expr::Cast(x) => vec![x],
        Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => vec![a, b],
        Expr::Select(c, a, b) => vec![c, a, b],
    }
}

/// The kernel made of the `kept` expressions (the last kept one stored, operands seen
/// through `resolve`), without input `dropped`, which no kept expression loads.
fn subkernel(
    k: &PointwiseKernel,
    kept: &[bool],
    resolve: &dyn Fn(ExprId) -> ExprId,
    dropped: usize,
) -> PointwiseKernel {
    let mut new_id = vec![usize::MAX; k.exprs.len()];
    let mut exprs = Vec::new();
    for (i, (e, dt)) in k.exprs.iter().enumerate() {
        if !kept[i] {
            continue;
        }
        let m = |x: ExprId| new_id[resolve(x)];
        let e = match e.clone() {
            Expr::Load { input, axes } => Expr::Load {
                input: if input > dropped { input - 1 } else { input },
                axes,
            },
            Expr::Unary(op, x) => Expr::Unary(op, m(x)),
            Expr::Cast(x) => Expr::Cast(m(x)),
            Expr::Binary(op, a, b) => Expr::Binary(op, m(a), m(b)),
            Expr::Compare(op, a, b) => Expr::Compare(op, m(a), m(b)),
            Expr::Select(c, a, b) => Expr::Select(m(c), m(a), m(b)),
            leaf => leaf,
        };
        new_id[i] = exprs.len();
        exprs.push((e, *dt));
    }
    let mut inputs: Vec<ValueId> = k.inputs.clone();
    inputs.remove(dropped);
    PointwiseKernel {
        name: format!("{}_init", k.name),
        inputs,
        output: k.output,
        rank: k.rank,
        exprs,
    }
}
