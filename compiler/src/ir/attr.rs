//! Op attributes: the static parameters of an op (`axis = 1`, `eps = 1e-5`).
//!
//! Every op turns its attributes into a list of `(key, Attr)` pairs in a fixed order
//! and is rebuilt from such a list; the text and JSON forms share that one mechanism,
//! so an op's attributes are declared exactly once (in its `ops/` family file).

use std::collections::BTreeMap;
use std::fmt;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float (printed in the shortest form that reads back exactly).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f64>),
    /// A keyword (`tanh`, `none`).
    Word(String),
}

/// Formats a float so that parsing the text gives back the same bits (`inf`, `-inf`, `nan` included).
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x:?}")
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            xs: &[T],
            show: impl Fn(&T) -> String,
        ) -> fmt::Result {
            let items: Vec<String> = xs.iter().map(show).collect();
            write!(f, "[{}]", items.join(", "))
        }
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            Attr::Float(x) => f.write_str(&format_float(*x)),
            Attr::Bool(b) => write!(f, "{b}"),
            Attr::Ints(xs) => list(f, xs, |i| i.to_string()),
            Attr::Floats(xs) => list(f, xs, |x| format_float(*x)),
            Attr::Word(w) => f.write_str(w),
        }
    }
}

/// Reads typed attributes out of a parsed `key = value` list, checking that every key
/// is known, present once, and of the right kind.
pub(crate) struct AttrReader {
    op: String,
    attrs: BTreeMap<String, Attr>,
}

impl AttrReader {
    /// Wraps the attributes given to op `op`.
    pub(crate) fn new(op: &str, attrs: Vec<(String, Attr)>) -> Result<AttrReader, String> {
        let mut map = BTreeMap::new();
        for (k, v) in attrs {
            if map.insert(k.clone(), v).is_some() {
                return Err(format!("attribute '{k}' given twice"));
            }
        }
        Ok(AttrReader {
            op: op.to_string(),
            attrs: map,
        })
    }

    fn take(&mut self, key: &str) -> Result<Attr, String> {
        self.attrs
            .remove(key)
            .ok_or_else(|| format!("op '{}' needs attribute '{key}'", self.op))
    }

    fn wrong(&self, key: &str, want: &str, got: &Attr) -> String {
        format!(
            "attribute '{key}' of '{}' must be {want}, found '{got}'",
            self.op
        )
    }

    /// A required integer.
    pub(crate) fn int(&mut self, key: &str) -> Result<i64, String> {
        match self.take(key)? {
            Attr::Int(i) => Ok(i),
            other => Err(self.wrong(key, "an integer", &other)),
        }
    }

    /// A required non-negative integer (an axis, a size).
    pub(crate) fn index(&mut self, key: &str) -> Result<usize, String> {
        let i = self.int(key)?;
        usize::try_from(i).map_err(|_| format!("attribute '{key}' must be >= 0, found {i}"))
    }

    /// A required float (an integer literal is accepted).
    pub(crate) fn float(&mut self, key: &str) -> Result<f64, String> {
        match self.take(key)? {
            Attr::Float(x) => Ok(x),
            Attr::Int(i) => Ok(i as f64),
            other => Err(self.wrong(key, "a number", &other)),
        }
    }

    /// A required boolean.
    pub(crate) fn bool(&mut self, key: &str) -> Result<bool, String> {
        match self.take(key)? {
            Attr::Bool(b) => Ok(b),
            other => Err(self.wrong(key, "true or false", &other)),
        }
    }

    /// A required list of non-negative integers.
    pub(crate) fn indices(&mut self, key: &str) -> Result<Vec<usize>, String> {
        match self.take(key)? {
            Attr::Ints(xs) => xs
                .iter()
                .map(|&i| {
                    usize::try_from(i)
                        .map_err(|_| format!("attribute '{key}' must hold values >= 0, found {i}"))
                })
                .collect(),
            other => Err(self.wrong(key, "a list of integers", &other)),
        }
    }

    /// A required list of floats (a single number, or integers, are accepted).
    pub(crate) fn floats(&mut self, key: &str) -> Result<Vec<f64>, String> {
        match self.take(key)? {
            Attr::Floats(xs) => Ok(xs),
            Attr::Ints(xs) => Ok(xs.iter().map(|&i| i as f64).collect()),
            Attr::Float(x) => Ok(vec![x]),
            Attr::Int(i) => Ok(vec![i as f64]),
            other => Err(self.wrong(key, "a number or a list of numbers", &other)),
        }
    }

    /// A required keyword, one of `choices`.
    pub(crate) fn word(&mut self, key: &str, choices: &[&str]) -> Result<String, String> {
        match self.take(key)? {
            Attr::Word(w) if choices.contains(&w.as_str()) => Ok(w),
            other => Err(self.wrong(key, &format!("one of {}", choices.join(", ")), &other)),
        }
    }

    /// Fails if any attribute was not consumed.
    pub(crate) fn finish(self) -> Result<(), String> {
        match self.attrs.keys().next() {
            Some(k) => Err(format!("op '{}' has no attribute '{k}'", self.op)),
            None => Ok(()),
        }
    }
}
