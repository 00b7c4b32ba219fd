//! The op set. Each family file holds its ops' definitions and shape rules; this file
//! ties them into [`Op`] with one name table and one attribute mapping, shared by the
//! text form, the JSON form and the verifier.
//!
//! | family | ops |
//! |---|---|
//! | [`elementwise`] | unary math, binary arithmetic, comparisons, `select`, `cast` |
//! | [`unary`] | the unary op table: each unary op's meaning, gradient, cost and lowerings |
//! | [`reduce`] | `reduce_sum`, `reduce_max`, `reduce_mean` |
//! | [`linalg`] | `matmul` |
//! | [`movement`] | `reshape`, `permute`, `broadcast`, `slice`, `concat`, `pad` |
//! | [`indexing`] | `gather`, `scatter_add` |
//! | [`source`] | `constant`, `iota`, `random_uniform`, `random_normal` |
//! | [`collective`] | `all_to_all` (communication between ranks) |
//! | [`routing`] | `top_k`, `grouped_matmul`, `grouped_matmul_weight_grad` (sparse experts) |
//! | [`composite`] | `relu`, `softmax`, `layer_norm`, `cross_entropy`, `attention`, ... (expand to the above) |
//! | [`conv`] | `conv` (2-D convolution; composite) |
//! | [`attention`] | `attention` and its backward composites (`attention_lse`, `attention_grad_q`, ...) |
//! | [`paged_attention`] | `paged_attention` (a decode step over a paged KV cache; composite) |

pub mod attention;
pub mod collective;
pub mod composite;
pub mod conv;
pub mod elementwise;
pub mod indexing;
pub mod linalg;
pub mod movement;
pub mod paged_attention;
pub mod reduce;
pub mod routing;
mod row_grad;
pub mod source;
pub mod unary;

pub use attention::AttentionPart;
pub use composite::Composite;
pub use elementwise::{BinaryOp, CompareOp, UnaryOp};
pub use reduce::ReduceOp;

use super::attr::{Attr, AttrReader};
use super::{Builder, TensorType, ValueId};

/// The result of a shape rule: the inferred type or a message saying what is wrong.
pub(crate) type ShapeResult = Result<TensorType, String>;

pub(crate) fn expect_arity(x: &[&TensorType], n: usize) -> Result<(), String> {
    if x.len() != n {
        return Err(format!("expected {n} operand(s), found {}", x.len()));
    }
    Ok(())
}

/// An operation of the graph IR. Attributes are static; operands are graph values.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Elementwise one-operand math.
    Unary(UnaryOp),
    /// Elementwise arithmetic on two operands of one type.
    Binary(BinaryOp),
    /// Elementwise comparison giving `bool`.
    Compare(CompareOp),
    /// `select %cond, %a, %b`: `a` where `cond`, else `b`.
    Select,
    /// Converts the element type to the declared one (floats to ints truncate toward zero).
    Cast,
    /// A reduction over `axes` (strictly increasing), which are removed.
    Reduce {
        /// How elements combine.
        op: ReduceOp,
        /// The reduced axes.
        axes: Vec<usize>,
    },
    /// Batched matrix product.
    MatMul,
    /// Same elements in row-major order, declared shape.
    Reshape,
    /// Result axis `i` is operand axis `perm[i]`.
    Permute {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Operand axis `i` becomes result axis `dims[i]` (size-1 axes repeat); declared shape.
    Broadcast {
        /// Where each operand axis goes.
        dims: Vec<usize>,
    },
    /// Elements `start, start+step, ...` below `end` along `axis`.
    Slice {
        /// The sliced axis.
        axis: usize,
        /// First index kept.
        start: u64,
        /// One past the last index considered.
        end: u64,
        /// Stride (>= 1).
        step: u64,
    },
    /// Operands joined along `axis`.
    Concat {
        /// The joined axis.
        axis: usize,
    },
    /// `low` copies of `value` before and `high` after, along `axis`.
    Pad {
        /// The padded axis.
        axis: usize,
        /// Elements added before.
        low: u64,
        /// Elements added after.
        high: u64,
        /// The fill value.
        value: f64,
    },
    /// `table` indexed along `axis` by integer indices.
    Gather {
        /// The indexed axis of the table.
        axis: usize,
    },
    /// `base` plus `updates` added at the gathered positions (the adjoint of `gather`).
    ScatterAdd {
        /// The indexed axis of the base.
        axis: usize,
    },
    /// One value repeated (splat), or all values in row-major order.
    Constant {
        /// The values.
        values: Vec<f64>,
    },
    /// The index along `axis` at each position.
    Iota {
        /// The counted axis.
        axis: usize,
    },
    /// Uniform numbers in `[low, high)`, counter-based on `seed`.
    RandomUniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Stream seed.
        seed: u64,
    },
    /// Normal numbers, counter-based on `seed`.
    RandomNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Stream seed.
        seed: u64,
    },
    /// The sum of the operand over every rank of the world (data-parallel gradients);
    /// the identity with one rank.
    AllReduce,
    /// Every rank receives the operands of all `ranks` ranks concatenated along `axis`,
    /// in rank order (ZeRO's parameter gather).
    AllGather {
        /// The axis the pieces are concatenated along.
        axis: usize,
        /// The world's size, which the result's shape depends on.
        ranks: u64,
    },
    /// The sum over the `ranks` ranks, of which rank `r` keeps chunk `r` along `axis`
    /// (ZeRO's gradient reduction).
    ReduceScatter {
        /// The axis cut into one chunk per rank.
        axis: usize,
        /// The world's size.
        ranks: u64,
    },
    /// The expert-parallel exchange along `axis` (a loopback with one rank).
    AllToAll {
        /// The axis split into one chunk per rank.
        axis: usize,
    },
    /// Indices (`i64`) of the `k` largest elements along the last axis, largest first.
    TopK {
        /// How many indices per row.
        k: u64,
    },
    /// `y[t] = x[t] @ w[group[t]]`: each row multiplied by its group's matrix.
    GroupedMatMul,
    /// `dw[e] = Σ_{t: group[t] = e} x[t]ᵀ dy[t]`: the weight gradient of [`Op::GroupedMatMul`].
    GroupedMatMulWeightGrad {
        /// The number of groups (the result's first axis).
        groups: u64,
    },
    /// A named composite that expands to primitives ([`Composite::decompose`]).
    Composite(Composite),
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::Cast => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::MatMul => "matmul",
            Op::Reshape => "reshape",
            Op::Permute { .. } => "permute",
            Op::Broadcast { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Constant { .. } => "constant",
            Op::Iota { .. } => "iota",
            Op::RandomUniform { .. } => "random_uniform",
            Op::RandomNormal { .. } => "random_normal",
            Op::AllReduce => "all_reduce",
            Op::AllToAll { .. } => "all_to_all",
            Op::AllGather { .. } => "all_gather",
            Op::ReduceScatter { .. } => "reduce_scatter",
            Op::TopK { .. } => "top_k",
            Op::GroupedMatMul => "grouped_matmul",
            Op::GroupedMatMulWeightGrad { .. } => "grouped_matmul_weight_grad",
            Op::Composite(c) => c.name(),
        }
    }

    /// True if the result type cannot be derived from the operands and must be declared.
    pub fn needs_declared_type(&self) -> bool {
        matches!(
            self,
            Op::Cast
                | Op::Reshape
                | Op::Broadcast { .. }
                | Op::Constant { .. }
                | Op::Iota { .. }
                | Op::RandomUniform { .. }
                | Op::RandomNormal { .. }
        )
    }

    /// The attributes, in canonical order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let ints = |xs: &[usize]| Attr::Ints(xs.iter().map(|&x| x as i64).collect());
        let int = |x: u64| Attr::Int(x as i64);
        match self {
            Op::Reduce { axes, .. } => vec![("axes", ints(axes))],
            Op::Permute { perm } => vec![("perm", ints(perm))],
            Op::Broadcast { dims } => vec![("dims", ints(dims))],
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => vec![
                ("axis", int(*axis as u64)),
                ("start", int(*start)),
                ("end", int(*end)),
                ("step", int(*step)),
            ],
            Op::Concat { axis }
            | Op::Gather { axis }
            | Op::ScatterAdd { axis }
            | Op::AllToAll { axis }
            | Op::Iota { axis } => {
                vec![("axis", int(*axis as u64))]
            }
            Op::Pad {
                axis,
                low,
                high,
                value,
            } => vec![
                ("axis", int(*axis as u64)),
                ("low", int(*low)),
                ("high", int(*high)),
                ("value", Attr::Float(*value)),
            ],
            Op::Constant { values } if values.len() == 1 => vec![("value", Attr::Float(values[0]))],
            Op::Constant { values } => vec![("value", Attr::Floats(values.clone()))],
            Op::RandomUniform { low, high, seed } => vec![
                ("low", Attr::Float(*low)),
                ("high", Attr::Float(*high)),
                ("seed", int(*seed)),
            ],
            Op::RandomNormal { mean, std, seed } => vec![
                ("mean", Attr::Float(*mean)),
                ("std", Attr::Float(*std)),
                ("seed", int(*seed)),
            ],
            Op::TopK { k } => vec![("k", int(*k))],
            Op::AllGather { axis, ranks } | Op::ReduceScatter { axis, ranks } => {
                vec![("axis", int(*axis as u64)), ("ranks", int(*ranks))]
            }
            Op::GroupedMatMulWeightGrad { groups } => vec![("groups", int(*groups))],
            Op::Composite(c) => c.attrs(),
            Op::GroupedMatMul
            | Op::AllReduce
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Select
            | Op::Cast
            | Op::MatMul
            | Op::Reshape => vec![],
        }
    }

    /// Rebuilds an op from its name and attributes (the inverse of [`Op::name`] + [`Op::attrs`]).
    pub(crate) fn from_parts(name: &str, attrs: Vec<(String, Attr)>) -> Result<Op, String> {
        let mut a = AttrReader::new(name, attrs)?;
        let op = if let Some(u) = UnaryOp::from_name(name) {
            Op::Unary(u)
        } else if let Some(b) = BinaryOp::from_name(name) {
            Op::Binary(b)
        } else if let Some(c) = CompareOp::from_name(name) {
            Op::Compare(c)
        } else if let Some(r) = ReduceOp::from_name(name) {
            Op::Reduce {
                op: r,
                axes: a.indices("axes")?,
            }
        } else if let Some(c) = Composite::from_parts(name, &mut a)? {
            Op::Composite(c)
        } else {
            match name {
                "select" => Op::Select,
                "cast" => Op::Cast,
                "matmul" => Op::MatMul,
                "reshape" => Op::Reshape,
                "permute" => Op::Permute {
                    perm: a.indices("perm")?,
                },
                "broadcast" => Op::Broadcast {
                    dims: a.indices("dims")?,
                },
                "slice" => Op::Slice {
                    axis: a.index("axis")?,
                    start: a.index("start")? as u64,
                    end: a.index("end")? as u64,
                    step: a.index("step")? as u64,
                },
                "concat" => Op::Concat {
                    axis: a.index("axis")?,
                },
                "pad" => Op::Pad {
                    axis: a.index("axis")?,
                    low: a.index("low")? as u64,
                    high: a.index("high")? as u64,
                    value: a.float("value")?,
                },
                "gather" => Op::Gather {
                    axis: a.index("axis")?,
                },
                "scatter_add" => Op::ScatterAdd {
                    axis: a.index("axis")?,
                },
                "constant" => Op::Constant {
                    values: a.floats("value")?,
                },
                "iota" => Op::Iota {
                    axis: a.index("axis")?,
                },
                "all_reduce" => Op::AllReduce,
                "all_to_all" => Op::AllToAll {
                    axis: a.index("axis")?,
                },
                "all_gather" => Op::AllGather {
                    axis: a.index("axis")?,
                    ranks: a.index("ranks")? as u64,
                },
                "reduce_scatter" => Op::ReduceScatter {
                    axis: a.index("axis")?,
                    ranks: a.index("ranks")? as u64,
                },
                "top_k" => Op::TopK {
                    k: a.index("k")? as u64,
                },
                "grouped_matmul" => Op::GroupedMatMul,
                "grouped_matmul_weight_grad" => Op::GroupedMatMulWeightGrad {
                    groups: a.index("groups")? as u64,
                },
                "random_uniform" => Op::RandomUniform {
                    low: a.float("low")?,
                    high: a.float("high")?,
                    seed: a.index("seed")? as u64,
                },
                "random_normal" => Op::RandomNormal {
                    mean: a.float("mean")?,
                    std: a.float("std")?,
                    seed: a.index("seed")? as u64,
                },
                _ => return Err(format!("unknown op '{name}'")),
            }
        };
        a.finish()?;
        Ok(op)
    }

    /// The shape rule: the result type for operands of types `operands`. Ops for which
    /// [`Op::needs_declared_type`] holds take it from `declared` and check it.
    pub(crate) fn infer(
        &self,
        operands: &[&TensorType],
        declared: Option<&TensorType>,
    ) -> ShapeResult {
        let declared_ty = || {
            declared.ok_or_else(|| {
                format!(
                    "'{}' needs its result type written out (`%v: TYPE = ...`)",
                    self.name()
                )
            })
        };
        match self {
            Op::Unary(u) => elementwise::infer_unary(*u, operands),
            Op::Binary(b) => elementwise::infer_binary(*b, operands),
            Op::Compare(c) => elementwise::infer_compare(*c, operands),
            Op::Select => elementwise::infer_select(operands),
            Op::Cast => elementwise::infer_cast(operands, declared_ty()?),
            Op::Reduce { op, axes } => reduce::infer_reduce(*op, axes, operands),
            Op::MatMul => linalg::infer_matmul(operands),
            Op::Reshape => movement::infer_reshape(operands, declared_ty()?),
            Op::Permute { perm } => movement::infer_permute(perm, operands),
            Op::Broadcast { dims } => movement::infer_broadcast(dims, operands, declared_ty()?),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => movement::infer_slice(*axis, *start, *end, *step, operands),
            Op::Concat { axis } => movement::infer_concat(*axis, operands),
            Op::Pad {
                axis, low, high, ..
            } => movement::infer_pad(*axis, *low, *high, operands),
            Op::Gather { axis } => indexing::infer_gather(*axis, operands),
            Op::ScatterAdd { axis } => indexing::infer_scatter_add(*axis, operands),
            Op::Constant { values } => source::infer_constant(values, operands, declared_ty()?),
            Op::Iota { axis } => source::infer_iota(*axis, operands, declared_ty()?),
            Op::RandomUniform { .. } | Op::RandomNormal { .. } => {
                source::infer_random(self.name(), operands, declared_ty()?)
            }
            Op::AllReduce => collective::infer_all_reduce(operands),
            Op::AllToAll { axis } => collective::infer_all_to_all(*axis, operands),
            Op::AllGather { axis, ranks } => collective::infer_all_gather(*axis, *ranks, operands),
            Op::ReduceScatter { axis, ranks } => {
                collective::infer_reduce_scatter(*axis, *ranks, operands)
            }
            Op::TopK { k } => routing::infer_top_k(*k, operands),
            Op::GroupedMatMul => routing::infer_grouped_matmul(operands),
            Op::GroupedMatMulWeightGrad { groups } => {
                routing::infer_grouped_weight_grad(*groups, operands)
            }
            Op::Composite(c) => c.infer(operands),
        }
    }

    /// The gradient rule (vector-Jacobian product). Given operands `x`, the result `y`
    /// and the adjoint `g` of `y`, adds nodes to `b` that compute the adjoint of each
    /// operand for which `needs[i]` holds (others may be `None`). Returns `Ok(None)` for
    /// composites without a rule of their own ([`Composite::vjp`]), which are
    /// differentiated through their decomposition.
    pub(crate) fn vjp(
        &self,
        b: &mut Builder,
        x: &[ValueId],
        y: ValueId,
        g: ValueId,
        needs: &[bool],
    ) -> Result<Option<Vec<Option<ValueId>>>, String> {
        let one = |v: ValueId| vec![Some(v)];
        Ok(Some(match self {
            Op::Unary(u) => one((u.def().vjp)(b, unary::Vjp { x: x[0], y, g })),
            Op::Binary(op) => elementwise::vjp_binary(*op, b, (x[0], x[1]), y, g, needs),
            Op::Compare(_) => vec![None, None],
            Op::Select => elementwise::vjp_select(b, x[0], g, needs),
            Op::Cast => vec![elementwise::vjp_cast(b, x[0], g)],
            Op::Reduce { op, axes } => one(reduce::vjp_reduce(*op, axes, b, x[0], y, g)),
            Op::MatMul => linalg::vjp_matmul(b, (x[0], x[1]), g, needs),
            Op::Reshape => one(movement::vjp_reshape(b, x[0], g)),
            Op::Permute { perm } => one(movement::vjp_permute(perm, b, g)),
            Op::Broadcast { dims } => one(movement::vjp_broadcast(dims, b, x[0], g)),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => one(movement::vjp_slice(
                (*axis, *start, *end, *step),
                b,
                x[0],
                g,
            )?),
            Op::Concat { axis } => movement::vjp_concat(*axis, b, x, g)?,
            Op::Pad { axis, low, .. } => one(movement::vjp_pad(*axis, *low, b, x[0], g)?),
            Op::Gather { axis } => {
                vec![Some(indexing::vjp_gather(*axis, b, (x[0], x[1]), g)), None]
            }
            Op::ScatterAdd { axis } => indexing::vjp_scatter_add(*axis, b, x[1], g, needs),
            Op::AllReduce => one(collective::vjp_all_reduce(b, g)),
            Op::AllToAll { axis } => one(collective::vjp_all_to_all(*axis, b, g)),
            // Each is the other's adjoint: the gathered adjoint summed over ranks, each
            // keeping its own piece; the scattered adjoints gathered back.
            Op::AllGather { axis, ranks } => one(b.add(
                Op::ReduceScatter {
                    axis: *axis,
                    ranks: *ranks,
                },
                &[g],
            )),
            Op::ReduceScatter { axis, ranks } => one(b.add(
                Op::AllGather {
                    axis: *axis,
                    ranks: *ranks,
                },
                &[g],
            )),
            Op::TopK { .. } => vec![None],
            Op::GroupedMatMul => routing::vjp_grouped_matmul(b, (x[0], x[1], x[2]), g, needs)?,
            Op::GroupedMatMulWeightGrad { .. } => {
                routing::vjp_grouped_weight_grad(b, (x[0], x[1], x[2]), g, needs)
            }
            Op::Constant { .. }
            | Op::Iota { .. }
            | Op::RandomUniform { .. }
            | Op::RandomNormal { .. } => vec![],
            Op::Composite(c) => return Ok(c.vjp(b, x, y, g, needs)),
        }))
    }

    /// Every op name the text form knows, sorted (for "did you mean" hints and docs).
    pub fn all_names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = UnaryOp::ALL
            .iter()
            .map(|o| o.name())
            .chain(BinaryOp::ALL.iter().map(|o| o.name()))
            .chain(CompareOp::ALL.iter().map(|o| o.name()))
            .chain(ReduceOp::ALL.iter().map(|o| o.name()))
            .chain(Composite::NAMES.iter().copied())
            .chain([
                "select",
                "cast",
                "matmul",
                "reshape",
                "permute",
                "broadcast",
                "slice",
                "concat",
                "pad",
                "gather",
                "scatter_add",
                "constant",
                "iota",
                "random_uniform",
                "random_normal",
                "all_reduce",
                "all_to_all",
                "top_k",
                "grouped_matmul",
                "grouped_matmul_weight_grad",
            ])
            .collect();
        names.sort_unstable();
        names
    }
}
