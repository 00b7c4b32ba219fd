//! Parser of the text form. Each line is checked as it is read (names resolved, types
//! inferred), so errors point at the line and column where the problem is.

use super::lex::{lex, Tok};
use crate::ir::{
    verify, Attr, BuildError, Builder, DType, Dim, Graph, Init, Op, Shape, TensorType, ValueId,
};
use std::collections::HashMap;
use std::fmt;
use thiserror::Error;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column (in characters), from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A syntax or type error at a position.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{pos}: {message}")]
pub struct ParseError {
    /// Where.
    pub pos: Pos,
    /// What was expected and what was found.
    pub message: String,
}

impl ParseError {
    pub(super) fn new(pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            pos,
            message: message.into(),
        }
    }
}

/// A parsed graph and the source position of each value's definition.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The graph (verified).
    pub graph: Graph,
    /// `positions[id]` is where value `id` is defined.
    pub positions: Vec<Pos>,
}

impl Parsed {
    /// Where value `id` is defined.
    pub fn pos(&self, id: ValueId) -> Pos {
        self.positions[id.index()]
    }
}

/// Parses and verifies the text form.
pub fn parse(src: &str) -> Result<Parsed, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        at: 0,
        builder: Builder::new(""),
        by_name: HashMap::new(),
        positions: Vec::new(),
        close_pos: Pos::default(),
    };
    let graph = p.file()?;
    let positions = p.positions;
    if let Err(e) = verify(&graph) {
        let pos = e.value.map(|v| positions[v.index()]).unwrap_or(p.close_pos);
        return Err(ParseError::new(pos, e.message));
    }
    Ok(Parsed { graph, positions })
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    builder: Builder,
    by_name: HashMap<String, ValueId>,
    positions: Vec<Pos>,
    /// Where the graph's closing `}` is: graph-level errors point there.
    close_pos: Pos,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn pos(&self) -> Pos {
        self.toks[self.at].1
    }

    fn bump(&mut self) -> (Tok, Pos) {
        let t = self.toks[self.at].clone();
        if t.0 != Tok::Eof {
            self.at += 1;
        }
        t
    }

    fn unexpected<T>(&self, want: &str) -> PResult<T> {
        Err(ParseError::new(
            self.pos(),
            format!("expected {want}, found {}", self.peek().describe()),
        ))
    }

    fn eat(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.unexpected(&format!("'{c}'"))
        }
    }

    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.at += 1;
        }
    }

    fn end_of_line(&mut self) -> PResult<()> {
        match self.peek() {
            Tok::Newline => {
                self.skip_newlines();
                Ok(())
            }
            Tok::Punct('}') => Ok(()),
            _ => self.unexpected("end of line"),
        }
    }

    fn word(&mut self, want: &str) -> PResult<(String, Pos)> {
        match self.bump() {
            (Tok::Word(w), pos) => Ok((w, pos)),
            _ => {
                self.at -= 1;
                self.unexpected(want)
            }
        }
    }

    fn file(&mut self) -> PResult<Graph> {
        self.skip_newlines();
        match self.peek() {
            Tok::Word(w) if w == "graph" => self.at += 1,
            _ => return self.unexpected("'graph @NAME {' at the start of the file"),
        }
        let name = match self.bump() {
            (Tok::Graph(name), _) => name,
            _ => {
                self.at -= 1;
                return self.unexpected("the graph's name ('@NAME')");
            }
        };
        self.builder = Builder::new(&name);
        self.expect('{')?;
        self.end_of_line()?;
        loop {
            self.close_pos = self.pos();
            if self.eat('}') {
                break;
            }
            if *self.peek() == Tok::Eof {
                return self.unexpected("'}' closing the graph");
            }
            self.item()?;
        }
        self.skip_newlines();
        if *self.peek() != Tok::Eof {
            return self.unexpected("end of file after the graph's '}'");
        }
        Ok(std::mem::replace(&mut self.builder, Builder::new("")).finish())
    }

    fn item(&mut self) -> PResult<()> {
        let pos = self.pos();
        match self.bump().0 {
            Tok::Word(w) if w == "input" => {
                let (name, ty) = self.typed_name()?;
                let id = self
                    .builder
                    .input(&name, ty)
                    .map_err(|m| ParseError::new(pos, m.to_string()))?;
                self.define(name, id, pos);
            }
            Tok::Word(w) if w == "param" || w == "state" => {
                let (name, ty) = self.typed_name()?;
                self.expect('=')?;
                let init = self.init()?;
                let id = if w == "param" {
                    self.builder.param(&name, ty, init)
                } else {
                    self.builder.state(&name, ty, init)
                }
                .map_err(|m| ParseError::new(pos, m.to_string()))?;
                self.define(name, id, pos);
            }
            Tok::Word(w) if w == "update" => {
                let (target, tpos) = self.operand()?;
                self.expect('=')?;
                let (value, _) = self.operand()?;
                self.builder
                    .update(target, value)
                    .map_err(|m| ParseError::new(tpos, m.to_string()))?;
            }
            Tok::Word(w) if w == "output" => loop {
                let (id, opos) = self.operand()?;
                self.builder
                    .output(id)
                    .map_err(|m| ParseError::new(opos, m.to_string()))?;
                if !self.eat(',') {
                    break;
                }
            },
            Tok::Value(name) => self.node(name, pos)?,
            _ => {
                self.at -= 1;
                return self
                    .unexpected("'input', 'param', 'state', 'output', 'update' or '%name = ...'");
            }
        }
        self.end_of_line()
    }

    fn define(&mut self, name: String, id: ValueId, pos: Pos) {
        self.by_name.insert(name, id);
        self.positions.push(pos);
    }

    fn typed_name(&mut self) -> PResult<(String, TensorType)> {
        let name = match self.bump() {
            (Tok::Value(name), _) => name,
            _ => {
                self.at -= 1;
                return self.unexpected("a value name ('%name')");
            }
        };
        self.expect(':')?;
        Ok((name, self.ty()?))
    }

    fn ty(&mut self) -> PResult<TensorType> {
        let (word, pos) = self.word("a type such as 'f32[B, 784]'")?;
        let dtype = DType::from_name(&word).ok_or_else(|| {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            ParseError::new(
                pos,
                format!(
                    "unknown dtype '{word}' (expected one of {})",
                    names.join(", ")
                ),
            )
        })?;
        self.expect('[')?;
        let mut dims = Vec::new();
        if !self.eat(']') {
            loop {
                dims.push(self.dim()?);
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(TensorType::new(dtype, Shape(dims)))
    }

    fn dim(&mut self) -> PResult<Dim> {
        let mut dim = Dim::fixed(1);
        loop {
            let pos = self.pos();
            let factor = match self.bump().0 {
                Tok::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                    Dim::fixed(crate::ir::parse_size(&n).ok_or_else(|| {
                        ParseError::new(pos, format!("the dimension {n} is larger than 2^63-1"))
                    })?)
                }
                Tok::Number(n) => {
                    return Err(ParseError::new(
                        pos,
                        format!("a dimension must be a size or a symbol, found '{n}'"),
                    ))
                }
                Tok::Word(w) if crate::ir::is_symbol(&w) => Dim::sym(&w),
                _ => {
                    self.at -= 1;
                    return self
                        .unexpected("a dimension (a size such as 784 or a symbol such as B)");
                }
            };
            dim = dim
                .mul(&factor)
                .map_err(|e| ParseError::new(pos, e.to_string()))?;
            if !self.eat('*') {
                return Ok(dim);
            }
        }
    }

    fn number(&mut self) -> PResult<(f64, bool, Pos)> {
        let pos = self.pos();
        let text = match self.bump().0 {
            Tok::Number(n) => n,
            Tok::Word(w) if w == "inf" || w == "nan" => w,
            _ => {
                self.at -= 1;
                return self.unexpected("a number");
            }
        };
        let is_int = text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+');
        let value = text
            .parse::<f64>()
            .map_err(|_| ParseError::new(pos, format!("'{text}' is not a number")))?;
        if is_int && text.trim_start_matches(['-', '+']).parse::<i64>().is_err() {
            return Err(ParseError::new(
                pos,
                format!("integer '{text}' is out of range"),
            ));
        }
        Ok((value, is_int, pos))
    }

    fn init(&mut self) -> PResult<Init> {
        let (word, pos) =
            self.word("an initialiser (zeros, ones, uniform(a, b), normal(mean, std))")?;
        let two_args = |p: &mut Parser| -> PResult<(f64, f64)> {
            p.expect('(')?;
            let a = p.number()?.0;
            p.expect(',')?;
            let b = p.number()?.0;
            p.expect(')')?;
            Ok((a, b))
        };
        match word.as_str() {
            "zeros" => Ok(Init::Zeros),
            "ones" => Ok(Init::Ones),
            "uniform" => two_args(self).map(|(low, high)| Init::Uniform { low, high }),
            "normal" => two_args(self).map(|(mean, std)| Init::Normal { mean, std }),
            _ => Err(ParseError::new(
                pos,
                format!("unknown initialiser '{word}' (expected zeros, ones, uniform(a, b) or normal(mean, std))"),
            )),
        }
    }

    fn operand(&mut self) -> PResult<(ValueId, Pos)> {
        match self.bump() {
            (Tok::Value(name), pos) => match self.by_name.get(&name) {
                Some(&id) => Ok((id, pos)),
                None => Err(ParseError::new(
                    pos,
                    format!("value '%{name}' is not defined"),
                )),
            },
            _ => {
                self.at -= 1;
                self.unexpected("a value ('%name')")
            }
        }
    }

    fn node(&mut self, name: String, pos: Pos) -> PResult<()> {
        let declared = if self.eat(':') {
            Some(self.ty()?)
        } else {
            None
        };
        self.expect('=')?;
        let (op_name, op_pos) = self.word("an op name")?;
        let mut operands = Vec::new();
        if matches!(self.peek(), Tok::Value(_)) {
            loop {
                operands.push(self.operand()?.0);
                if !self.eat(',') {
                    break;
                }
            }
        }
        let attrs = if *self.peek() == Tok::Punct('{') {
            self.attrs()?
        } else {
            Vec::new()
        };
        let op = Op::from_parts(&op_name, attrs).map_err(|m| {
            let hint = if m.starts_with("unknown op") {
                did_you_mean(&op_name)
            } else {
                String::new()
            };
            ParseError::new(op_pos, format!("{m}{hint}"))
        })?;
        let id = self
            .builder
            .node(Some(&name), op, &operands, declared)
            .map_err(|e| {
                let at = match e {
                    BuildError::Duplicate(_) => pos,
                    _ => op_pos,
                };
                ParseError::new(at, e.to_string())
            })?;
        self.define(name, id, pos);
        Ok(())
    }

    fn attrs(&mut self) -> PResult<Vec<(String, Attr)>> {
        self.expect('{')?;
        let mut attrs = Vec::new();
        if self.eat('}') {
            return Ok(attrs);
        }
        loop {
            let (key, _) = self.word("an attribute name")?;
            self.expect('=')?;
            attrs.push((key, self.attr_value()?));
            if self.eat('}') {
                return Ok(attrs);
            }
            self.expect(',')?;
        }
    }

    fn attr_value(&mut self) -> PResult<Attr> {
        match self.peek().clone() {
            Tok::Punct('[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(']') {
                    loop {
                        items.push(self.number()?);
                        if self.eat(']') {
                            break;
                        }
                        self.expect(',')?;
                    }
                }
                if items.iter().all(|(_, is_int, _)| *is_int) {
                    Ok(Attr::Ints(
                        items.iter().map(|(v, _, _)| *v as i64).collect(),
                    ))
                } else {
                    Ok(Attr::Floats(items.iter().map(|(v, _, _)| *v).collect()))
                }
            }
            Tok::Word(w) if w == "true" || w == "false" => {
                self.at += 1;
                Ok(Attr::Bool(w == "true"))
            }
            Tok::Word(w) if w != "inf" && w != "nan" => {
                self.at += 1;
                Ok(Attr::Word(w))
            }
            _ => {
                let (v, is_int, _) = self.number()?;
                Ok(if is_int {
                    Attr::Int(v as i64)
                } else {
                    Attr::Float(v)
                })
            }
        }
    }
}

fn did_you_mean(name: &str) -> String {
    let best = Op::all_names()
        .into_iter()
        .map(|n| (edit_distance(name, n), n))
        .min()
        .filter(|(d, _)| *d <= 2);
    best.map(|(_, n)| format!(" (did you mean '{n}'?)"))
        .unwrap_or_default()
}

/// The Levenshtein distance between `a` and `b`, in characters (for "did you mean" hints).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
