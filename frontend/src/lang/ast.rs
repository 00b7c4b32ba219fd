//! The syntax tree of a `.smelt` program, as written (no types or values yet).

use smelt_compiler::ir::text::Pos;

/// A whole program: function definitions and top-level statements, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// `fn` definitions (callable from anywhere in the file).
    pub functions: Vec<FnDef>,
    /// The model body: every statement outside functions.
    pub body: Vec<Stmt>,
}

/// `fn name(a: f32[B, D], ...) -> f32[B, D] { ... return e }`.
#[derive(Debug, Clone, PartialEq)]
pub struct FnDef {
    /// The function's name.
    pub name: String,
    /// Where the name is.
    pub pos: Pos,
    /// Parameters with their declared types (`int` and `float` parameters, written
    /// without brackets, take compile-time numbers).
    pub params: Vec<(String, TypeExpr, Pos)>,
    /// The declared result type, checked at each call when present.
    pub ret: Option<TypeExpr>,
    /// The body; its last statement is a `return`.
    pub body: Vec<Stmt>,
}

/// A tensor type as written: `f32[B, 3*d_model]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    /// The dtype name (`f32`, `i32`, ...).
    pub dtype: String,
    /// Where the type starts.
    pub pos: Pos,
    /// One expression per axis: integers, config names, dimension symbols and products.
    pub dims: Vec<Expr>,
}

/// A statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// What it does.
    pub kind: StmtKind,
    /// Where it starts.
    pub pos: Pos,
}

/// The kinds of statement.
#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    /// `config name = 512`: a constant that `--set name=VALUE` can override.
    Config {
        /// Its name.
        name: String,
        /// Its default value (a constant expression).
        value: Expr,
    },
    /// `input name: TYPE`: fed by the caller.
    Input {
        /// Its name.
        name: String,
        /// Its type.
        ty: TypeExpr,
    },
    /// `param name: TYPE = INIT`: a trainable tensor.
    Param {
        /// Its name (prefixed by the enclosing scopes in the IR).
        name: String,
        /// Its type (static shape, float dtype).
        ty: TypeExpr,
        /// The initialiser: `zeros`, `normal(0.02)`, ...
        init: Expr,
    },
    /// `let name[: TYPE] = expr`.
    Let {
        /// The bound name.
        name: String,
        /// An optional type annotation, checked.
        ty: Option<TypeExpr>,
        /// The value.
        value: Expr,
    },
    /// `name = expr`: rebinds an existing variable to a value of the same type.
    Assign {
        /// The variable.
        name: String,
        /// The new value.
        value: Expr,
    },
    /// `for i in START..END [as scope] { ... }`: the body once per index, unrolled.
    For {
        /// The index variable (an integer constant in the body).
        var: String,
        /// First index.
        start: Expr,
        /// One past the last index.
        end: Expr,
        /// Names the parameters of each iteration `scope.<i>.<name>`.
        scope: Option<String>,
        /// The repeated statements.
        body: Vec<Stmt>,
    },
    /// `output name [= expr]`: a graph output.
    Output {
        /// The output's name.
        name: String,
        /// Its value; `None` outputs the variable `name`.
        value: Option<Expr>,
    },
    /// `loss = expr`: the scalar the model is trained to minimise (output `loss`, first).
    Loss {
        /// The loss value.
        value: Expr,
    },
    /// `return expr`: the result of a function (its last statement).
    Return {
        /// The result.
        value: Expr,
    },
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What it computes.
    pub kind: ExprKind,
    /// Where it is (for binary operators: the operator).
    pub pos: Pos,
}

/// Binary operators, from the lowest precedence class to the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `@` (matrix product)
    MatMul,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
        }
    }
}

/// The kinds of expression.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `128`
    Int(u64),
    /// `0.02`
    Float(f64),
    /// `true` / `false`
    Bool(bool),
    /// `"tanh"`
    Str(String),
    /// A variable, config, dimension symbol or dtype name.
    Name(String),
    /// `[a, b, c]`: a list (shapes, permutations, tensors to concatenate).
    List(Vec<Expr>),
    /// `-x`
    Neg(Box<Expr>),
    /// `a OP b`
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `f(a, b, name=c) [as scope]`
    Call {
        /// The function (user-defined or built-in).
        func: String,
        /// Arguments in order; keyword arguments have names.
        args: Vec<Arg>,
        /// `as scope`: prefixes the names of parameters the call declares.
        scope: Option<String>,
    },
    /// `x[i, a:b, ...]`
    Index {
        /// The indexed tensor.
        base: Box<Expr>,
        /// One item per indexed axis.
        items: Vec<IndexItem>,
    },
}

/// A call argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The keyword, for `name=value`.
    pub name: Option<String>,
    /// The value.
    pub value: Expr,
    /// Where the argument starts.
    pub pos: Pos,
}

/// One item of an index expression.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexItem {
    /// `i`: picks one position and drops the axis.
    At(Expr),
    /// `a:b:c` with any part omitted: keeps the axis.
    Range {
        /// First index (default 0).
        start: Option<Expr>,
        /// One past the last (default the axis size).
        end: Option<Expr>,
        /// Stride (default 1).
        step: Option<Expr>,
        /// Where the item starts.
        pos: Pos,
    },
    /// `...`: as many full axes as needed.
    Ellipsis(Pos),
}
