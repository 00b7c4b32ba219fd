//! Tokens of the text form, each with its 1-based line and column.

use super::parse::{ParseError, Pos};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A bare word: keywords, op names, dtypes, symbols, `true`, `inf`.
    Word(String),
    /// `%name`.
    Value(String),
    /// `@name`.
    Graph(String),
    /// A numeric literal, kept as text until its use decides int or float.
    Number(String),
    Punct(char),
    Newline,
    Eof,
}

impl Tok {
    pub(super) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Value(v) => format!("'%{v}'"),
            Tok::Graph(g) => format!("'@{g}'"),
            Tok::Number(n) => format!("number '{n}'"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, Pos)>, ParseError> {
    let mut toks = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        let start = i;
        let take_while = |i: &mut usize, f: &dyn Fn(char) -> bool| {
            while *i < chars.len() && f(chars[*i]) {
                *i += 1;
            }
        };
        let tok = match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
                toks.push((Tok::Newline, pos));
                continue;
            }
            ' ' | '\t' | '\r' => {
                i += 1;
                col += 1;
                continue;
            }
            '#' => {
                take_while(&mut i, &|c| c != '\n');
                col += i - start;
                continue;
            }
            '%' | '@' => {
                i += 1;
                take_while(&mut i, &is_name_char);
                let name: String = chars[start + 1..i].iter().collect();
                if name.is_empty() {
                    return Err(ParseError::new(pos, format!("expected a name after '{c}'")));
                }
                if c == '%' {
                    Tok::Value(name)
                } else {
                    Tok::Graph(name)
                }
            }
            '-' | '+' | '0'..='9' => {
                i += 1;
                if c != '-' && c != '+'
                    || chars
                        .get(i)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '.')
                {
                    lex_number_tail(&chars, &mut i);
                } else if chars.get(i).is_some_and(|d| d.is_ascii_alphabetic()) {
                    take_while(&mut i, &|c| c.is_ascii_alphabetic()); // -inf
                } else {
                    return Err(ParseError::new(pos, format!("unexpected character '{c}'")));
                }
                Tok::Number(chars[start..i].iter().collect())
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                take_while(&mut i, &is_name_char);
                Tok::Word(chars[start..i].iter().collect())
            }
            ':' | '=' | ',' | '[' | ']' | '{' | '}' | '(' | ')' | '*' => {
                i += 1;
                Tok::Punct(c)
            }
            other => {
                return Err(ParseError::new(
                    pos,
                    format!("unexpected character '{other}'"),
                ))
            }
        };
        col += i - start;
        toks.push((tok, pos));
    }
    toks.push((Tok::Eof, Pos { line, col }));
    Ok(toks)
}

fn lex_number_tail(chars: &[char], i: &mut usize) {
    while *i < chars.len() {
        let c = chars[*i];
        let exp_sign = (c == '-' || c == '+') && matches!(chars[*i - 1], 'e' | 'E');
        if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || exp_sign {
            *i += 1;
        } else {
            break;
        }
    }
}
