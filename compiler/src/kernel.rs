//! The loop-level kernel IR: what one generated kernel computes, independent of the
//! target. The CPU backend evaluates it (and will JIT it); the PTX backend will emit it.
//!
//! A [`PointwiseKernel`] computes one output tensor element by element over its shape
//! (the iteration space). Its body is a small expression DAG whose leaves are loads of
//! input buffers, constants and indices. Every access is *affine in the iteration index*:
//! buffer axis `j` is indexed by kernel axis `axes[j]`, or by 0 for a size-1 axis that is
//! broadcast (`None`). Broadcasts and permutations of fused values therefore cost nothing:
//! they only change these maps.

use crate::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use crate::ir::{DType, ValueId};
use std::fmt::{self, Write};

/// For each axis of a buffer, the kernel axis that indexes it (`None`: always index 0).
pub type AxisMap = Vec<Option<usize>>;

/// Index of an expression inside its kernel.
pub type ExprId = usize;

/// One node of a kernel's expression DAG.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Element of input buffer `input` at the position its axis map gives.
    Load {
        /// Index into [`PointwiseKernel::inputs`].
        input: usize,
        /// How the buffer's axes follow the kernel's.
        axes: AxisMap,
    },
    /// A constant.
    Const(f64),
    /// The iteration index along a kernel axis (`None`: 0).
    Index(Option<usize>),
    /// Unary math.
    Unary(UnaryOp, ExprId),
    /// Binary arithmetic.
    Binary(BinaryOp, ExprId, ExprId),
    /// Comparison (bool result).
    Compare(CompareOp, ExprId, ExprId),
    /// `a` where the condition holds, else `b`.
    Select(ExprId, ExprId, ExprId),
    /// Conversion to the expression's dtype.
    Cast(ExprId),
}

/// A fused elementwise kernel producing one graph value.
#[derive(Clone, Debug, PartialEq)]
pub struct PointwiseKernel {
    /// A readable name (the ops it fuses).
    pub name: String,
    /// The graph values it reads.
    pub inputs: Vec<ValueId>,
    /// The graph value it writes; its shape is the iteration space.
    pub output: ValueId,
    /// The rank of the iteration space (the output's rank).
    pub rank: usize,
    /// The expression DAG in evaluation order, each with its dtype; the last is stored.
    pub exprs: Vec<(Expr, DType)>,
}

impl PointwiseKernel {
    /// Number of primitive ops fused (expressions that compute something).
    pub fn op_count(&self) -> usize {
        self.exprs
            .iter()
            .filter(|(e, _)| !matches!(e, Expr::Load { .. } | Expr::Const(_) | Expr::Index(_)))
            .count()
    }

    /// The kernel in text: one line per expression.
    pub fn to_text(&self, value_name: impl Fn(ValueId) -> String) -> String {
        let mut s = String::new();
        for (i, (e, dt)) in self.exprs.iter().enumerate() {
            let axes = |a: &AxisMap| {
                let v: Vec<String> = a
                    .iter()
                    .map(|x| x.map_or("0".to_string(), |k| format!("i{k}")))
                    .collect();
                v.join(", ")
            };
            let body = match e {
                Expr::Load { input, axes: a } => {
                    format!("load {}[{}]", value_name(self.inputs[*input]), axes(a))
                }
                Expr::Const(c) => format!("const {}", crate::ir::format_float(*c)),
                Expr::Index(a) => {
                    format!("index {}", a.map_or("0".to_string(), |k| format!("i{k}")))
                }
                Expr::Unary(op, x) => format!("{} e{x}", op.name()),
                Expr::Binary(op, a, b) => format!("{} e{a}, e{b}", op.name()),
                Expr::Compare(op, a, b) => format!("{} e{a}, e{b}", op.name()),
                Expr::Select(c, a, b) => format!("select e{c}, e{a}, e{b}"),
                Expr::Cast(x) => format!("cast e{x}"),
            };
            let _ = writeln!(s, "      e{i}: {dt} = {body}");
        }
        s
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
