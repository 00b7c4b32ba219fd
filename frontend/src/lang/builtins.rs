//! Built-in functions: math, activations, normalisation, losses, attention, RoPE,
//! top-k routing, reductions and tensor plumbing. Each lowers to IR primitives or
//! composites after checking its arguments with messages in the language's terms.

use super::ast::Arg;
use super::error::{LangError, LangResult};
use super::lower::{dim_of, Lowerer};
use super::shapes::broadcast_shapes;
use super::value::{Env, Val};
use smelt_compiler::ir::ops::conv::Conv2d;
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, Composite, ReduceOp, UnaryOp};
use smelt_compiler::ir::text::Pos;
use smelt_compiler::ir::{DType, Dim, Op, Shape, TensorType, ValueId};

/// The built-ins other than the unary math functions, with their signatures, as
/// documented in `docs/language.md`. The unary math functions (`exp(x)`, `erf(x)`,
/// ...) are the IR's unary ops, named as in the text form (see [`unary_builtin`]).
pub const OTHER_BUILTINS: &[(&str, &str)] = &[
    ("relu", "relu(x)"),
    ("sigmoid", "sigmoid(x)"),
    ("silu", "silu(x)"),
    ("gelu", "gelu(x, approximate=\"none\"|\"tanh\")"),
    ("softmax", "softmax(x, axis=-1)"),
    ("log_softmax", "log_softmax(x, axis=-1)"),
    ("layer_norm", "layer_norm(x, gain, bias, eps=1e-5)"),
    ("rms_norm", "rms_norm(x, gain, eps=1e-6)"),
    ("cross_entropy", "cross_entropy(logits, labels)"),
    (
        "attention",
        "attention(q, k, v, causal=false, scale=1/sqrt(D))",
    ),
    ("causal_mask", "causal_mask(scores)"),
    ("embedding", "embedding(table, ids)"),
    ("gather", "gather(x, ids, axis=0)"),
    ("all_to_all", "all_to_all(x, axis=0)"),
    ("all_reduce", "all_reduce(x)"),
    ("all_gather", "all_gather(x, axis=0, ranks=1)"),
    (
        "conv2d",
        "conv2d(x, w, stride=1, padding=0, dilation=1, groups=1)",
    ),
    ("reduce_scatter", "reduce_scatter(x, axis=0, ranks=1)"),
    ("rope", "rope(x, base=10000.0)"),
    ("top_k_mask", "top_k_mask(x, k)"),
    ("top_k", "top_k(x, k)"),
    ("take_along", "take_along(x, ids)"),
    ("grouped_matmul", "grouped_matmul(x, w, groups)"),
    ("sum", "sum(x, axis=all, keepdim=false)"),
    ("mean", "mean(x, axis=all, keepdim=false)"),
    ("max", "max(x, axis=all, keepdim=false)"),
    ("maximum", "maximum(a, b)"),
    ("minimum", "minimum(a, b)"),
    ("pow", "pow(a, b)"),
    ("where", "where(cond, a, b)"),
    ("reshape", "reshape(x, [dims])"),
    ("permute", "permute(x, [axes])"),
    ("transpose", "transpose(x, a=-2, b=-1)"),
    ("concat", "concat([xs], axis=-1)"),
    ("cast", "cast(x, dtype)"),
    ("broadcast_to", "broadcast_to(x, [dims])"),
    ("arange", "arange(n, dtype=i32)"),
    ("zeros", "zeros([dims], dtype=f32)"),
    ("ones", "ones([dims], dtype=f32)"),
];

/// The unary op that built-in `name` applies, if it is one. Every unary op of the IR
/// is a built-in under its own name, except `neg` (written `-x`).
fn unary_builtin(name: &str) -> Option<UnaryOp> {
    UnaryOp::from_name(name).filter(|op| *op != UnaryOp::Neg)
}

/// True if `name` is a built-in function.
pub fn is_builtin(name: &str) -> bool {
    unary_builtin(name).is_some() || OTHER_BUILTINS.iter().any(|(n, _)| *n == name)
}

/// Every built-in's name.
pub fn builtin_names() -> Vec<String> {
    let unary = UnaryOp::ALL.iter().map(|op| op.name());
    unary
        .chain(OTHER_BUILTINS.iter().map(|(n, _)| *n))
        .filter(|n| is_builtin(n))
        .map(str::to_string)
        .collect()
}

fn signature(name: &str) -> String {
    if unary_builtin(name).is_some() {
        return format!("{name}(x)");
    }
    OTHER_BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or_else(String::new, |(_, s)| s.to_string())
}

/// Evaluated arguments of one built-in call.
struct CallArgs {
    func: String,
    pos: Pos,
    positional: Vec<(Val, Pos)>,
    keywords: Vec<(String, Val, Pos)>,
}

impl CallArgs {
    fn err(&self, pos: Pos, msg: impl std::fmt::Display) -> LangError {
        LangError::new(
            pos,
            format!("{}: {msg} (usage: {})", self.func, signature(&self.func)),
        )
    }

    /// Checks the positional count and that every keyword is one of `keywords`.
    fn shape(&self, min: usize, max: usize, keywords: &[&str]) -> LangResult<()> {
        let n = self.positional.len();
        if n < min || n > max {
            let want = if min == max {
                min.to_string()
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(
                self.pos,
                format!("expected {want} positional argument(s), found {n}"),
            ));
        }
        for (k, _, p) in &self.keywords {
            if !keywords.contains(&k.as_str()) {
                return Err(self.err(*p, format!("unknown keyword argument '{k}'")));
            }
        }
        Ok(())
    }

    fn at(&self, i: usize) -> (&Val, Pos) {
        let (v, p) = &self.positional[i];
        (v, *p)
    }

    fn tensor(&self, i: usize) -> LangResult<ValueId> {
        match self.at(i) {
            (Val::Tensor(id), _) => Ok(*id),
            (other, p) => Err(self.err(
                p,
                format!(
                    "argument {} must be a tensor, found {}",
                    i + 1,
                    other.kind()
                ),
            )),
        }
    }

    fn keyword(&self, name: &str) -> Option<(&Val, Pos)> {
        self.keywords
            .iter()
            .find(|(k, _, _)| k == name)
            .map(|(_, v, p)| (v, *p))
    }

    fn int(&self, name: &str, default: i64) -> LangResult<i64> {
        match self.keyword(name) {
            None => Ok(default),
            Some((Val::Int(n), _)) => Ok(*n),
            Some((other, p)) => Err(self.err(
                p,
                format!("'{name}' must be an integer, found {}", other.kind()),
            )),
        }
    }

    fn float(&self, name: &str, default: f64) -> LangResult<f64> {
        match self.keyword(name) {
            None => Ok(default),
            Some((v, p)) => v.as_f64().ok_or_else(|| {
                self.err(p, format!("'{name}' must be a number, found {}", v.kind()))
            }),
        }
    }

    fn bool(&self, name: &str, default: bool) -> LangResult<bool> {
        match self.keyword(name) {
            None => Ok(default),
            Some((Val::Bool(b), _)) => Ok(*b),
            Some((other, p)) => Err(self.err(
                p,
                format!("'{name}' must be true or false, found {}", other.kind()),
            )),
        }
    }

    fn dtype(&self, name: &str, default: DType) -> LangResult<DType> {
        match self.keyword(name) {
            None => Ok(default),
            Some((Val::DType(d), _)) => Ok(*d),
            Some((other, p)) => Err(self.err(
                p,
                format!("'{name}' must be a dtype like f32, found {}", other.kind()),
            )),
        }
    }
}

impl<'p> Lowerer<'p> {
    /// Lowers a call of built-in `func`.
    pub(super) fn call_builtin(
        &mut self,
        env: &mut Env,
        func: &str,
        args: &[Arg],
        pos: Pos,
    ) -> LangResult<Val> {
        let mut call = CallArgs {
            func: func.to_string(),
            pos,
            positional: Vec::new(),
            keywords: Vec::new(),
        };
        for a in args {
            let v = self.eval(env, &a.value)?;
            match &a.name {
                Some(k) if call.keywords.iter().any(|(n, _, _)| n == k) => {
                    return Err(call.err(a.pos, format!("keyword argument '{k}' is given twice")))
                }
                Some(k) => call.keywords.push((k.clone(), v, a.pos)),
                None if !call.keywords.is_empty() => {
                    return Err(call.err(
                        a.pos,
                        "positional arguments must come before keyword arguments",
                    ))
                }
                None => call.positional.push((v, a.pos)),
            }
        }
        let v = self.builtin(&call)?;
        self.mark(pos);
        Ok(v)
    }

    fn builtin(&mut self, c: &CallArgs) -> LangResult<Val> {
        let pos = c.pos;
        if let Some(op) = unary_builtin(&c.func) {
            c.shape(1, 1, &[])?;
            if let Some(x) = c.at(0).0.as_f64() {
                return Ok(Val::Float(op.eval(x)));
            }
            let x = c.tensor(0)?;
            let ty = self.ty(x);
            if !(ty.dtype.is_float() || (op.accepts_ints() && ty.dtype.is_int())) {
                return Err(c.err(pos, format!("needs a float tensor, found {ty}")));
            }
            return self.node(Op::Unary(op), &[x], None, pos).map(Val::Tensor);
        }
        let composite = |me: &mut Self, comp: Composite, operands: &[ValueId]| {
            me.node(Op::Composite(comp), operands, None, pos)
                .map(Val::Tensor)
        };
        match c.func.as_str() {
            "relu" | "sigmoid" | "silu" | "gelu" => {
                let kws: &[&str] = if c.func == "gelu" {
                    &["approximate"]
                } else {
                    &[]
                };
                c.shape(1, 1, kws)?;
                let x = self.float_tensor(c, 0)?;
                let comp = match c.func.as_str() {
                    "relu" => Composite::Relu,
                    "sigmoid" => Composite::Sigmoid,
                    "silu" => Composite::Silu,
                    _ => Composite::Gelu {
                        tanh: match c.keyword("approximate") {
                            None => false,
                            Some((Val::Str(s), _)) if s == "none" => false,
                            Some((Val::Str(s), _)) if s == "tanh" => true,
                            Some((_, p)) => {
                                return Err(c.err(p, "'approximate' must be \"none\" or \"tanh\""))
                            }
                        },
                    },
                };
                composite(self, comp, &[x])
            }
            "softmax" | "log_softmax" => {
                c.shape(1, 1, &["axis"])?;
                let x = self.float_tensor(c, 0)?;
                let axis = self.axis(&self.ty(x), c.int("axis", -1)?, pos)?;
                let comp = if c.func == "softmax" {
                    Composite::Softmax { axis }
                } else {
                    Composite::LogSoftmax { axis }
                };
                composite(self, comp, &[x])
            }
            "layer_norm" | "rms_norm" => {
                let ln = c.func == "layer_norm";
                let n = if ln { 3 } else { 2 };
                c.shape(n, n, &["eps"])?;
                let x = self.float_tensor(c, 0)?;
                let ty = self.ty(x);
                let Some(last) = ty.dims().last() else {
                    return Err(c.err(pos, format!("needs a tensor of rank >= 1, found {ty}")));
                };
                let want = TensorType::new(ty.dtype, Shape(vec![last.clone()]));
                let mut operands = vec![x];
                for i in 1..n {
                    let g = c.tensor(i)?;
                    let gt = self.ty(g);
                    if gt != want {
                        let what = if i == 1 { "gain" } else { "bias" };
                        return Err(c.err(
                            c.at(i).1,
                            format!(
                                "the {what} must be {want} (the last axis of {ty}), found {gt}"
                            ),
                        ));
                    }
                    operands.push(g);
                }
                let eps = c.float("eps", if ln { 1e-5 } else { 1e-6 })?;
                let comp = if ln {
                    Composite::LayerNorm { eps }
                } else {
                    Composite::RmsNorm { eps }
                };
                composite(self, comp, &operands)
            }
            "cross_entropy" => {
                c.shape(2, 2, &[])?;
                let logits = self.float_tensor(c, 0)?;
                let labels = c.tensor(1)?;
                let (lt, yt) = (self.ty(logits), self.ty(labels));
                let r = lt.rank();
                if r == 0 {
                    return Err(c.err(
                        c.at(0).1,
                        format!("logits must have a class axis, found {lt}"),
                    ));
                }
                let want = Shape(lt.dims()[..r - 1].to_vec());
                if !yt.dtype.is_int() || yt.shape != want {
                    return Err(c.err(
                        c.at(1).1,
                        format!(
                            "labels for logits {lt} must be integers of shape {want}, found {yt}"
                        ),
                    ));
                }
                composite(self, Composite::CrossEntropy, &[logits, labels])
            }
            "attention" => {
                c.shape(3, 3, &["causal", "scale"])?;
                let (q, k, v) = (
                    self.float_tensor(c, 0)?,
                    self.float_tensor(c, 1)?,
                    self.float_tensor(c, 2)?,
                );
                let qt = self.ty(q);
                let causal = c.bool("causal", false)?;
                let scale = match c.keyword("scale") {
                    Some(_) => c.float("scale", 1.0)?,
                    None => {
                        let d = qt.dims().last().and_then(Dim::as_static).filter(|&d| d > 0).ok_or_else(|| {
                            c.err(pos, format!("the default scale 1/sqrt(D) needs a static last axis, found {qt}; pass scale="))
                        })?;
                        1.0 / (d as f64).sqrt()
                    }
                };
                if self.mode.caches() {
                    return self
                        .cached_attention([q, k, v], causal, scale, pos)
                        .map(Val::Tensor);
                }
                // Grouped-query attention: fewer key/value heads than query heads.
                let (k, v) = match qt.rank() {
                    r if r >= 3 && self.ty(k).rank() == r => {
                        let heads = qt.dims()[r - 3].clone();
                        (
                            self.repeat_heads(k, &heads, pos)?,
                            self.repeat_heads(v, &heads, pos)?,
                        )
                    }
                    _ => (k, v),
                };
                composite(self, Composite::Attention { causal, scale }, &[q, k, v])
            }
            "causal_mask" => {
                c.shape(1, 1, &[])?;
                let s = self.float_tensor(c, 0)?;
                Ok(Val::Tensor(self.causal_mask(s, c)?))
            }
            "embedding" | "gather" => {
                let is_emb = c.func == "embedding";
                c.shape(2, 2, if is_emb { &[] } else { &["axis"] })?;
                let table = c.tensor(0)?;
                let ids = c.tensor(1)?;
                let (tt, it) = (self.ty(table), self.ty(ids));
                if is_emb && tt.rank() != 2 {
                    return Err(c.err(
                        c.at(0).1,
                        format!("the table must be [rows, dim], found {tt}"),
                    ));
                }
                if !it.dtype.is_int() {
                    return Err(c.err(c.at(1).1, format!("ids must be integers, found {it}")));
                }
                let axis = self.axis(&tt, c.int("axis", 0)?, pos)?;
                self.node(Op::Gather { axis }, &[table, ids], None, pos)
                    .map(Val::Tensor)
            }
            "all_reduce" => {
                c.shape(1, 1, &[])?;
                let x = self.float_tensor(c, 0)?;
                self.node(Op::AllReduce, &[x], None, pos).map(Val::Tensor)
            }
            "all_to_all" => {
                c.shape(1, 1, &["axis"])?;
                let x = c.tensor(0)?;
                let axis = self.axis(&self.ty(x), c.int("axis", 0)?, pos)?;
                self.node(Op::AllToAll { axis }, &[x], None, pos)
                    .map(Val::Tensor)
            }
            "conv2d" => {
                c.shape(2, 2, &["stride", "padding", "dilation", "groups"])?;
                let (x, w) = (self.float_tensor(c, 0)?, self.float_tensor(c, 1)?);
                let at_least = |name: &str, default: i64, least: i64| -> LangResult<u64> {
                    let v = c.int(name, default)?;
                    if v < least {
                        return Err(
                            c.err(pos, format!("'{name}' must be at least {least}, found {v}"))
                        );
                    }
                    Ok(v as u64)
                };
                let (stride, padding) = (at_least("stride", 1, 1)?, at_least("padding", 0, 0)?);
                let conv = Conv2d {
                    strides: [stride; 2],
                    pads: [padding; 4],
                    dilations: [at_least("dilation", 1, 1)?; 2],
                    groups: at_least("groups", 1, 1)?,
                };
                self.node(Op::Composite(Composite::Conv(conv)), &[x, w], None, pos)
                    .map(Val::Tensor)
            }
            "all_gather" | "reduce_scatter" => {
                c.shape(1, 1, &["axis", "ranks"])?;
                let x = self.float_tensor(c, 0)?;
                let axis = self.axis(&self.ty(x), c.int("axis", 0)?, pos)?;
                let ranks = c.int("ranks", 1)?;
                if ranks < 1 {
                    return Err(c.err(pos, format!("'ranks' must be at least 1, found {ranks}")));
                }
                let ranks = ranks as u64;
                let op = if c.func == "all_gather" {
                    Op::AllGather { axis, ranks }
                } else {
                    Op::ReduceScatter { axis, ranks }
                };
                self.node(op, &[x], None, pos).map(Val::Tensor)
            }
            "rope" => {
                c.shape(1, 1, &["base"])?;
                let x = self.float_tensor(c, 0)?;
                let base = c.float("base", 10000.0)?;
                Ok(Val::Tensor(self.rope(x, base, c)?))
            }
            "top_k_mask" => {
                c.shape(2, 2, &[])?;
                let x = self.float_tensor(c, 0)?;
                let k = match c.at(1) {
                    (Val::Int(k), _) => *k,
                    (other, p) => {
                        return Err(
                            c.err(p, format!("k must be an integer, found {}", other.kind()))
                        )
                    }
                };
                Ok(Val::Tensor(self.top_k_mask(x, k, c)?))
            }
            "top_k" => {
                c.shape(2, 2, &[])?;
                let x = self.float_tensor(c, 0)?;
                let k = self.top_k_count(x, c)?;
                self.node(Op::TopK { k }, &[x], None, pos).map(Val::Tensor)
            }
            "take_along" => {
                c.shape(2, 2, &[])?;
                Ok(Val::Tensor(self.take_along(c)?))
            }
            "grouped_matmul" => {
                c.shape(3, 3, &[])?;
                let operands = self.grouped_operands(c)?;
                self.node(Op::GroupedMatMul, &operands, None, pos)
                    .map(Val::Tensor)
            }
            "sum" | "mean" | "max" => {
                c.shape(1, 1, &["axis", "keepdim"])?;
                let x = c.tensor(0)?;
                let op = match c.func.as_str() {
                    "sum" => ReduceOp::Sum,
                    "mean" => ReduceOp::Mean,
                    _ => ReduceOp::Max,
                };
                Ok(Val::Tensor(self.reduce(x, op, c)?))
            }
            "maximum" | "minimum" | "pow" => {
                c.shape(2, 2, &[])?;
                let op = match c.func.as_str() {
                    "maximum" => BinaryOp::Max,
                    "minimum" => BinaryOp::Min,
                    _ => BinaryOp::Pow,
                };
                let (a, b) = self.tensor_pair(c, 0, 1)?;
                self.broadcast_binary(op, a, b, pos).map(Val::Tensor)
            }
            "where" => {
                c.shape(3, 3, &[])?;
                let cond = c.tensor(0)?;
                let ct = self.ty(cond);
                if ct.dtype != DType::Bool {
                    return Err(c.err(
                        c.at(0).1,
                        format!("the condition must be bool (e.g. a < b), found {ct}"),
                    ));
                }
                let (a, b) = self.tensor_pair(c, 1, 2)?;
                let (at, bt) = (self.ty(a), self.ty(b));
                if at.dtype != bt.dtype {
                    return Err(c.err(
                        pos,
                        format!("both branches must have one dtype, found {at} and {bt}"),
                    ));
                }
                let shape = broadcast_shapes(&ct.shape, &at.shape)
                    .and_then(|s| broadcast_shapes(&s, &bt.shape))
                    .map_err(|m| c.err(pos, m))?;
                let cond = self.broadcast_to(cond, &shape, pos)?;
                let a = self.broadcast_to(a, &shape, pos)?;
                let b = self.broadcast_to(b, &shape, pos)?;
                self.node(Op::Select, &[cond, a, b], None, pos)
                    .map(Val::Tensor)
            }
            "reshape" => {
                c.shape(2, 2, &[])?;
                let x = c.tensor(0)?;
                let shape = self.reshape_target(x, c)?;
                Ok(Val::Tensor(self.reshape(x, shape, pos)?))
            }
            "broadcast_to" => {
                c.shape(2, 2, &[])?;
                let x = c.tensor(0)?;
                let shape = Shape(self.dim_list(c, 1)?);
                let xt = self.ty(x);
                match broadcast_shapes(&xt.shape, &shape) {
                    Ok(s) if s == shape => {}
                    _ => return Err(c.err(pos, format!("{xt} does not broadcast to {shape}"))),
                }
                self.broadcast_to(x, &shape, pos).map(Val::Tensor)
            }
            "permute" => {
                c.shape(2, 2, &[])?;
                let x = c.tensor(0)?;
                let ty = self.ty(x);
                let Val::List(items) = c.at(1).0 else {
                    return Err(c.err(
                        c.at(1).1,
                        "the permutation must be a list like [0, 2, 1, 3]",
                    ));
                };
                let mut perm = Vec::new();
                for item in items {
                    let Val::Int(a) = item else {
                        return Err(c.err(
                            c.at(1).1,
                            format!("axes must be integers, found {}", item.kind()),
                        ));
                    };
                    perm.push(self.axis(&ty, *a, c.at(1).1)?);
                }
                self.node(Op::Permute { perm }, &[x], None, pos)
                    .map(Val::Tensor)
            }
            "transpose" => {
                c.shape(1, 1, &["a", "b"])?;
                let x = c.tensor(0)?;
                let ty = self.ty(x);
                if ty.rank() < 2 {
                    return Err(c.err(pos, format!("needs rank >= 2, found {ty}")));
                }
                let a = self.axis(&ty, c.int("a", -2)?, pos)?;
                let b = self.axis(&ty, c.int("b", -1)?, pos)?;
                let mut perm: Vec<usize> = (0..ty.rank()).collect();
                perm.swap(a, b);
                self.node(Op::Permute { perm }, &[x], None, pos)
                    .map(Val::Tensor)
            }
            "concat" => {
                c.shape(1, 1, &["axis"])?;
                let Val::List(items) = c.at(0).0 else {
                    return Err(c.err(c.at(0).1, "expected a list of tensors like [a, b]"));
                };
                let mut ids = Vec::new();
                for item in items {
                    match item {
                        Val::Tensor(id) => ids.push(*id),
                        other => {
                            return Err(c.err(
                                c.at(0).1,
                                format!("expected tensors, found {}", other.kind()),
                            ))
                        }
                    }
                }
                let Some(&first) = ids.first() else {
                    return Err(c.err(c.at(0).1, "needs at least one tensor"));
                };
                let axis = self.axis(&self.ty(first), c.int("axis", -1)?, pos)?;
                self.node(Op::Concat { axis }, &ids, None, pos)
                    .map(Val::Tensor)
            }
            "cast" => {
                c.shape(2, 2, &[])?;
                let x = c.tensor(0)?;
                let Val::DType(d) = c.at(1).0 else {
                    return Err(c.err(c.at(1).1, "the second argument must be a dtype like f32"));
                };
                let ty = self.ty(x).with_dtype(*d);
                self.node(Op::Cast, &[x], Some(ty), pos).map(Val::Tensor)
            }
            "arange" => {
                c.shape(1, 1, &["dtype"])?;
                let n = dim_of(c.at(0).0)
                    .map_err(|k| c.err(c.at(0).1, format!("n must be a size, found {k}")))?;
                let dtype = c.dtype("dtype", DType::I32)?;
                let ty = TensorType::new(dtype, Shape(vec![n]));
                self.node(Op::Iota { axis: 0 }, &[], Some(ty), pos)
                    .map(Val::Tensor)
            }
            "zeros" | "ones" => {
                c.shape(1, 1, &["dtype"])?;
                let shape = Shape(self.dim_list(c, 0)?);
                let ty = TensorType::new(c.dtype("dtype", DType::F32)?, shape);
                let v = if c.func == "ones" { 1.0 } else { 0.0 };
                self.node(Op::Constant { values: vec![v] }, &[], Some(ty), pos)
                    .map(Val::Tensor)
            }
            other => Err(c.err(pos, format!("built-in '{other}' is not implemented"))),
        }
    }

    fn float_tensor(&self, c: &CallArgs, i: usize) -> LangResult<ValueId> {
        let id = c.tensor(i)?;
        let ty = self.ty(id);
        if !ty.dtype.is_float() {
            return Err(c.err(
                c.at(i).1,
                format!("argument {} must be a float tensor, found {ty}", i + 1),
            ));
        }
        Ok(id)
    }

    /// Two arguments of which at least one is a tensor; a constant becomes a splat.
    fn tensor_pair(&mut self, c: &CallArgs, i: usize, j: usize) -> LangResult<(ValueId, ValueId)> {
        match (c.at(i), c.at(j)) {
            ((Val::Tensor(a), _), (Val::Tensor(b), _)) => Ok((*a, *b)),
            ((Val::Tensor(a), _), (k, p)) => {
                let ty = self.ty(*a);
                Ok((*a, self.splat(k, &ty, p)?))
            }
            ((k, p), (Val::Tensor(b), _)) => {
                let ty = self.ty(*b);
                Ok((self.splat(k, &ty, p)?, *b))
            }
            _ => Err(c.err(c.pos, "needs at least one tensor argument")),
        }
    }

    fn dim_list(&self, c: &CallArgs, i: usize) -> LangResult<Vec<Dim>> {
        let (v, p) = c.at(i);
        let Val::List(items) = v else {
            return Err(c.err(
                p,
                format!("expected a list of sizes like [B, 128], found {}", v.kind()),
            ));
        };
        let dims = items
            .iter()
            .map(|d| {
                dim_of(d).map_err(|k| {
                    c.err(
                        p,
                        format!("sizes must be integers or dimensions, found {k}"),
                    )
                })
            })
            .collect::<LangResult<Vec<Dim>>>()?;
        super::shapes::check_numel(&Shape(dims.clone())).map_err(|m| c.err(p, m))?;
        Ok(dims)
    }

    /// The target of `reshape`: sizes, with at most one `-1` inferred from the rest.
    fn reshape_target(&self, x: ValueId, c: &CallArgs) -> LangResult<Shape> {
        let (v, p) = c.at(1);
        let Val::List(items) = v else {
            return Err(c.err(
                p,
                format!("expected a list of sizes like [B, 128], found {}", v.kind()),
            ));
        };
        let mut dims = Vec::new();
        let mut infer = None;
        for (i, d) in items.iter().enumerate() {
            if *d == Val::Int(-1) && infer.is_none() {
                infer = Some(i);
                dims.push(Dim::fixed(1));
            } else {
                dims.push(dim_of(d).map_err(|k| {
                    c.err(
                        p,
                        format!("sizes must be integers, dimensions or one -1, found {k}"),
                    )
                })?);
            }
        }
        let xt = self.ty(x);
        super::shapes::check_numel(&Shape(dims.clone())).map_err(|m| c.err(p, m))?;
        if let Some(i) = infer {
            let numel = |s: &Shape| s.numel().map_err(|e| c.err(p, e.to_string()));
            let (known, total) = (numel(&Shape(dims.clone()))?, numel(&xt.shape)?);
            dims[i] = total.div_exact(&known).ok_or_else(|| {
                c.err(
                    p,
                    format!(
                        "cannot infer -1: {total} elements of {xt} are not a multiple of {known}"
                    ),
                )
            })?;
        }
        let shape = Shape(dims);
        super::shapes::check_numel(&shape).map_err(|m| c.err(p, m))?;
        let numel = |s: &Shape| s.numel().map_err(|e| c.err(p, e.to_string()));
        let (from, to) = (numel(&xt.shape)?, numel(&shape)?);
        if from != to {
            return Err(c.err(
                p,
                format!("cannot reshape {xt} ({from} elements) to {shape} ({to} elements)"),
            ));
        }
        Ok(shape)
    }

    fn reduce(&mut self, x: ValueId, op: ReduceOp, c: &CallArgs) -> LangResult<ValueId> {
        let ty = self.ty(x);
        if op == ReduceOp::Mean && !ty.dtype.is_float() {
            return Err(c.err(c.at(0).1, format!("needs a float tensor, found {ty}")));
        }
        if ty.dtype == DType::Bool {
            return Err(c.err(c.at(0).1, format!("is not defined on bool tensors ({ty})")));
        }
        let mut axes = match c.keyword("axis") {
            None => (0..ty.rank()).collect::<Vec<_>>(),
            Some((Val::Int(a), p)) => vec![self.axis(&ty, *a, p)?],
            Some((Val::List(items), p)) => {
                let mut axes = Vec::new();
                for item in items {
                    let Val::Int(a) = item else {
                        return Err(
                            c.err(p, format!("axes must be integers, found {}", item.kind()))
                        );
                    };
                    axes.push(self.axis(&ty, *a, p)?);
                }
                axes
            }
            Some((other, p)) => {
                return Err(c.err(
                    p,
                    format!(
                        "'axis' must be an integer or a list, found {}",
                        other.kind()
                    ),
                ))
            }
        };
        axes.sort_unstable();
        axes.dedup();
        let r = self.node(
            Op::Reduce {
                op,
                axes: axes.clone(),
            },
            &[x],
            None,
            c.pos,
        )?;
        if !c.bool("keepdim", false)? {
            return Ok(r);
        }
        let dims = ty
            .dims()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::fixed(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        self.reshape(r, Shape(dims), c.pos)
    }

    /// `scores` with `-inf` where the key (last axis) comes after the query (second to last).
    fn causal_mask(&mut self, s: ValueId, c: &CallArgs) -> LangResult<ValueId> {
        let st = self.ty(s);
        let r = st.rank();
        if r < 2 {
            return Err(c.err(
                c.at(0).1,
                format!("scores must be [..., queries, keys], found {st}"),
            ));
        }
        let it = st.with_dtype(DType::I32);
        let rows = self.node(Op::Iota { axis: r - 2 }, &[], Some(it.clone()), c.pos)?;
        let cols = self.node(Op::Iota { axis: r - 1 }, &[], Some(it), c.pos)?;
        let visible = self.node(Op::Compare(CompareOp::Ge), &[rows, cols], None, c.pos)?;
        let hidden = self.splat(&Val::Float(f64::NEG_INFINITY), &st, c.pos)?;
        self.node(Op::Select, &[visible, s, hidden], None, c.pos)
    }

    /// Rotary position embedding (the "rotate half" form): for `x [..., T, D]`, pairs
    /// feature `j` with `j + D/2` and rotates them by angle `t * base^(-2j/D)`.
    fn rope(&mut self, x: ValueId, base: f64, c: &CallArgs) -> LangResult<ValueId> {
        let pos = c.pos;
        let xt = self.ty(x);
        let r = xt.rank();
        let d = match (r >= 2).then(|| xt.dims()[r - 1].as_static()).flatten() {
            Some(d) if d % 2 == 0 && d > 0 && d <= 1 << 16 => d,
            _ => {
                return Err(c.err(
                    c.at(0).1,
                    format!("needs [..., T, D] with a static, even D (at most 65536), found {xt}"),
                ))
            }
        };
        if !(base.is_finite() && base > 0.0) {
            return Err(c.err(pos, format!("'base' must be positive, found {base}")));
        }
        let half = d / 2;
        let t = xt.dims()[r - 2].clone();
        let freqs: Vec<f64> = (0..half)
            .map(|j| base.powf(-2.0 * j as f64 / d as f64))
            .collect();
        let freq_ty = TensorType::new(xt.dtype, Shape(vec![Dim::fixed(half)]));
        let freq = self.node(Op::Constant { values: freqs }, &[], Some(freq_ty), pos)?;
        let mut half_shape = xt.dims().to_vec();
        half_shape[r - 1] = Dim::fixed(half);
        let half_shape = Shape(half_shape);
        // Positions 0..T, or after the cached ones when decoding.
        let (position, table) = if self.mode.reads_cache() {
            let at = self.decode_positions(&xt, pos)?;
            let mut dims = self.ty(at).dims().to_vec();
            dims[r - 1] = Dim::fixed(half);
            let table = Shape(dims);
            (self.broadcast_to(at, &table, pos)?, table)
        } else {
            let table = TensorType::new(xt.dtype, Shape(vec![t, Dim::fixed(half)]));
            let at = self.node(Op::Iota { axis: 0 }, &[], Some(table.clone()), pos)?;
            (at, table.shape)
        };
        let freq = self.broadcast_to(freq, &table, pos)?;
        let angle = self.node(Op::Binary(BinaryOp::Mul), &[position, freq], None, pos)?;
        let cos = self.node(Op::Unary(UnaryOp::Cos), &[angle], None, pos)?;
        let sin = self.node(Op::Unary(UnaryOp::Sin), &[angle], None, pos)?;
        let cos = self.broadcast_to(cos, &half_shape, pos)?;
        let sin = self.broadcast_to(sin, &half_shape, pos)?;
        let x1 = self.node(
            Op::Slice {
                axis: r - 1,
                start: 0,
                end: half,
                step: 1,
            },
            &[x],
            None,
            pos,
        )?;
        let x2 = self.node(
            Op::Slice {
                axis: r - 1,
                start: half,
                end: d,
                step: 1,
            },
            &[x],
            None,
            pos,
        )?;
        let mul = |me: &mut Self, a, b| me.node(Op::Binary(BinaryOp::Mul), &[a, b], None, pos);
        let (x1c, x2s, x2c, x1s) = (
            mul(self, x1, cos)?,
            mul(self, x2, sin)?,
            mul(self, x2, cos)?,
            mul(self, x1, sin)?,
        );
        let lo = self.node(Op::Binary(BinaryOp::Sub), &[x1c, x2s], None, pos)?;
        let hi = self.node(Op::Binary(BinaryOp::Add), &[x2c, x1s], None, pos)?;
        self.node(Op::Concat { axis: r - 1 }, &[lo, hi], None, pos)
    }

    /// 1 where `x` holds one of the `k` largest values of its last axis, else 0, built by
    /// `k` rounds of max / compare / select. Equal values are chosen together.
    /// `top_k`'s `k` (argument 2): an integer from 1 to the size of `x`'s last axis.
    fn top_k_count(&self, x: ValueId, c: &CallArgs) -> LangResult<u64> {
        let xt = self.ty(x);
        let Some(last) = xt.dims().last() else {
            return Err(c.err(
                c.at(0).1,
                format!("needs a tensor of rank >= 1, found {xt}"),
            ));
        };
        let Some(size) = last.as_static() else {
            return Err(c.err(c.at(0).1, format!("needs a static last axis, found {xt}")));
        };
        match c.at(1) {
            (Val::Int(k), _) if *k >= 1 && *k as u64 <= size => Ok(*k as u64),
            (Val::Int(k), p) => Err(c.err(
                p,
                format!("k must be between 1 and {size} (the last axis of {xt}), found {k}"),
            )),
            (other, p) => Err(c.err(p, format!("k must be an integer, found {}", other.kind()))),
        }
    }

    /// `take_along(x, ids)`: `x[..., ids[..., j]]` row by row along the last axis, for
    /// `x: [..., n]` and integer `ids: [..., k]` with the same leading axes. Lowered as
    /// one `gather` from the flattened `x` at `row · n + id`, so it differentiates. An id
    /// outside `0..n` is sent to index -1, so the gather fails on it instead of reading
    /// the neighbouring row.
    fn take_along(&mut self, c: &CallArgs) -> LangResult<ValueId> {
        let pos = c.pos;
        let x = c.tensor(0)?;
        let ids = c.tensor(1)?;
        let (xt, it) = (self.ty(x), self.ty(ids));
        let r = xt.rank();
        if r == 0
            || it.rank() != r
            || xt.dims()[..r - 1] != it.dims()[..r - 1]
            || !it.dtype.is_int()
        {
            return Err(c.err(
                c.at(1).1,
                format!("ids must be integers with the leading axes of {xt}, found {it}"),
            ));
        }
        let too_big = |e: smelt_compiler::ir::SizeOverflow| c.err(c.at(0).1, e.to_string());
        let rows = Shape(xt.dims()[..r - 1].to_vec())
            .numel()
            .map_err(too_big)?;
        let (n, k) = (xt.dims()[r - 1].clone(), it.dims()[r - 1].clone());
        let Some(width) = n.as_static() else {
            return Err(c.err(c.at(0).1, format!("needs a static last axis, found {xt}")));
        };
        let flat = self.reshape(x, Shape(vec![rows.mul(&n).map_err(too_big)?]), pos)?;
        let index_ty = TensorType::new(DType::I64, Shape(vec![rows, k]));
        let ids = if it.dtype == DType::I64 {
            ids
        } else {
            self.node(Op::Cast, &[ids], Some(it.with_dtype(DType::I64)), pos)?
        };
        let ids = self.reshape(ids, index_ty.shape.clone(), pos)?;
        let row = self.node(Op::Iota { axis: 0 }, &[], Some(index_ty.clone()), pos)?;
        let width = width as i64;
        let n = self.splat(&Val::Int(width), &index_ty, pos)?;
        let start = self.node(Op::Binary(BinaryOp::Mul), &[row, n], None, pos)?;
        let flat_at = self.node(Op::Binary(BinaryOp::Add), &[start, ids], None, pos)?;
        // An id outside the row would read a neighbouring row of the flat `x`; it
        // becomes -1 instead, which the gather reports as out of range.
        let zero = self.splat(&Val::Int(0), &index_ty, pos)?;
        let last = self.splat(&Val::Int(width - 1), &index_ty, pos)?;
        let low = self.node(Op::Binary(BinaryOp::Max), &[ids, zero], None, pos)?;
        let clamped = self.node(Op::Binary(BinaryOp::Min), &[low, last], None, pos)?;
        let inside = self.node(Op::Compare(CompareOp::Eq), &[ids, clamped], None, pos)?;
        let outside = self.splat(&Val::Int(-1), &index_ty, pos)?;
        let at = self.node(Op::Select, &[inside, flat_at, outside], None, pos)?;
        let taken = self.node(Op::Gather { axis: 0 }, &[flat, at], None, pos)?;
        self.reshape(taken, it.shape.clone(), pos)
    }

    /// `grouped_matmul`'s operands, checked: rows `x: [T, K]`, one matrix per group
    /// `w: [E, K, N]` of the same dtype, and integer `groups: [T]`.
    fn grouped_operands(&self, c: &CallArgs) -> LangResult<[ValueId; 3]> {
        let x = self.float_tensor(c, 0)?;
        let w = self.float_tensor(c, 1)?;
        let groups = c.tensor(2)?;
        let (xt, wt, gt) = (self.ty(x), self.ty(w), self.ty(groups));
        if xt.rank() != 2 {
            return Err(c.err(c.at(0).1, format!("x must be [rows, K], found {xt}")));
        }
        if wt.rank() != 3 || wt.dtype != xt.dtype || wt.dims()[1] != xt.dims()[1] {
            return Err(c.err(
                c.at(1).1,
                format!(
                    "w must be [groups, {}, N] of {} (one matrix per group), found {wt}",
                    xt.dims()[1],
                    xt.dtype
                ),
            ));
        }
        if !gt.dtype.is_int() || gt.rank() != 1 || gt.dims()[0] != xt.dims()[0] {
            return Err(c.err(
                c.at(2).1,
                format!(
                    "groups must be integers of shape [{}] (one per row of x), found {gt}",
                    xt.dims()[0]
                ),
            ));
        }
        Ok([x, w, groups])
    }

    fn top_k_mask(&mut self, x: ValueId, k: i64, c: &CallArgs) -> LangResult<ValueId> {
        let pos = c.pos;
        let xt = self.ty(x);
        let r = xt.rank();
        if r == 0 {
            return Err(c.err(
                c.at(0).1,
                format!("needs a tensor of rank >= 1, found {xt}"),
            ));
        }
        let size = xt.dims()[r - 1].as_static().unwrap_or(u64::MAX);
        if k < 1 || k as u64 > size || k > 4096 {
            return Err(c.err(
                c.at(1).1,
                format!("k must be between 1 and the last axis of {xt}, found {k}"),
            ));
        }
        let mut mask = self.splat(&Val::Float(0.0), &xt, pos)?;
        let one = self.splat(&Val::Float(1.0), &xt, pos)?;
        let gone = self.splat(&Val::Float(f64::NEG_INFINITY), &xt, pos)?;
        let mut rest = x;
        for _ in 0..k {
            let m = self.node(
                Op::Reduce {
                    op: ReduceOp::Max,
                    axes: vec![r - 1],
                },
                &[rest],
                None,
                pos,
            )?;
            let dims = (0..r - 1).collect();
            let m = self.node(Op::Broadcast { dims }, &[m], Some(xt.clone()), pos)?;
            let hit = self.node(Op::Compare(CompareOp::Eq), &[rest, m], None, pos)?;
            mask = self.node(Op::Select, &[hit, one, mask], None, pos)?;
            rest = self.node(Op::Select, &[hit, gone, rest], None, pos)?;
        }
        Ok(mask)
    }
}
