//! Lowering: runs a parsed program at compile time and builds the graph it describes.
//!
//! Functions are expanded at each call and `for` loops are unrolled, so every tensor
//! operation is type-checked with the concrete types it receives (dims stay symbolic
//! where the inputs are). Operators and built-ins are in [`super::expr`] and
//! [`super::builtins`]; this file holds statements, declarations, calls and naming.

use super::ast::{Expr, ExprKind, FnDef, Program, Stmt, StmtKind, TypeExpr};
use super::error::{fail, LangError, LangResult};
use super::init::initialiser;
use super::kv_cache::Mode;
use super::shapes::{check_numel, mul_dims};
use super::value::{Env, Val};
use smelt_compiler::ir::text::Pos;
use smelt_compiler::ir::{
    check_param_type, is_symbol, Builder, DType, Dim, Graph, Init, Op, Shape, TensorType, ValueId,
};
use std::collections::{HashMap, HashSet};

/// Most iterations of one `for` loop.
const MAX_LOOP: i64 = 4096;
/// Deepest chain of function calls (stops runaway recursion).
const MAX_CALL_DEPTH: usize = 64;
/// Most values a program may create (stops runaway unrolling).
const MAX_VALUES: usize = 2_000_000;
/// Most loop iterations in a whole program (stops nested loops from running for ages).
const MAX_ITERATIONS: u64 = 1_000_000;

/// How names in a type that are not bound yet are treated.
enum DimMode<'a> {
    /// Every name must be bound (let annotations, params, return types).
    Bound,
    /// Unbound names become run-time symbols of the graph (inputs).
    NewSymbols,
    /// Unbound names are bound to the argument's sizes (function signatures).
    Unify(&'a mut HashMap<String, Dim>),
}

/// The result of lowering: the graph and where each value came from.
pub struct Lowered {
    /// The built graph.
    pub graph: Graph,
    /// `positions[id]`: the source position that created value `id`.
    pub positions: Vec<Pos>,
}

/// State while lowering one program.
pub struct Lowerer<'p> {
    functions: HashMap<String, &'p FnDef>,
    pub(super) b: Builder,
    positions: Vec<Pos>,
    configs: Vec<(String, Val)>,
    overrides: HashMap<String, String>,
    prefix: Vec<String>,
    call_depth: usize,
    iterations: u64,
    /// Names from `let`, applied to anonymous values when the graph is finished.
    let_names: HashMap<ValueId, String>,
    outputs: Vec<(String, ValueId, Pos)>,
    loss: Option<ValueId>,
    /// What the model is lowered for (training, or a prefill or decode step).
    pub(super) mode: Mode,
    /// In cache modes: `present.N.k` / `present.N.v` outputs, in call order.
    pub(super) cache_outputs: Vec<(String, ValueId)>,
    /// In decode mode: the input `past_len: i32[B]`, once declared.
    pub(super) past_len: Option<ValueId>,
    /// In decode mode: the input `block_table: i32[B, pages]`, once declared.
    pub(super) block_table: Option<ValueId>,
}

/// Lowers `program` with config `overrides` (NAME -> VALUE text) to a graph named `name`.
pub fn lower(
    program: &Program,
    name: &str,
    overrides: &HashMap<String, String>,
    mode: Mode,
) -> LangResult<Lowered> {
    let mut functions = HashMap::new();
    for f in &program.functions {
        if functions.insert(f.name.clone(), f).is_some() {
            return fail(f.pos, format!("function '{}' is defined twice", f.name));
        }
        if super::builtins::is_builtin(&f.name) {
            return fail(
                f.pos,
                format!(
                    "'{}' is a built-in function and cannot be redefined",
                    f.name
                ),
            );
        }
    }
    let mut l = Lowerer {
        functions,
        b: Builder::new(name),
        positions: Vec::new(),
        configs: Vec::new(),
        overrides: overrides.clone(),
        prefix: Vec::new(),
        call_depth: 0,
        iterations: 0,
        let_names: HashMap::new(),
        outputs: Vec::new(),
        loss: None,
        mode,
        cache_outputs: Vec::new(),
        past_len: None,
        block_table: None,
    };
    let mut env = Env::new();
    // The model body cannot `return` (exec_block rejects it outside functions).
    l.exec_block(&mut env, &program.body, Context::Model)?;
    if let Some(unused) = l.overrides.keys().min() {
        let known: Vec<&str> = l.configs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(LangError::unlocated(format!(
            "--set {unused}: the model has no config '{unused}' (configs: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    if l.outputs.is_empty() && l.loss.is_none() {
        return Err(LangError::unlocated(
            "the model has no outputs (add 'output NAME = EXPR' or 'loss = EXPR')",
        ));
    }
    Ok(l.finish())
}

/// Where statements run: the model body (at top level or inside a loop) or a function.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    Model,
    Loop,
    Function,
}

impl<'p> Lowerer<'p> {
    /// Records `pos` as the origin of every value created since the last call.
    pub(super) fn mark(&mut self, pos: Pos) {
        while self.positions.len() < self.b.graph().values.len() {
            self.positions.push(pos);
        }
    }

    /// The type of tensor `id`.
    pub(super) fn ty(&self, id: ValueId) -> TensorType {
        self.b.ty(id).clone()
    }

    fn scoped(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix.join("."))
        }
    }

    fn finish(mut self) -> Lowered {
        let mut graph = self.b.finish();
        let mut taken: HashSet<String> = graph.values.iter().map(|v| v.name.clone()).collect();
        let anonymous = |n: &str| n.bytes().all(|c| c.is_ascii_digit());
        let mut rename = |graph: &mut Graph, id: ValueId, want: &str| {
            let v = &mut graph.values[id.index()];
            if !anonymous(&v.name) {
                return;
            }
            let mut name = want.to_string();
            let mut k = 1;
            while taken.contains(&name) {
                k += 1;
                name = format!("{want}_{k}");
            }
            taken.insert(name.clone());
            v.name = name;
        };
        // Outputs first, so an output gets its own name even if a `let` named it earlier.
        if let Some(loss) = self.loss {
            rename(&mut graph, loss, "loss");
        }
        for (name, id, _) in &self.outputs {
            rename(&mut graph, *id, name);
        }
        for (name, id) in &self.cache_outputs {
            rename(&mut graph, *id, name);
        }
        let mut lets: Vec<(ValueId, String)> = self.let_names.drain().collect();
        lets.sort();
        for (id, name) in lets {
            rename(&mut graph, id, &name);
        }
        // Values made after the last marked expression take the last known position.
        let last = self.positions.last().copied().unwrap_or_default();
        self.positions.resize(graph.values.len(), last);
        graph.outputs = self.loss.into_iter().collect();
        graph
            .outputs
            .extend(self.outputs.iter().map(|(_, id, _)| *id));
        if self.mode == Mode::Full {
            return Lowered {
                graph,
                positions: self.positions,
            };
        }
        // Inference steps: no loss, plus the cache; what only the loss used goes.
        graph.outputs.retain(|&o| Some(o) != self.loss);
        graph
            .outputs
            .extend(self.cache_outputs.iter().map(|(_, id)| *id));
        let (graph, kept) = graph.pruned();
        let positions = (0..kept.len())
            .filter(|&i| kept[i].is_some())
            .map(|i| self.positions[i])
            .collect();
        Lowered { graph, positions }
    }

    /// `value`, or a copy of it when it already has a name, so that an output can be
    /// named after what it is.
    pub(super) fn fresh_value(&mut self, value: ValueId, pos: Pos) -> LangResult<ValueId> {
        let named = !self
            .b
            .graph()
            .value(value)
            .name
            .bytes()
            .all(|c| c.is_ascii_digit())
            || self.let_names.contains_key(&value)
            || self.outputs.iter().any(|(_, id, _)| *id == value);
        if !named {
            return Ok(value);
        }
        let ty = self.ty(value);
        self.node(Op::Reshape, &[value], Some(ty), pos)
    }

    fn exec_block(
        &mut self,
        env: &mut Env,
        body: &[Stmt],
        ctx: Context,
    ) -> LangResult<Option<Val>> {
        for (i, stmt) in body.iter().enumerate() {
            if let StmtKind::Return { value } = &stmt.kind {
                if ctx != Context::Function {
                    return fail(stmt.pos, "'return' is only allowed in a function");
                }
                if i + 1 != body.len() {
                    return fail(
                        stmt.pos,
                        "'return' must be the last statement of a function",
                    );
                }
                return Ok(Some(self.eval(env, value)?));
            }
            self.exec(env, stmt, ctx)?;
            self.mark(stmt.pos);
        }
        Ok(None)
    }

    fn only_in_model(&self, stmt: &Stmt, what: &str, ctx: Context) -> LangResult<()> {
        if ctx != Context::Model {
            return fail(
                stmt.pos,
                format!("'{what}' is only allowed at the top level of the model"),
            );
        }
        Ok(())
    }

    fn exec(&mut self, env: &mut Env, stmt: &Stmt, ctx: Context) -> LangResult<()> {
        match &stmt.kind {
            StmtKind::Config { name, value } => {
                self.only_in_model(stmt, "config", ctx)?;
                self.config(env, name, value, stmt.pos)
            }
            StmtKind::Input { name, ty } => {
                self.only_in_model(stmt, "input", ctx)?;
                self.fresh_name(env, name, stmt.pos)?;
                let ty = self.resolve_type(env, ty, DimMode::NewSymbols)?;
                // New symbols become names usable in later types (`let y: f32[B, 10]`).
                for d in ty.dims() {
                    for s in d.syms() {
                        if env.get(s).is_none() {
                            env.define(s, Val::Dim(Dim::sym(s)));
                        }
                    }
                }
                let id = self
                    .b
                    .input(name, ty)
                    .map_err(|e| LangError::new(stmt.pos, e.to_string()))?;
                env.define(name, Val::Tensor(id));
                Ok(())
            }
            StmtKind::Param { name, ty, init } => self.param(env, name, ty, init, stmt.pos),
            StmtKind::Let { name, ty, value } => {
                let v = self.eval(env, value)?;
                let v = match ty {
                    Some(te) => {
                        let want = self.resolve_type(env, te, DimMode::Bound)?;
                        self.coerce_to(v, &want, te.pos, &format!("'{name}'"))?
                    }
                    None => v,
                };
                if let Val::Tensor(id) = v {
                    let scoped = self.scoped(name);
                    self.let_names.entry(id).or_insert(scoped);
                }
                env.define(name, v);
                Ok(())
            }
            StmtKind::Assign { name, value } => {
                let Some(old) = env.get(name).cloned() else {
                    return fail(
                        stmt.pos,
                        format!("'{name}' is not defined; introduce it with 'let {name} = ...'"),
                    );
                };
                let new = self.eval(env, value)?;
                if let (Val::Tensor(a), Val::Tensor(b)) = (&old, &new) {
                    let (ta, tb) = (self.ty(*a), self.ty(*b));
                    if ta != tb {
                        return fail(
                            value.pos,
                            format!("cannot assign a value of type {tb} to '{name}', which has type {ta}"),
                        );
                    }
                } else if std::mem::discriminant(&old) != std::mem::discriminant(&new) {
                    return fail(
                        value.pos,
                        format!(
                            "cannot assign {} to '{name}', which holds {}",
                            new.kind(),
                            old.kind()
                        ),
                    );
                }
                env.assign(name, new);
                Ok(())
            }
            StmtKind::For {
                var,
                start,
                end,
                scope,
                body,
            } => self.for_loop(env, var, start, end, scope.as_deref(), body, ctx),
            StmtKind::Output { name, value } => {
                self.only_in_model(stmt, "output", ctx)?;
                let v = match value {
                    Some(e) => self.eval(env, e)?,
                    None => env.get(name).cloned().ok_or_else(|| {
                        LangError::new(
                            stmt.pos,
                            format!("'{name}' is not defined; write 'output {name} = EXPR'"),
                        )
                    })?,
                };
                let id = self.expect_tensor(&v, stmt.pos, &format!("output '{name}'"))?;
                if self.outputs.iter().any(|(n, _, _)| n == name) || name == "loss" {
                    return fail(stmt.pos, format!("output '{name}' is declared twice"));
                }
                if self.loss == Some(id) || self.outputs.iter().any(|(_, o, _)| *o == id) {
                    return fail(
                        stmt.pos,
                        format!("output '{name}' repeats another output's value"),
                    );
                }
                let out = if self.mode.last_token_only() {
                    self.at_last_token(id, stmt.pos)?
                } else {
                    id
                };
                self.outputs.push((name.clone(), out, stmt.pos));
                // `output y = e` also binds `y`, so later statements can use it.
                env.define(name, Val::Tensor(id));
                Ok(())
            }
            StmtKind::Loss { value } => {
                self.only_in_model(stmt, "loss", ctx)?;
                if self.loss.is_some() {
                    return fail(stmt.pos, "the loss is declared twice");
                }
                let v = self.eval(env, value)?;
                let id = self.expect_tensor(&v, value.pos, "the loss")?;
                let ty = self.ty(id);
                if ty.rank() != 0 || !ty.dtype.is_float() {
                    return fail(
                        value.pos,
                        format!("the loss must be a float scalar (e.g. f32[]), found {ty}; reduce it with mean(...) or sum(...)"),
                    );
                }
                self.loss = Some(id);
                Ok(())
            }
            StmtKind::Return { .. } => fail(
                stmt.pos,
                "'return' is only allowed as the last statement of a function",
            ),
        }
    }

    fn fresh_name(&self, env: &Env, name: &str, pos: Pos) -> LangResult<()> {
        if env.defines_here(name) {
            return fail(pos, format!("'{name}' is already defined"));
        }
        Ok(())
    }

    fn config(&mut self, env: &mut Env, name: &str, value: &Expr, pos: Pos) -> LangResult<()> {
        if self.configs.iter().any(|(n, _)| n == name) {
            return fail(pos, format!("config '{name}' is defined twice"));
        }
        let default = self.eval(env, value)?;
        if !matches!(default, Val::Int(_) | Val::Float(_) | Val::Bool(_)) {
            return fail(
                value.pos,
                format!(
                    "a config must be a number or a boolean, found {}",
                    default.kind()
                ),
            );
        }
        let v = match self.overrides.remove(name) {
            None => default,
            Some(text) => {
                let bad = |what: &str| {
                    LangError::unlocated(format!(
                        "--set {name}={text}: expected {what} (the default is {}), found '{text}'",
                        show_const(&default)
                    ))
                };
                match default {
                    Val::Int(_) => Val::Int(text.trim().parse().map_err(|_| bad("an integer"))?),
                    Val::Float(_) => Val::Float(text.trim().parse().map_err(|_| bad("a number"))?),
                    Val::Bool(_) => {
                        Val::Bool(text.trim().parse().map_err(|_| bad("true or false"))?)
                    }
                    // Checked above: a config is a number or a boolean.
                    other => other,
                }
            }
        };
        self.configs.push((name.to_string(), v.clone()));
        env.define(name, v);
        Ok(())
    }

    fn param(
        &mut self,
        env: &mut Env,
        name: &str,
        te: &TypeExpr,
        init: &Expr,
        pos: Pos,
    ) -> LangResult<()> {
        let ty = self.resolve_type(env, te, DimMode::Bound)?;
        check_param_type(&ty).map_err(|e| LangError::new(te.pos, e.to_string()))?;
        let init = self.initialiser(env, init, &ty)?;
        let full = self.scoped(name);
        let id = self.b.param(&full, ty, init).map_err(|_| {
            LangError::new(
                pos,
                format!(
                    "parameter '{full}' is declared twice; give each call or loop its own scope with 'as NAME'"
                ),
            )
        })?;
        self.mark(pos);
        env.define(name, Val::Tensor(id));
        Ok(())
    }

    fn initialiser(&mut self, env: &mut Env, e: &Expr, ty: &TensorType) -> LangResult<Init> {
        let (name, args): (&str, &[super::ast::Arg]) = match &e.kind {
            ExprKind::Name(n) => (n, &[]),
            ExprKind::Call {
                func, args, scope, ..
            } if scope.is_none() => (func, args),
            _ => {
                return fail(
                    e.pos,
                    format!(
                        "expected an initialiser ({})",
                        super::init::INITIALISERS.join(", ")
                    ),
                )
            }
        };
        let mut nums = Vec::new();
        let mut mean = None;
        for a in args {
            let v = self.eval(env, &a.value)?;
            let x = v.as_f64().ok_or_else(|| {
                LangError::new(
                    a.pos,
                    format!("initialiser arguments must be numbers, found {}", v.kind()),
                )
            })?;
            match a.name.as_deref() {
                None => nums.push(x),
                Some("mean") => mean = Some(x),
                Some(other) => {
                    return fail(
                        a.pos,
                        format!("initialiser '{name}' has no argument '{other}'"),
                    )
                }
            }
        }
        initialiser(name, &nums, mean, ty).map_err(|m| LangError::new(e.pos, m))
    }

    #[allow(clippy::too_many_arguments)]
    fn for_loop(
        &mut self,
        env: &mut Env,
        var: &str,
        start: &Expr,
        end: &Expr,
        scope: Option<&str>,
        body: &[Stmt],
        ctx: Context,
    ) -> LangResult<()> {
        let from = self.const_int(env, start, "the start of a loop range")?;
        let to = self.const_int(env, end, "the end of a loop range")?;
        if to.saturating_sub(from) > MAX_LOOP {
            return fail(
                end.pos,
                format!("a loop may run at most {MAX_LOOP} times, found {from}..{to}"),
            );
        }
        if let Some(s) = scope {
            self.prefix.push(s.to_string());
        }
        let inner = if ctx == Context::Function {
            Context::Function
        } else {
            Context::Loop
        };
        let mut result = Ok(());
        for i in from..to {
            self.iterations += 1;
            if self.iterations > MAX_ITERATIONS {
                result = fail(
                    start.pos,
                    format!("the program runs more than {MAX_ITERATIONS} loop iterations"),
                );
                break;
            }
            if scope.is_some() {
                self.prefix.push(i.to_string());
            }
            env.push();
            env.define(var, Val::Int(i));
            let r = self.exec_block(env, body, inner);
            env.pop();
            if scope.is_some() {
                self.prefix.pop();
            }
            if let Err(e) = r {
                result = Err(e);
                break;
            }
            if let Ok(Some(_)) = r {
                result = fail(start.pos, "'return' cannot be inside a loop");
                break;
            }
            if self.b.graph().values.len() > MAX_VALUES {
                result = fail(
                    start.pos,
                    format!("the program creates more than {MAX_VALUES} values"),
                );
                break;
            }
        }
        if scope.is_some() {
            self.prefix.pop();
        }
        result
    }

    /// Evaluates `e` to a compile-time integer.
    pub(super) fn const_int(&mut self, env: &mut Env, e: &Expr, what: &str) -> LangResult<i64> {
        match self.eval(env, e)? {
            Val::Int(n) => Ok(n),
            other => fail(
                e.pos,
                format!(
                    "{what} must be a compile-time integer, found {}",
                    other.kind()
                ),
            ),
        }
    }

    /// Calls the user function `f`.
    pub(super) fn call_user(
        &mut self,
        f: &'p FnDef,
        args: Vec<(Val, Pos)>,
        scope: Option<&str>,
        pos: Pos,
    ) -> LangResult<Val> {
        if args.len() != f.params.len() {
            return fail(
                pos,
                format!(
                    "'{}' takes {} argument(s), found {}",
                    f.name,
                    f.params.len(),
                    args.len()
                ),
            );
        }
        if self.call_depth >= MAX_CALL_DEPTH {
            return fail(
                pos,
                format!(
                    "calls nest deeper than {MAX_CALL_DEPTH} (is '{}' recursive?)",
                    f.name
                ),
            );
        }
        let mut callee = Env::new();
        for (n, v) in &self.configs {
            callee.define(n, v.clone());
        }
        let mut bound: HashMap<String, Dim> = HashMap::new();
        for ((pname, te, _), (v, apos)) in f.params.iter().zip(args) {
            if te.dims.is_empty() && (te.dtype == "int" || te.dtype == "float") {
                let ok = matches!(
                    (&v, te.dtype.as_str()),
                    (Val::Int(_), _) | (Val::Float(_), "float")
                );
                if !ok {
                    return fail(
                        apos,
                        format!(
                            "argument '{pname}' of '{}' must be a compile-time {}, found {}",
                            f.name,
                            te.dtype,
                            v.kind()
                        ),
                    );
                }
                let v = match (v, te.dtype.as_str()) {
                    (Val::Int(n), "float") => Val::Float(n as f64),
                    (v, _) => v,
                };
                callee.define(pname, v);
                continue;
            }
            let id =
                self.expect_tensor(&v, apos, &format!("argument '{pname}' of '{}'", f.name))?;
            let actual = self.ty(id);
            self.match_signature(&callee, te, &actual, &mut bound, apos, pname, &f.name)?;
            callee.define(pname, Val::Tensor(id));
        }
        for (name, d) in &bound {
            let v = match d.as_static() {
                Some(n) => Val::Int(n as i64),
                None => Val::Dim(d.clone()),
            };
            callee.define(name, v);
        }
        callee.push();
        if let Some(s) = scope {
            self.prefix.push(s.to_string());
        }
        self.call_depth += 1;
        let result = self.exec_block(&mut callee, &f.body, Context::Function);
        self.call_depth -= 1;
        if scope.is_some() {
            self.prefix.pop();
        }
        let result = result?.ok_or_else(|| {
            LangError::new(
                f.pos,
                format!("function '{}' must end with 'return EXPR'", f.name),
            )
        })?;
        if let Some(rt) = &f.ret {
            let want = self.resolve_type(&callee, rt, DimMode::Bound)?;
            let id = self.expect_tensor(&result, rt.pos, &format!("the result of '{}'", f.name))?;
            let got = self.ty(id);
            if got != want {
                return fail(
                    rt.pos,
                    format!(
                        "'{}' is declared to return {want}, but its body returns {got} (called at {pos})",
                        f.name
                    ),
                );
            }
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn match_signature(
        &mut self,
        callee: &Env,
        te: &TypeExpr,
        actual: &TensorType,
        bound: &mut HashMap<String, Dim>,
        pos: Pos,
        pname: &str,
        fname: &str,
    ) -> LangResult<()> {
        let mismatch = |what: String| {
            LangError::new(
                pos,
                format!("argument '{pname}' of '{fname}' has type {actual}, but {what}"),
            )
        };
        let dtype = parse_dtype(&te.dtype, te.pos)?;
        if dtype != actual.dtype {
            return Err(mismatch(format!("the signature expects dtype {dtype}")));
        }
        if te.dims.len() != actual.rank() {
            return Err(mismatch(format!(
                "the signature expects rank {} ({} axes)",
                te.dims.len(),
                te.dims.len()
            )));
        }
        for (axis, (de, ad)) in te.dims.iter().zip(actual.dims()).enumerate() {
            if let ExprKind::Name(n) = &de.kind {
                if callee.get(n).is_none() && !bound.contains_key(n) {
                    if !is_symbol(n) {
                        return fail(de.pos, format!("'{n}' cannot name a dimension"));
                    }
                    bound.insert(n.clone(), ad.clone());
                    continue;
                }
            }
            let want = self.eval_dim(callee, de, &mut DimMode::Unify(bound))?;
            if want != *ad {
                return Err(mismatch(format!(
                    "the signature expects size {want} on axis {axis}, found {ad}"
                )));
            }
        }
        Ok(())
    }

    /// Turns a written type into an IR type.
    fn resolve_type(
        &mut self,
        env: &Env,
        te: &TypeExpr,
        mut mode: DimMode,
    ) -> LangResult<TensorType> {
        let dtype = parse_dtype(&te.dtype, te.pos)?;
        let mut dims = Vec::with_capacity(te.dims.len());
        for d in &te.dims {
            dims.push(self.eval_dim(env, d, &mut mode)?);
        }
        let shape = Shape(dims);
        check_numel(&shape).map_err(|e| LangError::new(te.pos, e))?;
        Ok(TensorType::new(dtype, shape))
    }

    /// Evaluates a dimension expression: integers, bound names, symbols and products;
    /// `+ - /` only between static sizes (and `/` only when it divides exactly).
    fn eval_dim(&mut self, env: &Env, e: &Expr, mode: &mut DimMode) -> LangResult<Dim> {
        let bad = |m: String| LangError::new(e.pos, m);
        match &e.kind {
            ExprKind::Int(n) => Dim::checked_fixed(*n).map_err(|e| bad(e.to_string())),
            ExprKind::Name(n) => match env.get(n) {
                Some(v) => dim_of(v).map_err(|k| bad(format!("'{n}' is {k}, not a dimension size"))),
                None => match mode {
                    DimMode::Unify(b) if b.contains_key(n) => Ok(b[n].clone()),
                    DimMode::NewSymbols if is_symbol(n) => Ok(Dim::sym(n)),
                    _ => Err(bad(format!(
                        "unknown dimension '{n}' (a size must be a number, a config, or a dimension named in an input or in the function's signature)"
                    ))),
                },
            },
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval_dim(env, lhs, mode)?;
                let b = self.eval_dim(env, rhs, mode)?;
                use super::ast::BinOp;
                if *op == BinOp::Mul {
                    return mul_dims(&a, &b).map_err(bad);
                }
                if *op == BinOp::Div {
                    return a
                        .div_exact(&b)
                        .ok_or_else(|| bad(format!("{a} is not divisible by {b}")));
                }
                let (Some(x), Some(y)) = (a.as_static(), b.as_static()) else {
                    return Err(bad(format!(
                        "'{}' on run-time dimensions ({a}, {b}) is not supported; only '*' and exact '/' are",
                        op.symbol()
                    )));
                };
                match op {
                    BinOp::Add => x.checked_add(y).map(Dim::fixed).ok_or_else(|| bad("dimension overflow".into())),
                    BinOp::Sub => x.checked_sub(y).map(Dim::fixed).ok_or_else(|| bad(format!("dimension {x} - {y} is negative"))),
                    _ => Err(bad(format!("'{}' cannot appear in a dimension", op.symbol()))),
                }
            }
            _ => Err(bad(
                "a dimension must be an integer, a name, or a product like 4*d".to_string(),
            )),
        }
    }

    /// Converts `v` to a tensor of type `want` (constants become splats), or says why not.
    pub(super) fn coerce_to(
        &mut self,
        v: Val,
        want: &TensorType,
        pos: Pos,
        what: &str,
    ) -> LangResult<Val> {
        match v {
            Val::Tensor(id) => {
                let got = self.ty(id);
                if got != *want {
                    return fail(
                        pos,
                        format!("{what} is annotated {want}, but its value has type {got}"),
                    );
                }
                Ok(v)
            }
            other => {
                let id = self.splat(&other, want, pos)?;
                Ok(Val::Tensor(id))
            }
        }
    }

    /// The tensor in `v`, or an error naming `what`.
    pub(super) fn expect_tensor(&self, v: &Val, pos: Pos, what: &str) -> LangResult<ValueId> {
        match v {
            Val::Tensor(id) => Ok(*id),
            other => fail(
                pos,
                format!("{what} must be a tensor, found {}", other.kind()),
            ),
        }
    }

    /// Looks up a user function.
    pub(super) fn user_function(&self, name: &str) -> Option<&'p FnDef> {
        self.functions.get(name).copied()
    }

    /// Every user function name (for hints).
    pub(super) fn function_names(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }
}

/// The size held by a compile-time value, or its kind.
pub(super) fn dim_of(v: &Val) -> Result<Dim, &'static str> {
    match v {
        Val::Int(n) if *n >= 0 => Ok(Dim::fixed(*n as u64)),
        Val::Int(_) => Err("a negative integer"),
        Val::Dim(d) => Ok(d.clone()),
        other => Err(other.kind()),
    }
}

/// A dtype by name.
pub(super) fn parse_dtype(name: &str, pos: Pos) -> LangResult<DType> {
    DType::from_name(name).ok_or_else(|| {
        LangError::new(
            pos,
            format!(
                "unknown dtype '{name}' (expected one of: {})",
                DType::ALL.map(|d| d.name()).join(", ")
            ),
        )
    })
}

fn show_const(v: &Val) -> String {
    match v {
        Val::Int(n) => n.to_string(),
        Val::Float(x) => x.to_string(),
        Val::Bool(b) => b.to_string(),
        other => other.kind().to_string(),
    }
}
