//! Recursive-descent parser from tokens to the syntax tree ([`super::ast`]).
//!
//! Precedence, loosest first: comparisons (`== != < <= > >=`, not chained), `+ -`,
//! `* / @`, unary `-`, then postfix calls `f(...)`, indexing `x[...]` and `as scope`.
//! A `(` or `[` continues an expression only on the same line, so a new line never
//! silently turns into a call or an index.

use super::ast::*;
use super::error::{fail, LangError, LangResult};
use super::lexer::{lex, Tok, Token};
use smelt_compiler::ir::text::Pos;

/// Words with a fixed meaning that cannot name variables.
pub const KEYWORDS: &[&str] = &[
    "config", "input", "param", "let", "for", "in", "as", "output", "loss", "return", "fn", "true",
    "false",
];

/// Deepest nesting of expressions and blocks, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 128;

/// Parses a whole program.
pub fn parse(src: &str) -> LangResult<Program> {
    let mut p = Parser {
        tokens: lex(src)?,
        at: 0,
        depth: 0,
    };
    let mut program = Program {
        functions: Vec::new(),
        body: Vec::new(),
    };
    while p.peek() != &Tok::Eof {
        if p.is_word("fn") {
            program.functions.push(p.function()?);
        } else {
            program.body.push(p.statement()?);
        }
    }
    Ok(program)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        let i = (self.at + ahead).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    fn pos(&self) -> Pos {
        self.tokens[self.at].pos
    }

    fn prev_line(&self) -> usize {
        self.tokens[self.at.saturating_sub(1)].pos.line
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.at].clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(x) if x == w)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = self.is_sym(s);
        if yes {
            self.bump();
        }
        yes
    }

    fn expected(&self, what: &str) -> LangError {
        LangError::new(
            self.pos(),
            format!("expected {what}, found {}", self.peek()),
        )
    }

    fn expect_sym(&mut self, s: &str) -> LangResult<Pos> {
        if self.is_sym(s) {
            Ok(self.bump().pos)
        } else {
            Err(self.expected(&format!("'{s}'")))
        }
    }

    fn expect_word(&mut self, w: &str) -> LangResult<()> {
        if self.is_word(w) {
            self.bump();
            Ok(())
        } else {
            Err(self.expected(&format!("'{w}'")))
        }
    }

    /// A name that is not a keyword.
    fn name(&mut self, what: &str) -> LangResult<(String, Pos)> {
        match self.peek().clone() {
            Tok::Ident(s) if !KEYWORDS.contains(&s.as_str()) => Ok((s, self.bump().pos)),
            Tok::Ident(s) => fail(
                self.pos(),
                format!("expected {what}, found keyword '{s}' (keywords cannot be names)"),
            ),
            _ => Err(self.expected(what)),
        }
    }

    fn enter(&mut self) -> LangResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail(
                self.pos(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            );
        }
        Ok(())
    }

    fn function(&mut self) -> LangResult<FnDef> {
        self.expect_word("fn")?;
        let (name, pos) = self.name("a function name")?;
        self.expect_sym("(")?;
        let mut params = Vec::new();
        while !self.is_sym(")") {
            let (pname, ppos) = self.name("a parameter name")?;
            self.expect_sym(":")?;
            // `int` and `float` parameters take compile-time numbers (sizes, scales).
            let ty = match self.peek() {
                Tok::Ident(w)
                    if (w == "int" || w == "float") && self.peek_at(1) != &Tok::Sym("[") =>
                {
                    let dtype = w.clone();
                    let pos = self.bump().pos;
                    TypeExpr {
                        dtype,
                        pos,
                        dims: Vec::new(),
                    }
                }
                _ => self.type_expr()?,
            };
            params.push((pname, ty, ppos));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        let ret = if self.eat_sym("->") {
            Some(self.type_expr()?)
        } else {
            None
        };
        let body = self.block()?;
        match body.last() {
            Some(Stmt {
                kind: StmtKind::Return { .. },
                ..
            }) => {}
            _ => {
                return fail(
                    pos,
                    format!("function '{name}' must end with 'return EXPR'"),
                )
            }
        }
        Ok(FnDef {
            name,
            pos,
            params,
            ret,
            body,
        })
    }

    fn block(&mut self) -> LangResult<Vec<Stmt>> {
        self.expect_sym("{")?;
        self.enter()?;
        let mut body = Vec::new();
        while !self.is_sym("}") {
            if self.peek() == &Tok::Eof {
                return Err(self.expected("'}'"));
            }
            body.push(self.statement()?);
        }
        self.bump();
        self.depth -= 1;
        Ok(body)
    }

    fn type_expr(&mut self) -> LangResult<TypeExpr> {
        let (dtype, pos) = self.name("a tensor type like f32[B, 128]")?;
        self.expect_sym("[")?;
        let mut dims = Vec::new();
        while !self.is_sym("]") {
            dims.push(self.expr()?);
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym("]")?;
        Ok(TypeExpr { dtype, pos, dims })
    }

    fn statement(&mut self) -> LangResult<Stmt> {
        let pos = self.pos();
        let word = match self.peek() {
            Tok::Ident(w) => w.clone(),
            _ => return Err(self.expected("a statement")),
        };
        let kind = match word.as_str() {
            "config" => {
                self.bump();
                let (name, _) = self.name("a config name")?;
                self.expect_sym("=")?;
                StmtKind::Config {
                    name,
                    value: self.expr()?,
                }
            }
            "input" => {
                self.bump();
                let (name, _) = self.name("an input name")?;
                self.expect_sym(":")?;
                StmtKind::Input {
                    name,
                    ty: self.type_expr()?,
                }
            }
            "param" => {
                self.bump();
                let (name, _) = self.name("a parameter name")?;
                self.expect_sym(":")?;
                let ty = self.type_expr()?;
                self.expect_sym("=")?;
                StmtKind::Param {
                    name,
                    ty,
                    init: self.expr()?,
                }
            }
            "let" => {
                self.bump();
                let (name, _) = self.name("a variable name")?;
                let ty = if self.eat_sym(":") {
                    Some(self.type_expr()?)
                } else {
                    None
                };
                self.expect_sym("=")?;
                StmtKind::Let {
                    name,
                    ty,
                    value: self.expr()?,
                }
            }
            "for" => {
                self.bump();
                let (var, _) = self.name("a loop variable")?;
                self.expect_word("in")?;
                let start = self.additive()?;
                self.expect_sym("..")?;
                let end = self.additive()?;
                let scope = if self.is_word("as") {
                    self.bump();
                    Some(self.name("a scope name")?.0)
                } else {
                    None
                };
                StmtKind::For {
                    var,
                    start,
                    end,
                    scope,
                    body: self.block()?,
                }
            }
            "output" => {
                self.bump();
                let (name, _) = self.name("an output name")?;
                let value = if self.eat_sym("=") {
                    Some(self.expr()?)
                } else {
                    None
                };
                StmtKind::Output { name, value }
            }
            "loss" => {
                self.bump();
                self.expect_sym("=")?;
                StmtKind::Loss { value: self.expr()? }
            }
            "return" => {
                self.bump();
                StmtKind::Return { value: self.expr()? }
            }
            _ if self.peek_at(1) == &Tok::Sym("=") => {
                let (name, _) = self.name("a variable name")?;
                self.bump();
                StmtKind::Assign {
                    name,
                    value: self.expr()?,
                }
            }
            _ => {
                return fail(
                    pos,
                    format!(
                        "expected a statement (config, input, param, let, for, output, loss, return or NAME = ...), found '{word}'"
                    ),
                )
            }
        };
        Ok(Stmt { kind, pos })
    }

    /// A full expression (comparisons included).
    pub fn expr(&mut self) -> LangResult<Expr> {
        self.enter()?;
        let lhs = self.additive()?;
        let op = match self.peek() {
            Tok::Sym("==") => Some(BinOp::Eq),
            Tok::Sym("!=") => Some(BinOp::Ne),
            Tok::Sym("<") => Some(BinOp::Lt),
            Tok::Sym("<=") => Some(BinOp::Le),
            Tok::Sym(">") => Some(BinOp::Gt),
            Tok::Sym(">=") => Some(BinOp::Ge),
            _ => None,
        };
        let result = match op {
            Some(op) => {
                let pos = self.bump().pos;
                let rhs = self.additive()?;
                binary(op, lhs, rhs, pos)
            }
            None => lhs,
        };
        self.depth -= 1;
        Ok(result)
    }

    fn additive(&mut self) -> LangResult<Expr> {
        let entered = self.depth;
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => {
                    self.depth = entered;
                    return Ok(lhs);
                }
            };
            // Each operator nests the tree one level deeper: count it like a bracket.
            self.enter()?;
            let pos = self.bump().pos;
            let rhs = self.multiplicative()?;
            lhs = binary(op, lhs, rhs, pos);
        }
    }

    fn multiplicative(&mut self) -> LangResult<Expr> {
        let entered = self.depth;
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("@") => BinOp::MatMul,
                _ => {
                    self.depth = entered;
                    return Ok(lhs);
                }
            };
            self.enter()?;
            let pos = self.bump().pos;
            let rhs = self.unary()?;
            lhs = binary(op, lhs, rhs, pos);
        }
    }

    fn unary(&mut self) -> LangResult<Expr> {
        if self.is_sym("-") {
            let pos = self.bump().pos;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(inner)),
                pos,
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> LangResult<Expr> {
        let entered = self.depth;
        let mut e = self.primary()?;
        let result = self.postfix_rest(&mut e);
        self.depth = entered;
        result.map(|()| e)
    }

    fn postfix_rest(&mut self, e: &mut Expr) -> LangResult<()> {
        loop {
            let same_line = self.pos().line == self.prev_line();
            if self.is_sym("[") && same_line {
                self.enter()?;
                self.bump();
                let items = self.index_items()?;
                let pos = e.pos;
                let base = std::mem::replace(
                    e,
                    Expr {
                        kind: ExprKind::Bool(false),
                        pos,
                    },
                );
                *e = Expr {
                    kind: ExprKind::Index {
                        base: Box::new(base),
                        items,
                    },
                    pos,
                };
            } else if self.is_word("as") && matches!(e.kind, ExprKind::Call { .. }) {
                self.bump();
                let (scope_name, _) = self.name("a scope name after 'as'")?;
                if let ExprKind::Call { scope, .. } = &mut e.kind {
                    *scope = Some(scope_name);
                }
            } else {
                return Ok(());
            }
        }
    }

    fn index_items(&mut self) -> LangResult<Vec<IndexItem>> {
        let mut items = Vec::new();
        while !self.is_sym("]") {
            let pos = self.pos();
            if self.eat_sym("...") {
                items.push(IndexItem::Ellipsis(pos));
            } else {
                let start = if self.is_sym(":") {
                    None
                } else {
                    Some(self.expr()?)
                };
                if self.eat_sym(":") {
                    let end = if self.is_sym(":") || self.is_sym(",") || self.is_sym("]") {
                        None
                    } else {
                        Some(self.expr()?)
                    };
                    let step = if self.eat_sym(":") {
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    items.push(IndexItem::Range {
                        start,
                        end,
                        step,
                        pos,
                    });
                } else if let Some(at) = start {
                    items.push(IndexItem::At(at));
                }
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym("]")?;
        Ok(items)
    }

    fn primary(&mut self) -> LangResult<Expr> {
        let pos = self.pos();
        let kind = match self.peek().clone() {
            Tok::Int(n) => {
                self.bump();
                ExprKind::Int(n)
            }
            Tok::Float(x) => {
                self.bump();
                ExprKind::Float(x)
            }
            Tok::Str(s) => {
                self.bump();
                ExprKind::Str(s)
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.bump();
                ExprKind::Bool(w == "true")
            }
            Tok::Ident(_) => {
                let (name, _) = self.name("an expression")?;
                if self.is_sym("(") && self.pos().line == pos.line {
                    self.bump();
                    ExprKind::Call {
                        func: name,
                        args: self.args()?,
                        scope: None,
                    }
                } else {
                    ExprKind::Name(name)
                }
            }
            Tok::Sym("(") => {
                self.bump();
                let inner = self.expr()?;
                self.expect_sym(")")?;
                return Ok(inner);
            }
            Tok::Sym("[") => {
                self.bump();
                self.enter()?;
                let mut items = Vec::new();
                while !self.is_sym("]") {
                    items.push(self.expr()?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                self.expect_sym("]")?;
                self.depth -= 1;
                ExprKind::List(items)
            }
            _ => return Err(self.expected("an expression")),
        };
        Ok(Expr { kind, pos })
    }

    fn args(&mut self) -> LangResult<Vec<Arg>> {
        let mut args = Vec::new();
        while !self.is_sym(")") {
            let pos = self.pos();
            let keyword = match (self.peek().clone(), self.peek_at(1)) {
                (Tok::Ident(k), Tok::Sym("=")) => {
                    self.bump();
                    self.bump();
                    Some(k)
                }
                _ => None,
            };
            let value = self.expr()?;
            args.push(Arg {
                name: keyword,
                value,
                pos,
            });
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        Ok(args)
    }
}

fn binary(op: BinOp, lhs: Expr, rhs: Expr, pos: Pos) -> Expr {
    Expr {
        kind: ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
        pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_binds_matmul_tighter_than_add() {
        let p = parse("let y = a + b @ c * d").unwrap();
        let StmtKind::Let { value, .. } = &p.body[0].kind else {
            panic!()
        };
        let ExprKind::Binary { op, rhs, .. } = &value.kind else {
            panic!()
        };
        assert_eq!(*op, BinOp::Add);
        assert!(matches!(rhs.kind, ExprKind::Binary { op: BinOp::Mul, .. }));
    }

    #[test]
    fn a_bracket_on_a_new_line_does_not_index() {
        assert!(parse("let y = x\n[1]").is_err());
    }
}
