//! Expressions: names, constants folded at compile time, the operators `+ - * / @` and
//! comparisons with numpy-style broadcasting, and indexing/slicing.

use super::ast::{BinOp, Expr, ExprKind, IndexItem};
use super::error::{fail, LangError, LangResult};
use super::lower::Lowerer;
use super::shapes::{broadcast_shapes, check_numel, mul_dims, normalize_axis};
use super::value::{Env, Val};
use smelt_compiler::ir::ops::{BinaryOp, CompareOp, UnaryOp};
use smelt_compiler::ir::text::{edit_distance, Pos};
use smelt_compiler::ir::{DType, Dim, Op, Shape, TensorType, ValueId};

impl<'p> Lowerer<'p> {
    /// Evaluates an expression.
    pub(super) fn eval(&mut self, env: &mut Env, e: &Expr) -> LangResult<Val> {
        let v = self.eval_inner(env, e)?;
        self.mark(e.pos);
        Ok(v)
    }

    fn eval_inner(&mut self, env: &mut Env, e: &Expr) -> LangResult<Val> {
        Ok(match &e.kind {
            ExprKind::Int(n) => Val::Int(
                i64::try_from(*n)
                    .map_err(|_| LangError::new(e.pos, format!("integer {n} is too large")))?,
            ),
            ExprKind::Float(x) => Val::Float(*x),
            ExprKind::Bool(b) => Val::Bool(*b),
            ExprKind::Str(s) => Val::Str(s.clone()),
            ExprKind::Name(n) => self.lookup(env, n, e.pos)?,
            ExprKind::List(items) => {
                let mut vals = Vec::with_capacity(items.len());
                for item in items {
                    vals.push(self.eval(env, item)?);
                }
                Val::List(vals)
            }
            ExprKind::Neg(inner) => {
                let v = self.eval(env, inner)?;
                self.negate(v, e.pos)?
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(env, lhs)?;
                let b = self.eval(env, rhs)?;
                self.binary(*op, a, b, e.pos)?
            }
            ExprKind::Call { func, args, scope } => {
                if let Some(f) = self.user_function(func) {
                    let mut vals = Vec::with_capacity(args.len());
                    for a in args {
                        if let Some(k) = &a.name {
                            return fail(
                                a.pos,
                                format!("'{func}' is a user function; it takes no keyword argument '{k}'"),
                            );
                        }
                        vals.push((self.eval(env, &a.value)?, a.pos));
                    }
                    self.call_user(f, vals, scope.as_deref(), e.pos)?
                } else if super::builtins::is_builtin(func) {
                    if scope.is_some() {
                        return fail(
                            e.pos,
                            format!("'as' names the parameters of a user function call; built-in '{func}' declares none"),
                        );
                    }
                    self.call_builtin(env, func, args, e.pos)?
                } else {
                    let mut known = super::builtins::builtin_names();
                    known.extend(self.function_names());
                    return fail(
                        e.pos,
                        format!(
                            "unknown function '{func}'{}",
                            suggest(func, known.iter().map(|s| s.as_str()))
                        ),
                    );
                }
            }
            ExprKind::Index { base, items } => {
                let v = self.eval(env, base)?;
                let id = self.expect_tensor(&v, base.pos, "an indexed value")?;
                Val::Tensor(self.index(env, id, items, e.pos)?)
            }
        })
    }

    fn lookup(&self, env: &Env, name: &str, pos: Pos) -> LangResult<Val> {
        if let Some(v) = env.get(name) {
            return Ok(v.clone());
        }
        if let Some(d) = DType::from_name(name) {
            return Ok(Val::DType(d));
        }
        if self.user_function(name).is_some() || super::builtins::is_builtin(name) {
            return fail(
                pos,
                format!("'{name}' is a function; call it as {name}(...)"),
            );
        }
        fail(
            pos,
            format!(
                "unknown name '{name}'{}",
                suggest(name, env.names().map(|s| s.as_str()))
            ),
        )
    }

    /// Adds a node, turning a shape-rule error into a diagnostic at `pos`.
    pub(super) fn node(
        &mut self,
        op: Op,
        operands: &[ValueId],
        declared: Option<TensorType>,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let name = op.name();
        self.b
            .node(None, op, operands, declared)
            .map_err(|m| LangError::new(pos, format!("in '{name}': {m}")))
    }

    /// `x` with the same elements in shape `shape`.
    pub(super) fn reshape(&mut self, x: ValueId, shape: Shape, pos: Pos) -> LangResult<ValueId> {
        let ty = self.ty(x);
        if ty.shape == shape {
            return Ok(x);
        }
        check_numel(&shape).map_err(|m| LangError::new(pos, m))?;
        self.node(Op::Reshape, &[x], Some(ty.with_shape(shape)), pos)
    }

    /// `x` broadcast numpy-style (aligned at the last axis) to `shape`.
    pub(super) fn broadcast_to(
        &mut self,
        x: ValueId,
        shape: &Shape,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let ty = self.ty(x);
        if ty.shape == *shape {
            return Ok(x);
        }
        if ty.rank() > shape.rank() {
            return fail(pos, format!("cannot broadcast {ty} to fewer axes {shape}"));
        }
        let offset = shape.rank() - ty.rank();
        let dims = (offset..shape.rank()).collect();
        self.node(
            Op::Broadcast { dims },
            &[x],
            Some(ty.with_shape(shape.clone())),
            pos,
        )
    }

    /// A constant of type `ty` holding the compile-time value `v` everywhere.
    pub(super) fn splat(&mut self, v: &Val, ty: &TensorType, pos: Pos) -> LangResult<ValueId> {
        let x = match v {
            Val::Int(n) if ty.dtype != DType::Bool => *n as f64,
            Val::Float(x) if ty.dtype.is_float() => *x,
            Val::Float(x) if ty.dtype.is_int() && x.fract() == 0.0 => *x,
            Val::Bool(b) if ty.dtype == DType::Bool => f64::from(u8::from(*b)),
            other => {
                return fail(
                    pos,
                    format!(
                        "cannot use {} where a {} tensor is expected{}",
                        describe(other),
                        ty.dtype,
                        if ty.dtype.is_int() {
                            "; convert the tensor with cast(x, f32)"
                        } else {
                            ""
                        }
                    ),
                )
            }
        };
        self.node(Op::Constant { values: vec![x] }, &[], Some(ty.clone()), pos)
    }

    fn negate(&mut self, v: Val, pos: Pos) -> LangResult<Val> {
        Ok(match v {
            Val::Int(n) => Val::Int(
                n.checked_neg()
                    .ok_or_else(|| LangError::new(pos, "integer overflow"))?,
            ),
            Val::Float(x) => Val::Float(-x),
            Val::Tensor(id) => {
                let ty = self.ty(id);
                if !(ty.dtype.is_float() || ty.dtype.is_int()) {
                    return fail(pos, format!("'-' needs a numeric tensor, found {ty}"));
                }
                Val::Tensor(self.node(Op::Unary(UnaryOp::Neg), &[id], None, pos)?)
            }
            other => {
                return fail(
                    pos,
                    format!("'-' needs a number or a tensor, found {}", other.kind()),
                )
            }
        })
    }

    /// `a op b`: folded for constants, broadcast and lowered for tensors.
    pub(super) fn binary(&mut self, op: BinOp, a: Val, b: Val, pos: Pos) -> LangResult<Val> {
        match (&a, &b) {
            (Val::Tensor(x), Val::Tensor(y)) => {
                self.tensor_binary(op, *x, *y, pos).map(Val::Tensor)
            }
            (Val::Tensor(x), c) | (c, Val::Tensor(x)) => {
                if op == BinOp::MatMul {
                    return fail(pos, format!("'@' needs two tensors, found {}", c.kind()));
                }
                let ty = self.ty(*x);
                let k = self.splat(c, &ty, pos)?;
                let (l, r) = if matches!(a, Val::Tensor(_)) {
                    (*x, k)
                } else {
                    (k, *x)
                };
                self.tensor_binary(op, l, r, pos).map(Val::Tensor)
            }
            _ => fold(op, &a, &b).map_err(|m| LangError::new(pos, m)),
        }
    }

    fn tensor_binary(
        &mut self,
        op: BinOp,
        x: ValueId,
        y: ValueId,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let tx = self.same_dtype(x, y, op.symbol(), true, pos)?;
        let ty = self.ty(y);
        if op == BinOp::MatMul {
            return self.matmul(x, y, pos);
        }
        let shape = broadcast_shapes(&tx.shape, &ty.shape)
            .map_err(|m| LangError::new(pos, format!("operands of '{}': {m}", op.symbol())))?;
        let arith = match op {
            BinOp::Add => Some(BinaryOp::Add),
            BinOp::Sub => Some(BinaryOp::Sub),
            BinOp::Mul => Some(BinaryOp::Mul),
            BinOp::Div => Some(BinaryOp::Div),
            _ => None,
        };
        if arith.is_some() && tx.dtype == DType::Bool {
            return fail(
                pos,
                format!("'{}' is not defined on bool tensors ({tx})", op.symbol()),
            );
        }
        let (x, y) = self.broadcast_both(x, y, &shape, pos)?;
        let ir_op = match (arith, op) {
            (Some(a), _) => Op::Binary(a),
            (None, BinOp::Eq) => Op::Compare(CompareOp::Eq),
            (None, BinOp::Ne) => Op::Compare(CompareOp::Ne),
            (None, BinOp::Lt) => Op::Compare(CompareOp::Lt),
            (None, BinOp::Le) => Op::Compare(CompareOp::Le),
            (None, BinOp::Gt) => Op::Compare(CompareOp::Gt),
            (None, _) => Op::Compare(CompareOp::Ge),
        };
        self.node(ir_op, &[x, y], None, pos)
    }

    /// Elementwise `op` of two tensors after broadcasting them (for `maximum`, `pow`...).
    pub(super) fn broadcast_binary(
        &mut self,
        op: BinaryOp,
        x: ValueId,
        y: ValueId,
        pos: Pos,
    ) -> LangResult<ValueId> {
        let tx = self.same_dtype(x, y, op.name(), false, pos)?;
        let shape =
            broadcast_shapes(&tx.shape, &self.ty(y).shape).map_err(|m| LangError::new(pos, m))?;
        let (x, y) = self.broadcast_both(x, y, &shape, pos)?;
        self.node(Op::Binary(op), &[x, y], None, pos)
    }

    /// The type of `x`, after checking that `y` has the same dtype (`hint`: suggest a cast).
    fn same_dtype(
        &self,
        x: ValueId,
        y: ValueId,
        what: &str,
        hint: bool,
        pos: Pos,
    ) -> LangResult<TensorType> {
        let (tx, ty) = (self.ty(x), self.ty(y));
        if tx.dtype != ty.dtype {
            let cast = if hint {
                format!(" (convert one with cast(x, {}))", tx.dtype)
            } else {
                String::new()
            };
            return fail(
                pos,
                format!("operands of '{what}' have different dtypes: {tx} and {ty}{cast}"),
            );
        }
        Ok(tx)
    }

    /// Both operands broadcast to `shape`.
    fn broadcast_both(
        &mut self,
        x: ValueId,
        y: ValueId,
        shape: &Shape,
        pos: Pos,
    ) -> LangResult<(ValueId, ValueId)> {
        Ok((
            self.broadcast_to(x, shape, pos)?,
            self.broadcast_to(y, shape, pos)?,
        ))
    }

    /// numpy `matmul`: vectors gain and lose a unit axis; a 2-D right operand is shared
    /// by every leading axis of the left (lowered as one reshaped matrix product);
    /// otherwise batch axes broadcast.
    fn matmul(&mut self, x: ValueId, y: ValueId, pos: Pos) -> LangResult<ValueId> {
        let (tx, ty) = (self.ty(x), self.ty(y));
        if tx.rank() == 0 || ty.rank() == 0 {
            return fail(
                pos,
                format!("'@' needs operands of rank >= 1, found {tx} and {ty}"),
            );
        }
        if tx.dtype == DType::Bool {
            return fail(pos, format!("'@' is not defined on bool tensors ({tx})"));
        }
        let one = Dim::fixed(1);
        // Promote vectors to matrices, remembering which unit axes to drop afterwards.
        let (x, drop_m) = if tx.rank() == 1 {
            (
                self.reshape(x, Shape(vec![one.clone(), tx.dims()[0].clone()]), pos)?,
                true,
            )
        } else {
            (x, false)
        };
        let (y, drop_n) = if ty.rank() == 1 {
            (
                self.reshape(y, Shape(vec![ty.dims()[0].clone(), one.clone()]), pos)?,
                true,
            )
        } else {
            (y, false)
        };
        let (ax, ay) = (self.ty(x), self.ty(y));
        let (rx, ry) = (ax.rank(), ay.rank());
        let k_x = &ax.dims()[rx - 1];
        let k_y = &ay.dims()[ry - 2];
        if k_x != k_y {
            return fail(
                pos,
                format!("'@' contraction sizes differ: {tx} @ {ty} (the last axis of the left, {k_x}, must equal the second-to-last of the right, {k_y})"),
            );
        }
        let m = ax.dims()[rx - 2].clone();
        let n = ay.dims()[ry - 1].clone();
        let batch_x = Shape(ax.dims()[..rx - 2].to_vec());
        let result = if ry == 2 && rx > 2 {
            // [.., M, K] @ [K, N]: one [rows, K] @ [K, N] product, where rows = prod(.., M).
            let rows = ax.dims()[..rx - 1]
                .iter()
                .try_fold(Dim::fixed(1), |acc, d| mul_dims(&acc, d))
                .map_err(|m| LangError::new(pos, m))?;
            let flat = self.reshape(x, Shape(vec![rows, k_x.clone()]), pos)?;
            let prod = self.node(Op::MatMul, &[flat, y], None, pos)?;
            let mut dims = ax.dims()[..rx - 1].to_vec();
            dims.push(n.clone());
            self.reshape(prod, Shape(dims), pos)?
        } else {
            let batch_y = Shape(ay.dims()[..ry - 2].to_vec());
            let batch = broadcast_shapes(&batch_x, &batch_y).map_err(|e| {
                LangError::new(pos, format!("'@' batch axes of {tx} and {ty}: {e}"))
            })?;
            let mut sx = batch.0.clone();
            sx.extend([m.clone(), k_x.clone()]);
            let mut sy = batch.0.clone();
            sy.extend([k_x.clone(), n.clone()]);
            let x = self.broadcast_to(x, &Shape(sx), pos)?;
            let y = self.broadcast_to(y, &Shape(sy), pos)?;
            self.node(Op::MatMul, &[x, y], None, pos)?
        };
        if !(drop_m || drop_n) {
            return Ok(result);
        }
        let rt = self.ty(result);
        let r = rt.rank();
        let dims: Vec<Dim> = rt
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !((drop_m && *i == r - 2) || (drop_n && *i == r - 1)))
            .map(|(_, d)| d.clone())
            .collect();
        self.reshape(result, Shape(dims), pos)
    }

    /// `x[items]`: integers pick (and drop the axis), ranges slice, `...` skips axes.
    fn index(
        &mut self,
        env: &mut Env,
        x: ValueId,
        items: &[IndexItem],
        pos: Pos,
    ) -> LangResult<ValueId> {
        let ty = self.ty(x);
        let rank = ty.rank();
        let explicit = items
            .iter()
            .filter(|i| !matches!(i, IndexItem::Ellipsis(_)))
            .count();
        let ellipses = items.len() - explicit;
        if ellipses > 1 {
            return fail(pos, "an index may contain at most one '...'");
        }
        if explicit > rank {
            return fail(
                pos,
                format!("too many indices for {ty}: {explicit} given, rank is {rank}"),
            );
        }
        let mut axis = 0;
        let mut out = x;
        let mut dropped = Vec::new();
        for item in items {
            match item {
                IndexItem::Ellipsis(_) => axis += rank - explicit,
                IndexItem::At(e) => {
                    let size = self.static_axis(&ty, axis, e.pos)?;
                    let i = self.const_int(env, e, "an index")?;
                    let at = wrap_index(i, size).ok_or_else(|| {
                        LangError::new(
                            e.pos,
                            format!(
                                "index {i} is out of range for axis {axis} of {ty} (size {size})"
                            ),
                        )
                    })?;
                    out = self.node(
                        Op::Slice {
                            axis,
                            start: at,
                            end: at + 1,
                            step: 1,
                        },
                        &[out],
                        None,
                        e.pos,
                    )?;
                    dropped.push(axis);
                    axis += 1;
                }
                IndexItem::Range {
                    start,
                    end,
                    step,
                    pos: ipos,
                } => {
                    if start.is_none() && end.is_none() && step.is_none() {
                        axis += 1;
                        continue;
                    }
                    let size = self.static_axis(&ty, axis, *ipos)?;
                    let mut bound = |s: &Option<Expr>,
                                     default: u64,
                                     me: &mut Self|
                     -> LangResult<u64> {
                        match s {
                            None => Ok(default),
                            Some(e) => {
                                let i = me.const_int(env, e, "a slice bound")?;
                                let wrapped = if i < 0 { i + size as i64 } else { i };
                                if wrapped < 0 || wrapped as u64 > size {
                                    return fail(e.pos, format!("slice bound {i} is out of range for axis {axis} of {ty} (size {size})"));
                                }
                                Ok(wrapped as u64)
                            }
                        }
                    };
                    let lo = bound(start, 0, self)?;
                    let hi = bound(end, size, self)?;
                    let st = match step {
                        None => 1,
                        Some(e) => match self.const_int(env, e, "a slice step")? {
                            s if s >= 1 => s as u64,
                            s => {
                                return fail(e.pos, format!("a slice step must be >= 1, found {s}"))
                            }
                        },
                    };
                    if lo > hi {
                        return fail(*ipos, format!("empty slice {lo}:{hi} on axis {axis} of {ty} (start must not exceed end)"));
                    }
                    out = self.node(
                        Op::Slice {
                            axis,
                            start: lo,
                            end: hi,
                            step: st,
                        },
                        &[out],
                        None,
                        *ipos,
                    )?;
                    axis += 1;
                }
            }
        }
        if dropped.is_empty() {
            return Ok(out);
        }
        let ot = self.ty(out);
        let dims = ot
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !dropped.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        self.reshape(out, Shape(dims), pos)
    }

    /// The static size of `axis` of `ty`, or an error saying it must be static.
    pub(super) fn static_axis(&self, ty: &TensorType, axis: usize, pos: Pos) -> LangResult<u64> {
        let d = &ty.dims()[axis];
        d.as_static().ok_or_else(|| {
            LangError::new(
                pos,
                format!(
                    "axis {axis} of {ty} has run-time size {d}; indexing it needs a static size"
                ),
            )
        })
    }

    /// Normalises a possibly negative axis for `ty`.
    pub(super) fn axis(&self, ty: &TensorType, axis: i64, pos: Pos) -> LangResult<usize> {
        normalize_axis(axis, ty.rank()).map_err(|m| LangError::new(pos, format!("{m}: {ty}")))
    }
}

fn wrap_index(i: i64, size: u64) -> Option<u64> {
    let w = if i < 0 {
        i.checked_add(size as i64)?
    } else {
        i
    };
    (w >= 0 && (w as u64) < size).then_some(w as u64)
}

fn describe(v: &Val) -> String {
    match v {
        Val::Int(n) => format!("integer {n}"),
        Val::Float(x) => format!("float {x}"),
        Val::Bool(b) => format!("boolean {b}"),
        other => other.kind().to_string(),
    }
}

/// Constant folding of `a op b`.
fn fold(op: BinOp, a: &Val, b: &Val) -> Result<Val, String> {
    let overflow = || format!("integer overflow in '{}'", op.symbol());
    if let (Val::Int(x), Val::Int(y)) = (a, b) {
        return Ok(match op {
            BinOp::Add => Val::Int(x.checked_add(*y).ok_or_else(overflow)?),
            BinOp::Sub => Val::Int(x.checked_sub(*y).ok_or_else(overflow)?),
            BinOp::Mul => Val::Int(x.checked_mul(*y).ok_or_else(overflow)?),
            BinOp::Div if *y == 0 => return Err("division by zero".into()),
            // Exact integer quotients stay integers, so `heads / kv_heads` can size a shape;
            // `i64::MIN / -1` is the one quotient that does not fit.
            BinOp::Div => match x.checked_rem(*y) {
                None => return Err(overflow()),
                Some(0) => Val::Int(x / y),
                Some(_) => Val::Float(*x as f64 / *y as f64),
            },
            BinOp::MatMul => return Err("'@' needs two tensors, found integers".into()),
            cmp => Val::Bool(compare(cmp, *x as f64, *y as f64)),
        });
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Err(format!(
            "'{}' cannot combine {} and {}",
            op.symbol(),
            a.kind(),
            b.kind()
        ));
    };
    Ok(match op {
        BinOp::Add => Val::Float(x + y),
        BinOp::Sub => Val::Float(x - y),
        BinOp::Mul => Val::Float(x * y),
        BinOp::Div => Val::Float(x / y),
        BinOp::MatMul => return Err("'@' needs two tensors, found numbers".into()),
        cmp => Val::Bool(compare(cmp, x, y)),
    })
}

fn compare(op: BinOp, x: f64, y: f64) -> bool {
    match op {
        BinOp::Eq => x == y,
        BinOp::Ne => x != y,
        BinOp::Lt => x < y,
        BinOp::Le => x <= y,
        BinOp::Gt => x > y,
        _ => x >= y,
    }
}

/// ` (did you mean 'x'?)` for the closest of `known` to `name`, if any is close.
pub(super) fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let best = known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    match best {
        Some((_, k)) => format!(" (did you mean '{k}'?)"),
        None => String::new(),
    }
}
