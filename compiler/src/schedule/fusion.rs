//! Fusion: chains of elementwise ops, with the broadcasts, permutations, constants and
//! indices between them, become single pointwise kernels.
//!
//! A fusable value is *materialised* (written to memory by its own kernel) when it is
//! an output or update, when a non-fusable op reads it, or when several ops read it and
//! it computes something (recomputing a constant, index, broadcast or permutation is
//! free, so those are always inlined). Everything else is inlined into its users'
//! kernels, so intermediate tensors never exist. Values nothing reads are dropped.

use super::{transpose, Step};
use crate::ir::ops::BinaryOp;
use crate::ir::{Def, Graph, Op, ValueId};
use crate::kernel::{AxisMap, Expr, ExprId, PointwiseKernel};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;

/// True if value `v` of `g` can be computed inside a pointwise kernel. Integer division
/// and power are left out: they can fail (division by zero), which only a library
/// kernel reports.
pub fn is_fusable(g: &Graph, v: ValueId) -> bool {
    match node(g, v) {
        Some((Op::Binary(b), _)) if b.int_can_fail() && !g.ty(v).dtype.is_float() => false,
        Some((op, _)) => fusable_op(op),
        None => false,
    }
}

fn fusable_op(op: &Op) -> bool {
    match op {
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => true,
        Op::Broadcast { .. } | Op::Permute { .. } | Op::Iota { .. } => true,
        Op::Constant { values } => values.len() == 1,
        _ => false,
    }
}

/// Recomputing these inside every user costs (almost) nothing.
fn is_free(op: &Op) -> bool {
    matches!(
        op,
        Op::Broadcast { .. } | Op::Permute { .. } | Op::Iota { .. } | Op::Constant { .. }
    )
}

fn node(g: &Graph, v: ValueId) -> Option<(&Op, &[ValueId])> {
    match &g.value(v).def {
        Def::Node { op, operands } => Some((op, operands)),
        _ => None,
    }
}

pub(super) fn fuse(g: &Graph, enabled: bool) -> Vec<Step> {
    let n = g.values.len();
    // What each node's step reads: a matmul reads through the transposes it folds.
    let reads: Vec<Vec<ValueId>> = g.ids().map(|id| transpose::reads(g, id)).collect();
    let mut read_by_library = vec![false; n];
    for id in g.ids() {
        for o in &reads[id.index()] {
            read_by_library[o.index()] |= !is_fusable(g, id);
        }
    }
    let mut kept = vec![false; n];
    for &o in g.outputs.iter().chain(g.updates.iter().map(|(_, v)| v)) {
        kept[o.index()] = true;
    }
    // Which nodes are needed at all: walk back from what is kept.
    let mut live = kept.clone();
    let mut users: Vec<Vec<ValueId>> = vec![Vec::new(); n];
    for id in g.ids().collect::<Vec<_>>().into_iter().rev() {
        if live[id.index()] {
            for &o in &reads[id.index()] {
                live[o.index()] = true;
                users[o.index()].push(id);
            }
        }
    }
    // Assign each fusable node to the kernel (identified by its root) that computes it,
    // users first. A node whose users all sit in one kernel is inlined there (computed
    // once, shared); free nodes are inlined into every kernel that needs them.
    let mut group: Vec<Group> = vec![Group::None; n];
    for id in g.ids().collect::<Vec<_>>().into_iter().rev() {
        let Some((op, _)) = node(g, id) else { continue };
        if !live[id.index()] || !is_fusable(g, id) {
            continue;
        }
        // A single element that computes something (AdamW's `beta ^ step`) gets its
        // own kernel: inlined behind a broadcast it would be recomputed per element.
        let single = g
            .ty(id)
            .shape
            .as_static()
            .is_some_and(|d| d.iter().product::<u64>() == 1);
        let root =
            !enabled || kept[id.index()] || read_by_library[id.index()] || (single && !is_free(op));
        let mut kernels: BTreeSet<u32> = BTreeSet::new();
        let mut shared = false;
        for u in &users[id.index()] {
            match group[u.index()] {
                Group::In(r) => {
                    kernels.insert(r.0);
                }
                Group::Everywhere => shared = true,
                Group::None => {}
            }
        }
        group[id.index()] = if root {
            Group::In(id)
        } else if is_free(op) && (shared || kernels.len() > 1) {
            Group::Everywhere
        } else if !shared && kernels.len() == 1 {
            Group::In(ValueId(*kernels.iter().next().expect("one kernel")))
        } else {
            Group::In(id)
        };
    }
    let inlined = |v: ValueId| {
        matches!(group[v.index()], Group::In(r) if r != v) || group[v.index()] == Group::Everywhere
    };
    let mut steps = Vec::new();
    for id in g.ids() {
        if node(g, id).is_none() || !live[id.index()] {
            continue;
        }
        if let Some((Op::MatMul, operands)) = node(g, id) {
            steps.push(Step::MatMul {
                output: id,
                lhs: transpose::matmul_operand(g, operands[0]),
                rhs: transpose::matmul_operand(g, operands[1]),
                init: None,
            });
        } else if !is_fusable(g, id) {
            steps.push(Step::Library(id));
        } else if group[id.index()] == Group::In(id) {
            steps.push(Step::Pointwise(KernelBuilder::build(g, id, &inlined)));
        }
    }
    steps
}

/// Which kernel computes a fusable node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Group {
    /// Not a fusable node (or not needed).
    None,
    /// Inside the kernel rooted at this value (its own root when materialised).
    In(ValueId),
    /// Recomputed inside every kernel that reads it (free ops).
    Everywhere,
}

struct KernelBuilder<'g> {
    g: &'g Graph,
    inputs: Vec<ValueId>,
    exprs: Vec<(Expr, crate::ir::DType)>,
    memo: FxHashMap<(ValueId, AxisMap), ExprId>,
    fused_ops: BTreeSet<&'static str>,
}

impl<'g> KernelBuilder<'g> {
    fn build(g: &'g Graph, root: ValueId, inlined: &dyn Fn(ValueId) -> bool) -> PointwiseKernel {
        let mut b = KernelBuilder {
            g,
            inputs: Vec::new(),
            exprs: Vec::new(),
            memo: FxHashMap::default(),
            fused_ops: BTreeSet::new(),
        };
        let rank = g.ty(root).rank();
        b.expr(root, (0..rank).map(Some).collect(), true, inlined);
        let mut name: Vec<&str> = b.fused_ops.iter().copied().take(4).collect();
        if b.fused_ops.len() > 4 {
            name.push("etc");
        }
        PointwiseKernel {
            name: format!("fused_{}", name.join("_")),
            inputs: b.inputs,
            output: root,
            rank,
            exprs: b.exprs,
        }
    }

    fn push(&mut self, e: Expr, v: ValueId) -> ExprId {
        self.exprs.push((e, self.g.ty(v).dtype));
        self.exprs.len() - 1
    }

    /// The expression for value `v`, whose axis `a` is indexed by kernel axis `map[a]`.
    fn expr(
        &mut self,
        v: ValueId,
        map: AxisMap,
        root: bool,
        inlined: &dyn Fn(ValueId) -> bool,
    ) -> ExprId {
        if let Some(&e) = self.memo.get(&(v, map.clone())) {
            return e;
        }
        let e = match node(self.g, v) {
            Some((op, operands)) if root || inlined(v) => {
                self.fused_ops.insert(op.name());
                let x = operands;
                let same = |b: &mut Self, i: usize| b.expr(x[i], map.clone(), false, inlined);
                let ex = match op {
                    Op::Unary(u) => {
                        let a = same(self, 0);
                        Expr::Unary(*u, a)
                    }
                    Op::Binary(o) => {
                        let (a, c) = (same(self, 0), same(self, 1));
                        self.small_power(*o, a, c, v)
                            .unwrap_or(Expr::Binary(*o, a, c))
                    }
                    Op::Compare(o) => {
                        let (a, c) = (same(self, 0), same(self, 1));
                        Expr::Compare(*o, a, c)
                    }
                    Op::Select => {
                        let (c, a, d) = (same(self, 0), same(self, 1), same(self, 2));
                        Expr::Select(c, a, d)
                    }
                    Op::Cast => Expr::Cast(same(self, 0)),
                    Op::Constant { values } => Expr::Const(values[0]),
                    Op::Iota { axis } => Expr::Index(map[*axis]),
                    Op::Broadcast { dims } => {
                        let (src, dst) = (self.g.ty(x[0]), self.g.ty(v));
                        let inner: AxisMap = dims
                            .iter()
                            .enumerate()
                            .map(|(j, &d)| {
                                if src.dims()[j] == dst.dims()[d] {
                                    map[d]
                                } else {
                                    None
                                }
                            })
                            .collect();
                        return self.remember(v, map, x[0], inner, inlined);
                    }
                    Op::Permute { perm } => {
                        let mut inner = vec![None; perm.len()];
                        for (k, &p) in perm.iter().enumerate() {
                            inner[p] = map[k];
                        }
                        return self.remember(v, map, x[0], inner, inlined);
                    }
                    other => unreachable!("'{}' is not fusable", other.name()),
                };
                self.push(ex, v)
            }
            _ => {
                let input = match self.inputs.iter().position(|&i| i == v) {
                    Some(i) => i,
                    None => {
                        self.inputs.push(v);
                        self.inputs.len() - 1
                    }
                };
                self.push(
                    Expr::Load {
                        input,
                        axes: map.clone(),
                    },
                    v,
                )
            }
        };
        self.memo.insert((v, map), e);
        e
    }

    /// `a ^ 2` and `a ^ 3` of a float as products (tanh-GELU's cube): `powf` costs
    /// tens of cycles per element, a multiply one, and the result differs by at most
    /// an ulp per multiply.
    fn small_power(&mut self, op: BinaryOp, a: ExprId, c: ExprId, v: ValueId) -> Option<Expr> {
        let power = match self.exprs[c].0 {
            Expr::Const(p) if op == BinaryOp::Pow && self.g.ty(v).dtype.is_float() => p,
            _ => return None,
        };
        match power {
            2.0 => Some(Expr::Binary(BinaryOp::Mul, a, a)),
            3.0 => {
                let square = self.push(Expr::Binary(BinaryOp::Mul, a, a), v);
                Some(Expr::Binary(BinaryOp::Mul, square, a))
            }
            _ => None,
        }
    }

    /// Movement ops compute nothing: `v` at `map` is its operand at `inner`.
    fn remember(
        &mut self,
        v: ValueId,
        map: AxisMap,
        operand: ValueId,
        inner: AxisMap,
        inlined: &dyn Fn(ValueId) -> bool,
    ) -> ExprId {
        let e = self.expr(operand, inner, false, inlined);
        self.memo.insert((v, map), e);
        e
    }
}

/// The pointwise kernel of node `v` alone (its operands are loaded, nothing inlined):
/// how a backend runs an elementwise op that fusion left as a library step.
pub fn single_op_kernel(g: &Graph, v: ValueId) -> PointwiseKernel {
    KernelBuilder::build(g, v, &|_| false)
}
