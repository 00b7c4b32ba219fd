//! Composite ops: named patterns that users and importers think in (`softmax`,
//! `layer_norm`, `attention`). Each one is *defined* by its decomposition into
//! primitives below; the reference interpreter evaluates exactly that decomposition,
//! so a composite has one meaning. Later stages may keep a composite whole (to fuse
//! it) but must compute what its decomposition computes.

use super::attention::{self, AttentionPart};
use super::conv::Conv2d;
use super::elementwise::named_enum;
use super::paged_attention;
use super::row_grad;
use super::{expect_arity, BinaryOp, CompareOp, Op, ReduceOp, ShapeResult, UnaryOp};
use crate::ir::attr::{Attr, AttrReader};
use crate::ir::{Builder, TensorType, ValueId};

named_enum! {
    /// The kinds of composite, by name.
    CompositeKind {
        /// `max(x, 0)`.
        Relu = "relu",
        /// `1 / (1 + exp(-x))`.
        Sigmoid = "sigmoid",
        /// `x * sigmoid(x)`.
        Silu = "silu",
        /// Gaussian error linear unit.
        Gelu = "gelu",
        /// `exp(x - max) / sum(exp(x - max))` along an axis.
        Softmax = "softmax",
        /// `x - max - log(sum(exp(x - max)))` along an axis.
        LogSoftmax = "log_softmax",
        /// Normalise the last axis to zero mean and unit variance, then scale and shift.
        LayerNorm = "layer_norm",
        /// Divide the last axis by its root mean square, then scale.
        RmsNorm = "rms_norm",
        /// Mean over positions of `-log_softmax(logits)[label]`.
        CrossEntropy = "cross_entropy",
        /// `softmax(q kᵀ · scale [+ causal mask]) v`.
        Attention = "attention",
        /// Causal attention of new tokens over a paged KV cache and themselves.
        PagedAttention = "paged_attention",
        /// Attention's row log-sum-exp (see [`super::attention`]).
        AttentionLse = "attention_lse",
        /// Attention's adjoint of `q`.
        AttentionGradQ = "attention_grad_q",
        /// Attention's adjoint of `k`.
        AttentionGradK = "attention_grad_k",
        /// Attention's adjoint of `v`.
        AttentionGradV = "attention_grad_v",
        /// The adjoint of softmax's input from its result and adjoint (`row_grad.rs`).
        SoftmaxGrad = "softmax_grad",
        /// The adjoint of log_softmax's input from its result and adjoint.
        LogSoftmaxGrad = "log_softmax_grad",
        /// The adjoint of layer_norm's input `x`.
        LayerNormGrad = "layer_norm_grad",
        /// The adjoint of rms_norm's input `x`.
        RmsNormGrad = "rms_norm_grad",
        /// The adjoint of cross_entropy's logits.
        CrossEntropyGrad = "cross_entropy_grad",
        /// 2-D convolution (see [`super::conv`]).
        Conv = "conv",
    }
}

/// A composite op with its attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Composite {
    /// `relu %x`.
    Relu,
    /// `sigmoid %x`.
    Sigmoid,
    /// `silu %x`.
    Silu,
    /// `gelu %x {approximate = none|tanh}`.
    Gelu {
        /// The tanh approximation instead of the exact erf form.
        tanh: bool,
    },
    /// `softmax %x {axis}`.
    Softmax {
        /// The normalised axis.
        axis: usize,
    },
    /// `log_softmax %x {axis}`.
    LogSoftmax {
        /// The normalised axis.
        axis: usize,
    },
    /// `layer_norm %x, %gamma, %beta {eps}` over the last axis.
    LayerNorm {
        /// Added to the variance.
        eps: f64,
    },
    /// `rms_norm %x, %gamma {eps}` over the last axis.
    RmsNorm {
        /// Added to the mean square.
        eps: f64,
    },
    /// `cross_entropy %logits, %labels`: logits `[..., C]`, integer labels `[...]`; scalar mean.
    /// Labels pick their class by comparison with class ids (a one-hot mask), so a label
    /// outside `0..C` picks nothing and contributes 0; loaders validate labels instead.
    CrossEntropy,
    /// `attention %q, %k, %v {causal, scale}`: `[..., Tq, D]`, `[..., Tk, D]`, `[..., Tk, Dv]`.
    /// The causal mask lets query `i` see keys `j <= i`.
    Attention {
        /// Mask out keys after the query position.
        causal: bool,
        /// Multiplies the scores (usually `1/sqrt(D)`).
        scale: f64,
    },
    /// `paged_attention %q, %k, %v, %cache_k, %cache_v, %block_table, %past_len {scale}`:
    /// a decode step's attention over a paged KV cache (see [`super::paged_attention`]).
    PagedAttention {
        /// Multiplies the scores.
        scale: f64,
    },
    /// A piece of attention's backward pass (`attention_lse`, `attention_grad_q`, ...;
    /// see [`super::attention`]), with the attributes of the attention it belongs to.
    AttentionGrad {
        /// Which piece.
        part: AttentionPart,
        /// The attention's causal mask.
        causal: bool,
        /// The attention's score scale.
        scale: f64,
    },
    // Row gradients, defined in `row_grad.rs`.
    /// `softmax_grad %y, %dy {axis}`: `y ∘ (dy − Σ_axis dy∘y)`.
    SoftmaxGrad {
        /// The normalised axis.
        axis: usize,
    },
    /// `log_softmax_grad %y, %dy {axis}`: `dy − exp(y) ∘ Σ_axis dy`.
    LogSoftmaxGrad {
        /// The normalised axis.
        axis: usize,
    },
    /// `layer_norm_grad %x, %gamma, %dy {eps}`: the adjoint of `x`.
    LayerNormGrad {
        /// Added to the variance.
        eps: f64,
    },
    /// `rms_norm_grad %x, %gamma, %dy {eps}`: the adjoint of `x`.
    RmsNormGrad {
        /// Added to the mean square.
        eps: f64,
    },
    /// `cross_entropy_grad %logits, %labels, %dloss`: the adjoint of the logits.
    CrossEntropyGrad,
    /// `conv %x, %w {strides, pads, dilations, groups}`: 2-D convolution, NCHW.
    Conv(Conv2d),
}

impl Composite {
    /// Every composite's name.
    pub const NAMES: &'static [&'static str] = &[
        "relu",
        "sigmoid",
        "silu",
        "gelu",
        "softmax",
        "log_softmax",
        "layer_norm",
        "rms_norm",
        "cross_entropy",
        "attention",
        "paged_attention",
        "attention_lse",
        "attention_grad_q",
        "attention_grad_k",
        "attention_grad_v",
        "softmax_grad",
        "log_softmax_grad",
        "layer_norm_grad",
        "rms_norm_grad",
        "cross_entropy_grad",
        "conv",
    ];

    /// The kind of this composite.
    pub fn kind(&self) -> CompositeKind {
        match self {
            Composite::Relu => CompositeKind::Relu,
            Composite::Sigmoid => CompositeKind::Sigmoid,
            Composite::Silu => CompositeKind::Silu,
            Composite::Gelu { .. } => CompositeKind::Gelu,
            Composite::Softmax { .. } => CompositeKind::Softmax,
            Composite::LogSoftmax { .. } => CompositeKind::LogSoftmax,
            Composite::LayerNorm { .. } => CompositeKind::LayerNorm,
            Composite::RmsNorm { .. } => CompositeKind::RmsNorm,
            Composite::CrossEntropy => CompositeKind::CrossEntropy,
            Composite::Attention { .. } => CompositeKind::Attention,
            Composite::PagedAttention { .. } => CompositeKind::PagedAttention,
            Composite::AttentionGrad { part, .. } => match part {
                AttentionPart::Lse => CompositeKind::AttentionLse,
                AttentionPart::GradQ => CompositeKind::AttentionGradQ,
                AttentionPart::GradK => CompositeKind::AttentionGradK,
                AttentionPart::GradV => CompositeKind::AttentionGradV,
            },
            Composite::SoftmaxGrad { .. } => CompositeKind::SoftmaxGrad,
            Composite::LogSoftmaxGrad { .. } => CompositeKind::LogSoftmaxGrad,
            Composite::LayerNormGrad { .. } => CompositeKind::LayerNormGrad,
            Composite::RmsNormGrad { .. } => CompositeKind::RmsNormGrad,
            Composite::CrossEntropyGrad => CompositeKind::CrossEntropyGrad,
            Composite::Conv(_) => CompositeKind::Conv,
        }
    }

    /// The name in the text form.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// True for composites the optimiser keeps whole, so no rewrite looks inside them
    /// and none is expanded before it: `paged_attention`, whose expansion gathers every
    /// cached block into a copy (what a backend that keeps it whole avoids), and `conv`,
    /// whose expansion is one strided copy and one small product per kernel tap; no
    /// template would find either again.
    pub fn stays_whole(&self) -> bool {
        matches!(self, Composite::PagedAttention { .. } | Composite::Conv(_))
    }

    /// True for the row composites (softmax, log_softmax, layer_norm, rms_norm,
    /// cross_entropy and their gradients) when they work along the last axis of their
    /// first operand, of type `first`: a backend can run them a row at a time.
    pub fn is_row_op_along_last(&self, first: &TensorType) -> bool {
        match self {
            Composite::Softmax { axis }
            | Composite::LogSoftmax { axis }
            | Composite::SoftmaxGrad { axis }
            | Composite::LogSoftmaxGrad { axis } => *axis + 1 == first.rank(),
            Composite::LayerNorm { .. }
            | Composite::RmsNorm { .. }
            | Composite::CrossEntropy
            | Composite::LayerNormGrad { .. }
            | Composite::RmsNormGrad { .. }
            | Composite::CrossEntropyGrad => true,
            Composite::Relu
            | Composite::Sigmoid
            | Composite::Silu
            | Composite::Gelu { .. }
            | Composite::Attention { .. }
            | Composite::PagedAttention { .. }
            | Composite::AttentionGrad { .. }
            | Composite::Conv(_) => false,
        }
    }

    pub(super) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        match self {
            Composite::Gelu { tanh } => {
                vec![(
                    "approximate",
                    Attr::Word(if *tanh { "tanh" } else { "none" }.into()),
                )]
            }
            Composite::Softmax { axis }
            | Composite::LogSoftmax { axis }
            | Composite::SoftmaxGrad { axis }
            | Composite::LogSoftmaxGrad { axis } => {
                vec![("axis", Attr::Int(*axis as i64))]
            }
            Composite::LayerNorm { eps }
            | Composite::RmsNorm { eps }
            | Composite::LayerNormGrad { eps }
            | Composite::RmsNormGrad { eps } => {
                vec![("eps", Attr::Float(*eps))]
            }
            Composite::Attention { causal, scale }
            | Composite::AttentionGrad { causal, scale, .. } => {
                vec![
                    ("causal", Attr::Bool(*causal)),
                    ("scale", Attr::Float(*scale)),
                ]
            }
            Composite::PagedAttention { scale } => vec![("scale", Attr::Float(*scale))],
            Composite::Conv(c) => {
                let ints = |v: &[u64]| Attr::Ints(v.iter().map(|&x| x as i64).collect());
                vec![
                    ("strides", ints(&c.strides)),
                    ("pads", ints(&c.pads)),
                    ("dilations", ints(&c.dilations)),
                    ("groups", Attr::Int(c.groups as i64)),
                ]
            }
            Composite::Relu
            | Composite::Sigmoid
            | Composite::Silu
            | Composite::CrossEntropy
            | Composite::CrossEntropyGrad => vec![],
        }
    }

    pub(super) fn from_parts(name: &str, a: &mut AttrReader) -> Result<Option<Composite>, String> {
        let Some(kind) = CompositeKind::from_name(name) else {
            return Ok(None);
        };
        Ok(Some(match kind {
            CompositeKind::Relu => Composite::Relu,
            CompositeKind::Sigmoid => Composite::Sigmoid,
            CompositeKind::Silu => Composite::Silu,
            CompositeKind::Gelu => Composite::Gelu {
                tanh: a.word("approximate", &["none", "tanh"])? == "tanh",
            },
            CompositeKind::Softmax => Composite::Softmax {
                axis: a.index("axis")?,
            },
            CompositeKind::LogSoftmax => Composite::LogSoftmax {
                axis: a.index("axis")?,
            },
            CompositeKind::LayerNorm => Composite::LayerNorm {
                eps: a.float("eps")?,
            },
            CompositeKind::RmsNorm => Composite::RmsNorm {
                eps: a.float("eps")?,
            },
            CompositeKind::CrossEntropy => Composite::CrossEntropy,
            CompositeKind::Attention => Composite::Attention {
                causal: a.bool("causal")?,
                scale: a.float("scale")?,
            },
            CompositeKind::PagedAttention => Composite::PagedAttention {
                scale: a.float("scale")?,
            },
            CompositeKind::AttentionLse
            | CompositeKind::AttentionGradQ
            | CompositeKind::AttentionGradK
            | CompositeKind::AttentionGradV => {
                let part = AttentionPart::ALL
                    .into_iter()
                    .find(|p| p.name() == name)
                    .expect("every attention part has a kind");
                Composite::AttentionGrad {
                    part,
                    causal: a.bool("causal")?,
                    scale: a.float("scale")?,
                }
            }
            CompositeKind::SoftmaxGrad => Composite::SoftmaxGrad {
                axis: a.index("axis")?,
            },
            CompositeKind::LogSoftmaxGrad => Composite::LogSoftmaxGrad {
                axis: a.index("axis")?,
            },
            CompositeKind::LayerNormGrad => Composite::LayerNormGrad {
                eps: a.float("eps")?,
            },
            CompositeKind::RmsNormGrad => Composite::RmsNormGrad {
                eps: a.float("eps")?,
            },
            CompositeKind::CrossEntropyGrad => Composite::CrossEntropyGrad,
            CompositeKind::Conv => {
                let mut fixed = |key: &str, n: usize| -> Result<Vec<u64>, String> {
                    let v = a.indices(key)?;
                    if v.len() != n {
                        return Err(format!(
                            "attribute '{key}' of 'conv' needs {n} values, found {}",
                            v.len()
                        ));
                    }
                    Ok(v.into_iter().map(|x| x as u64).collect())
                };
                let strides = fixed("strides", 2)?;
                let pads = fixed("pads", 4)?;
                let dilations = fixed("dilations", 2)?;
                Composite::Conv(Conv2d {
                    strides: [strides[0], strides[1]],
                    pads: [pads[0], pads[1], pads[2], pads[3]],
                    dilations: [dilations[0], dilations[1]],
                    groups: a.index("groups")? as u64,
                })
            }
        }))
    }

    pub(super) fn infer(&self, x: &[&TensorType]) -> ShapeResult {
        let float = |t: &TensorType| {
            if t.dtype.is_float() {
                Ok(())
            } else {
                Err(format!("'{}' needs float operands, found {t}", self.name()))
            }
        };
        match self {
            Composite::Relu | Composite::Sigmoid | Composite::Silu | Composite::Gelu { .. } => {
                expect_arity(x, 1)?;
                float(x[0])?;
                Ok(x[0].clone())
            }
            Composite::Softmax { axis } | Composite::LogSoftmax { axis } => {
                expect_arity(x, 1)?;
                float(x[0])?;
                if *axis >= x[0].rank() {
                    return Err(format!("axis {axis} is out of range for {}", x[0]));
                }
                Ok(x[0].clone())
            }
            Composite::LayerNorm { .. } | Composite::RmsNorm { .. } => {
                let n = if matches!(self, Composite::LayerNorm { .. }) {
                    3
                } else {
                    2
                };
                expect_arity(x, n)?;
                float(x[0])?;
                let last = x[0]
                    .dims()
                    .last()
                    .ok_or_else(|| format!("'{}' needs rank >= 1, found {}", self.name(), x[0]))?;
                let want = TensorType::new(x[0].dtype, crate::ir::Shape(vec![last.clone()]));
                for t in &x[1..] {
                    if **t != want {
                        return Err(format!(
                            "'{}' scale and shift must be {want}, found {t}",
                            self.name()
                        ));
                    }
                }
                Ok(x[0].clone())
            }
            Composite::CrossEntropy => {
                expect_arity(x, 2)?;
                let (logits, labels) = (x[0], x[1]);
                float(logits)?;
                let r = logits.rank();
                if r == 0 || !labels.dtype.is_int() || labels.dims() != &logits.dims()[..r - 1] {
                    return Err(format!(
                        "'cross_entropy' needs logits [..., C] and integer labels [...], found {logits} and {labels}"
                    ));
                }
                Ok(TensorType::scalar(logits.dtype))
            }
            Composite::Attention { .. } => attention::infer_attention(x),
            Composite::PagedAttention { .. } => paged_attention::infer(x),
            Composite::Conv(c) => {
                expect_arity(x, 2)?;
                c.infer(x[0], x[1])
            }
            Composite::AttentionGrad { part, .. } => attention::infer_part(*part, x),
            Composite::SoftmaxGrad { .. }
            | Composite::LogSoftmaxGrad { .. }
            | Composite::LayerNormGrad { .. }
            | Composite::RmsNormGrad { .. }
            | Composite::CrossEntropyGrad => row_grad::infer(self, x),
        }
    }

    /// Expands the composite applied to `x` into primitives added to `b`; returns the result.
    /// `x` must already satisfy [`Op::infer`] for this composite.
    pub fn decompose(&self, b: &mut Builder, x: &[ValueId]) -> ValueId {
        match self {
            Composite::Relu => {
                let zero = b.splat(0.0, b.ty(x[0]).clone());
                b.binary(BinaryOp::Max, x[0], zero)
            }
            Composite::Sigmoid => sigmoid(b, x[0]),
            Composite::Silu => {
                let s = sigmoid(b, x[0]);
                b.binary(BinaryOp::Mul, x[0], s)
            }
            Composite::Gelu { tanh } => gelu(b, x[0], *tanh),
            Composite::Softmax { axis } => softmax(b, x[0], *axis),
            Composite::LogSoftmax { axis } => log_softmax(b, x[0], *axis),
            Composite::LayerNorm { eps } => {
                let last = b.ty(x[0]).rank() - 1;
                let mean = b.reduce(ReduceOp::Mean, x[0], vec![last]);
                let mean = b.broadcast_back(mean, x[0], last);
                let centred = b.binary(BinaryOp::Sub, x[0], mean);
                let sq = b.binary(BinaryOp::Mul, centred, centred);
                let normed = scale_by_rsqrt_mean(b, centred, sq, *eps);
                let y = scale_last_axis(b, normed, x[1], BinaryOp::Mul);
                scale_last_axis(b, y, x[2], BinaryOp::Add)
            }
            Composite::RmsNorm { eps } => {
                let sq = b.binary(BinaryOp::Mul, x[0], x[0]);
                let normed = scale_by_rsqrt_mean(b, x[0], sq, *eps);
                scale_last_axis(b, normed, x[1], BinaryOp::Mul)
            }
            Composite::CrossEntropy => cross_entropy(b, x[0], x[1]),
            Composite::Attention { causal, scale } => {
                attention::decompose_attention(b, x, *causal, *scale)
            }
            Composite::AttentionGrad {
                part,
                causal,
                scale,
            } => attention::decompose_part(*part, b, x, *causal, *scale),
            Composite::PagedAttention { scale } => paged_attention::decompose(b, x, *scale),
            Composite::Conv(c) => c.decompose(b, x[0], x[1]),
            Composite::SoftmaxGrad { .. }
            | Composite::LogSoftmaxGrad { .. }
            | Composite::LayerNormGrad { .. }
            | Composite::RmsNormGrad { .. }
            | Composite::CrossEntropyGrad => row_grad::decompose(self, b, x),
        }
    }

    /// The gradient rule of a composite that has one (the forward row composites emit
    /// their gradient composites, see `row_grad.rs`; attention its backward pieces, see
    /// `attention.rs`); `None` for composites that are differentiated through their
    /// decomposition.
    pub(super) fn vjp(
        &self,
        b: &mut Builder,
        x: &[ValueId],
        y: ValueId,
        g: ValueId,
        needs: &[bool],
    ) -> Option<Vec<Option<ValueId>>> {
        match self {
            Composite::Attention { causal, scale } => {
                Some(attention::vjp_attention(b, x, y, g, needs, *causal, *scale))
            }
            _ => row_grad::vjp(self, b, x, y, g, needs),
        }
    }
}

fn sigmoid(b: &mut Builder, x: ValueId) -> ValueId {
    let neg = b.unary(UnaryOp::Neg, x);
    let e = b.unary(UnaryOp::Exp, neg);
    let d = b.binary_scalar(BinaryOp::Add, e, 1.0);
    b.unary(UnaryOp::Recip, d)
}

fn gelu(b: &mut Builder, x: ValueId, tanh: bool) -> ValueId {
    let inner = if tanh {
        // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
        let x2 = b.binary(BinaryOp::Mul, x, x);
        let x3 = b.binary(BinaryOp::Mul, x2, x);
        let c = b.binary_scalar(BinaryOp::Mul, x3, 0.044715);
        let s = b.binary(BinaryOp::Add, x, c);
        let s = b.binary_scalar(BinaryOp::Mul, s, (2.0 / std::f64::consts::PI).sqrt());
        b.unary(UnaryOp::Tanh, s)
    } else {
        let s = b.binary_scalar(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2);
        b.unary(UnaryOp::Erf, s)
    };
    let one_plus = b.binary_scalar(BinaryOp::Add, inner, 1.0);
    let half_x = b.binary_scalar(BinaryOp::Mul, x, 0.5);
    b.binary(BinaryOp::Mul, half_x, one_plus)
}

pub(super) fn softmax(b: &mut Builder, x: ValueId, axis: usize) -> ValueId {
    let shifted = shift_by_max(b, x, axis);
    let e = b.unary(UnaryOp::Exp, shifted);
    let s = b.reduce(ReduceOp::Sum, e, vec![axis]);
    let s = b.broadcast_back(s, x, axis);
    b.binary(BinaryOp::Div, e, s)
}

fn shift_by_max(b: &mut Builder, x: ValueId, axis: usize) -> ValueId {
    let m = b.reduce(ReduceOp::Max, x, vec![axis]);
    let m = b.broadcast_back(m, x, axis);
    b.binary(BinaryOp::Sub, x, m)
}

fn log_softmax(b: &mut Builder, x: ValueId, axis: usize) -> ValueId {
    let shifted = shift_by_max(b, x, axis);
    let e = b.unary(UnaryOp::Exp, shifted);
    let s = b.reduce(ReduceOp::Sum, e, vec![axis]);
    let l = b.unary(UnaryOp::Log, s);
    let l = b.broadcast_back(l, x, axis);
    b.binary(BinaryOp::Sub, shifted, l)
}

/// `x * rsqrt(mean_last(sq) + eps)`, the shared core of layer_norm and rms_norm.
fn scale_by_rsqrt_mean(b: &mut Builder, x: ValueId, sq: ValueId, eps: f64) -> ValueId {
    let r = rsqrt_mean(b, sq, eps);
    b.binary(BinaryOp::Mul, x, r)
}

/// `rsqrt(mean_last(sq) + eps)`, broadcast back over the last axis of `sq`.
pub(super) fn rsqrt_mean(b: &mut Builder, sq: ValueId, eps: f64) -> ValueId {
    let last = b.ty(sq).rank() - 1;
    let ms = b.reduce(ReduceOp::Mean, sq, vec![last]);
    let ms = b.binary_scalar(BinaryOp::Add, ms, eps);
    let r = b.unary(UnaryOp::Rsqrt, ms);
    b.broadcast_back(r, sq, last)
}

/// `x op broadcast(v)` for `v` of shape `[last dim of x]`.
fn scale_last_axis(b: &mut Builder, x: ValueId, v: ValueId, op: BinaryOp) -> ValueId {
    let ty = b.ty(x).clone();
    let v = b.broadcast(v, vec![ty.rank() - 1], ty);
    b.binary(op, x, v)
}

fn cross_entropy(b: &mut Builder, logits: ValueId, labels: ValueId) -> ValueId {
    let lt = b.ty(logits).clone();
    let last = lt.rank() - 1;
    let logp = log_softmax(b, logits, last);
    let label_ty = b.ty(labels).dtype;
    let classes = b.add_typed(Op::Iota { axis: last }, &[], lt.with_dtype(label_ty));
    let labels = b.broadcast_back(labels, logits, last);
    let hit = b.compare(CompareOp::Eq, classes, labels);
    let zero = b.splat(0.0, lt.clone());
    let picked = b.add(Op::Select, &[hit, logp, zero]);
    let picked = b.reduce(ReduceOp::Sum, picked, vec![last]);
    let mean = b.reduce(ReduceOp::Mean, picked, (0..last).collect());
    b.unary(UnaryOp::Neg, mean)
}
