//! Splits source text into tokens, each with its position. `#` starts a comment that
//! runs to the end of the line; newlines are not significant.

use super::error::{fail, LangResult};
use smelt_compiler::ir::text::Pos;
use std::fmt;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name: `x`, `layer_norm`, `f32`, or a keyword.
    Ident(String),
    /// An integer literal.
    Int(u64),
    /// A float literal (has a `.` or an exponent).
    Float(f64),
    /// A string literal (used for keyword-argument values such as `"tanh"`).
    Str(String),
    /// Punctuation or an operator: `(`, `..`, `->`, `==`, ...
    Sym(&'static str),
    /// The end of the input.
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "'{s}'"),
            Tok::Int(n) => write!(f, "'{n}'"),
            Tok::Float(x) => write!(f, "'{x}'"),
            Tok::Str(s) => write!(f, "\"{s}\""),
            Tok::Sym(s) => write!(f, "'{s}'"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Its first character.
    pub pos: Pos,
}

// Longest first, so `..` wins over `.` and `->` over `-`.
const SYMBOLS: &[&str] = &[
    "...", "..", "->", "==", "!=", "<=", ">=", "(", ")", "[", "]", "{", "}", ",", ":", "=", "+",
    "-", "*", "/", "@", "<", ">", ".",
];

/// The tokens of `src`, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> LangResult<Vec<Token>> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        if c == '\n' {
            i += 1;
            line += 1;
            col = 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            col += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else if c.is_ascii_digit() {
            number(&chars, &mut i, pos)?
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' && chars[i] != '\n' {
                i += 1;
            }
            if i >= chars.len() || chars[i] != '"' {
                return fail(pos, "unterminated string literal (expected a closing '\"')");
            }
            i += 1;
            Tok::Str(chars[start + 1..i - 1].iter().collect())
        } else if let Some(sym) = SYMBOLS.iter().find(|s| {
            let n = s.chars().count();
            i + n <= chars.len() && chars[i..i + n].iter().copied().eq(s.chars())
        }) {
            i += sym.chars().count();
            Tok::Sym(sym)
        } else {
            return fail(pos, format!("unexpected character '{c}'"));
        };
        col += i - start;
        tokens.push(Token { tok, pos });
    }
    tokens.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
    });
    Ok(tokens)
}

/// Reads `123`, `0.02`, `1e-5`, `2.5e3`. A `.` followed by another `.` is a range
/// (`0..layers`), not a decimal point.
fn number(chars: &[char], i: &mut usize, pos: Pos) -> LangResult<Tok> {
    let start = *i;
    let digits = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(i);
    let mut is_float = false;
    if *i + 1 < chars.len() && chars[*i] == '.' && chars[*i + 1].is_ascii_digit() {
        is_float = true;
        *i += 1;
        digits(i);
    }
    if *i < chars.len() && (chars[*i] == 'e' || chars[*i] == 'E') {
        let mut j = *i + 1;
        if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
            j += 1;
        }
        if j < chars.len() && chars[j].is_ascii_digit() {
            is_float = true;
            *i = j;
            digits(i);
        }
    }
    let text: String = chars[start..*i].iter().collect();
    if is_float {
        match text.parse::<f64>() {
            Ok(x) => Ok(Tok::Float(x)),
            Err(_) => fail(pos, format!("invalid number '{text}'")),
        }
    } else {
        match text.parse::<u64>() {
            Ok(n) => Ok(Tok::Int(n)),
            Err(_) => fail(pos, format!("integer '{text}' is too large")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn ranges_are_not_decimals() {
        assert_eq!(
            toks("0..n 1.5 2e-3"),
            vec![
                Tok::Int(0),
                Tok::Sym(".."),
                Tok::Ident("n".into()),
                Tok::Float(1.5),
                Tok::Float(2e-3),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn positions_count_lines_and_columns() {
        let t = lex("a\n  # c\n  b").unwrap();
        assert_eq!(t[1].pos, Pos { line: 3, col: 3 });
    }
}
