//! Shapes whose dimensions are static sizes or products of named symbols.
//!
//! A [`Dim`] is a monomial `c * S1 * S2 * ...`: a static size when it has no symbols,
//! `B` or `B*T` or `128*B` otherwise. Monomials are closed under the products that
//! reshapes need (`[B, 128, 256] -> [128*B, 256]`), which keeps shape checking exact
//! without a general symbolic algebra. Symbols are bound to sizes at compile or run time.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// The largest size anything may have: element counts, strides and byte counts all stay
/// at or below it, so they fit `i64` (ONNX, NumPy) and `isize` (Rust allocations) too.
pub const MAX_SIZE: u64 = i64::MAX as u64;

/// A size computation whose result would exceed [`MAX_SIZE`]; it names what was computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0} is larger than 2^63-1")]
pub struct SizeOverflow(pub String);

// Shape rules report their errors as text.
impl From<SizeOverflow> for String {
    fn from(e: SizeOverflow) -> String {
        e.to_string()
    }
}

/// `a * b`, checked against [`MAX_SIZE`]; `what` describes the product for the error.
pub fn size_mul(a: u64, b: u64, what: impl FnOnce() -> String) -> Result<u64, SizeOverflow> {
    a.checked_mul(b)
        .filter(|&n| n <= MAX_SIZE)
        .ok_or_else(|| SizeOverflow(what()))
}

/// `a + b`, checked against [`MAX_SIZE`]; `what` describes the sum for the error.
pub fn size_add(a: u64, b: u64, what: impl FnOnce() -> String) -> Result<u64, SizeOverflow> {
    a.checked_add(b)
        .filter(|&n| n <= MAX_SIZE)
        .ok_or_else(|| SizeOverflow(what()))
}

/// A dimension that cannot be given a size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DimError {
    /// A symbol has no size.
    #[error("dimension '{0}' is not bound")]
    Unbound(String),
    /// The size does not fit.
    #[error(transparent)]
    Overflow(#[from] SizeOverflow),
}

/// One dimension: `coeff * syms[0] * syms[1] * ...` (symbols sorted, repeats allowed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    coeff: u64,
    syms: Vec<String>,
}

/// Sizes bound to symbolic dimension names.
pub type Bindings = BTreeMap<String, u64>;

impl Dim {
    /// A static size (callers keep it at or below [`MAX_SIZE`]; the parsers check).
    pub fn fixed(n: u64) -> Dim {
        Dim {
            coeff: n,
            syms: Vec::new(),
        }
    }

    /// A static size, or an error naming it if it exceeds [`MAX_SIZE`].
    pub fn checked_fixed(n: u64) -> Result<Dim, SizeOverflow> {
        if n > MAX_SIZE {
            return Err(SizeOverflow(format!("the dimension {n}")));
        }
        Ok(Dim::fixed(n))
    }

    /// A named symbolic size.
    pub fn sym(name: &str) -> Dim {
        Dim {
            coeff: 1,
            syms: vec![name.to_string()],
        }
    }

    /// The static size, if this dimension has no symbols.
    pub fn as_static(&self) -> Option<u64> {
        self.syms.is_empty().then_some(self.coeff)
    }

    /// The constant factor.
    pub fn coeff(&self) -> u64 {
        self.coeff
    }

    /// The symbols (sorted).
    pub fn syms(&self) -> &[String] {
        &self.syms
    }

    /// The product of two dimensions; its constant factor must stay within [`MAX_SIZE`].
    pub fn mul(&self, other: &Dim) -> Result<Dim, SizeOverflow> {
        let coeff = size_mul(self.coeff, other.coeff, || {
            format!("the dimension {self}*{other}")
        })?;
        if coeff == 0 {
            return Ok(Dim::fixed(0));
        }
        let mut syms: Vec<String> = self.syms.iter().chain(&other.syms).cloned().collect();
        syms.sort();
        Ok(Dim { coeff, syms })
    }

    /// The sum of two dimensions, when it is again a monomial (same symbols, or zero):
    /// `Ok(None)` when it is not one.
    pub fn add(&self, other: &Dim) -> Result<Option<Dim>, SizeOverflow> {
        if self.coeff == 0 {
            return Ok(Some(other.clone()));
        }
        if other.coeff == 0 {
            return Ok(Some(self.clone()));
        }
        if self.syms != other.syms {
            return Ok(None);
        }
        let coeff = size_add(self.coeff, other.coeff, || {
            format!("the dimension {self} + {other}")
        })?;
        Ok(Some(Dim {
            coeff,
            syms: self.syms.clone(),
        }))
    }

    /// `self / other` when `other` divides `self` exactly (as monomials), else `None`.
    pub fn div_exact(&self, other: &Dim) -> Option<Dim> {
        if other.coeff == 0 || !self.coeff.is_multiple_of(other.coeff) {
            return None;
        }
        let mut syms = self.syms.clone();
        for s in &other.syms {
            let i = syms.iter().position(|x| x == s)?;
            syms.remove(i);
        }
        let coeff = self.coeff / other.coeff;
        Some(if coeff == 0 {
            Dim::fixed(0)
        } else {
            Dim { coeff, syms }
        })
    }

    /// The size under `bindings`: an unbound symbol or a size over [`MAX_SIZE`] is an error.
    pub fn eval(&self, bindings: &Bindings) -> Result<u64, DimError> {
        let mut n = self.coeff;
        for s in &self.syms {
            let size = *bindings
                .get(s)
                .ok_or_else(|| DimError::Unbound(s.clone()))?;
            n = size_mul(n, size, || {
                format!("the dimension {self} with {s} = {size}")
            })?;
        }
        Ok(n)
    }

    /// Parses the text form: `128`, `B`, `B*T`, `128*B`.
    pub fn parse(text: &str) -> Result<Dim, DimParseError> {
        let mut dim = Dim::fixed(1);
        for term in text.split('*') {
            let term = term.trim();
            let factor = if term.bytes().all(|b| b.is_ascii_digit()) && !term.is_empty() {
                Dim::fixed(parse_size(term).ok_or(DimParseError::Invalid)?)
            } else if is_symbol(term) {
                Dim::sym(term)
            } else {
                return Err(DimParseError::Invalid);
            };
            dim = dim.mul(&factor)?;
        }
        Ok(dim)
    }
}

/// Why a dimension's text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DimParseError {
    /// Not sizes and symbols joined by `*`.
    #[error("a dimension must be a size or a symbol")]
    Invalid,
    /// A size, or the product, is larger than [`MAX_SIZE`].
    #[error(transparent)]
    Overflow(#[from] SizeOverflow),
}

/// A size written in decimal, at most [`MAX_SIZE`].
pub fn parse_size(digits: &str) -> Option<u64> {
    digits.parse().ok().filter(|&n| n <= MAX_SIZE)
}

/// True if `name` can name a symbolic dimension: a letter or `_`, then letters, digits, `_`.
pub fn is_symbol(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.syms.is_empty() {
            return write!(f, "{}", self.coeff);
        }
        if self.coeff != 1 {
            write!(f, "{}*", self.coeff)?;
        }
        f.write_str(&self.syms.join("*"))
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::fixed(n)
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_static() {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        d.deserialize_any(DimVisitor)
    }
}

/// Reads a dimension as a size (a non-negative integer) or its text form, with messages
/// that say which was expected.
struct DimVisitor;

impl serde::de::Visitor<'_> for DimVisitor {
    type Value = Dim;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dimension: a size such as 784, or a text such as \"B\" or \"128*B\"")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dim, E> {
        Dim::checked_fixed(n).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dim, E> {
        let n = u64::try_from(n)
            .map_err(|_| E::custom(format!("a dimension cannot be negative, found {n}")))?;
        self.visit_u64(n)
    }

    fn visit_str<E: serde::de::Error>(self, t: &str) -> Result<Dim, E> {
        Dim::parse(t).map_err(|e| E::custom(format!("invalid dimension '{t}': {e}")))
    }
}

/// A tensor shape: one [`Dim`] per axis; the empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of static sizes.
    pub fn fixed(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&n| Dim::fixed(n)).collect())
    }

    /// The scalar shape.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The number of elements, as a monomial.
    pub fn numel(&self) -> Result<Dim, SizeOverflow> {
        self.0.iter().try_fold(Dim::fixed(1), |acc, d| acc.mul(d))
    }

    /// The largest element count a buffer of this shape can need, counting each symbol
    /// as 1 and each zero-size axis as 1 (so that checking it bounds every partial
    /// product of the axes: strides and row sizes of verified types cannot overflow).
    pub fn element_bound(&self) -> Result<u64, SizeOverflow> {
        self.0.iter().try_fold(1u64, |acc, d| {
            size_mul(acc, d.coeff.max(1), || {
                format!("the element count of {self}")
            })
        })
    }

    /// The static sizes, if every dimension is static.
    pub fn as_static(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    /// The sizes under `bindings`; an unbound symbol, or sizes whose product (zeros
    /// counted as 1) exceeds [`MAX_SIZE`], is an error.
    pub fn eval(&self, bindings: &Bindings) -> Result<Vec<usize>, DimError> {
        let sizes = self
            .0
            .iter()
            .map(|d| d.eval(bindings))
            .collect::<Result<Vec<u64>, _>>()?;
        sizes.iter().try_fold(1u64, |acc, &n| {
            size_mul(acc, n.max(1), || {
                format!("the element count of {self} (sizes {sizes:?})")
            })
        })?;
        Ok(sizes.into_iter().map(|n| n as usize).collect())
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monomials_multiply_and_print_canonically() {
        let d = Dim::sym("T")
            .mul(&Dim::fixed(128))
            .and_then(|d| d.mul(&Dim::sym("B")))
            .unwrap();
        assert_eq!(d.to_string(), "128*B*T");
        assert_eq!(Dim::parse("B*128*T"), Ok(d.clone()));
        assert_eq!(Dim::parse("T*B*128"), Ok(d));
        assert_eq!(Dim::fixed(0).mul(&Dim::sym("B")), Ok(Dim::fixed(0)));
    }

    #[test]
    fn sums_exist_only_for_like_terms() {
        assert_eq!(
            Dim::sym("B").add(&Dim::sym("B")),
            Ok(Dim::parse("2*B").ok())
        );
        assert_eq!(Dim::sym("B").add(&Dim::fixed(1)), Ok(None));
    }

    #[test]
    fn evaluation_reports_unbound_symbols() {
        let mut b = Bindings::new();
        b.insert("B".into(), 4);
        assert_eq!(Dim::parse("3*B").unwrap().eval(&b), Ok(12));
        assert_eq!(
            Dim::parse("B*T").unwrap().eval(&b),
            Err(DimError::Unbound("T".to_string()))
        );
    }

    #[test]
    fn sizes_never_wrap() {
        let big = 1u64 << 32;
        assert!(matches!(
            Dim::parse("4294967296*4294967296"),
            Err(DimParseError::Overflow(_))
        ));
        assert!(Dim::fixed(big).mul(&Dim::fixed(big)).is_err());
        assert!(Dim::fixed(MAX_SIZE).add(&Dim::fixed(1)).is_err());
        let mut b = Bindings::new();
        b.insert("B".into(), u64::MAX);
        assert!(matches!(
            Dim::parse("2*B").unwrap().eval(&b),
            Err(DimError::Overflow(_))
        ));
        // A zero-size axis does not hide an overflowing product of the others.
        let hidden = Shape::fixed(&[0, big, big]);
        assert!(hidden.element_bound().is_err());
        assert!(hidden.eval(&Bindings::new()).is_err());
        assert_eq!(Shape::fixed(&[0, 3]).eval(&Bindings::new()), Ok(vec![0, 3]));
    }

    #[test]
    fn rejects_bad_dimension_text() {
        for bad in ["", "1x", "B**2", "-3", "B+1", "18446744073709551615"] {
            assert!(Dim::parse(bad).is_err(), "{bad}");
        }
    }
}
