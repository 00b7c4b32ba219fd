//! Shapes whose dimensions are static sizes or products of named symbols.
//!
//! A [`Dim`] is a monomial `c * S1 * S2 * ...`: a static size when it has no symbols,
//! `B` or `B*T` or `128*B` otherwise. Monomials are closed under the products that
//! reshapes need (`[B, 128, 256] -> [128*B, 256]`), which keeps shape checking exact
//! without a general symbolic algebra. Symbols are bound to sizes at compile or run time.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// One dimension: `coeff * syms[0] * syms[1] * ...` (symbols sorted, repeats allowed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    coeff: u64,
    syms: Vec<String>,
}

/// Sizes bound to symbolic dimension names.
pub type Bindings = BTreeMap<String, u64>;

impl Dim {
    /// A static size.
    pub fn fixed(n: u64) -> Dim {
        Dim {
            coeff: n,
            syms: Vec::new(),
        }
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

    /// The product of two dimensions.
    pub fn mul(&self, other: &Dim) -> Dim {
        let coeff = self.coeff * other.coeff;
        if coeff == 0 {
            return Dim::fixed(0);
        }
        let mut syms: Vec<String> = self.syms.iter().chain(&other.syms).cloned().collect();
        syms.sort();
        Dim { coeff, syms }
    }

    /// The sum of two dimensions, when it is again a monomial (same symbols, or zero).
    pub fn add(&self, other: &Dim) -> Option<Dim> {
        if self.coeff == 0 {
            return Some(other.clone());
        }
        if other.coeff == 0 {
            return Some(self.clone());
        }
        (self.syms == other.syms).then(|| Dim {
            coeff: self.coeff + other.coeff,
            syms: self.syms.clone(),
        })
    }

    /// The size under `bindings`, or the first unbound symbol.
    pub fn eval(&self, bindings: &Bindings) -> Result<u64, String> {
        let mut n = self.coeff;
        for s in &self.syms {
            n *= *bindings.get(s).ok_or_else(|| s.clone())?;
        }
        Ok(n)
    }

    /// Parses the text form: `128`, `B`, `B*T`, `128*B`.
    pub fn parse(text: &str) -> Option<Dim> {
        let mut dim = Dim::fixed(1);
        for term in text.split('*') {
            let term = term.trim();
            let factor = if term.bytes().all(|b| b.is_ascii_digit()) && !term.is_empty() {
                Dim::fixed(term.parse().ok()?)
            } else if is_symbol(term) {
                Dim::sym(term)
            } else {
                return None;
            };
            dim = dim.mul(&factor);
        }
        Some(dim)
    }
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
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Static(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Static(n) => Ok(Dim::fixed(n)),
            Repr::Text(t) => Dim::parse(&t)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid dimension '{t}'"))),
        }
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
    pub fn numel(&self) -> Dim {
        self.0.iter().fold(Dim::fixed(1), |acc, d| acc.mul(d))
    }

    /// The static sizes, if every dimension is static.
    pub fn as_static(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    /// The sizes under `bindings`, or the first unbound symbol.
    pub fn eval(&self, bindings: &Bindings) -> Result<Vec<usize>, String> {
        self.0
            .iter()
            .map(|d| d.eval(bindings).map(|n| n as usize))
            .collect()
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
        let d = Dim::sym("T").mul(&Dim::fixed(128)).mul(&Dim::sym("B"));
        assert_eq!(d.to_string(), "128*B*T");
        assert_eq!(Dim::parse("B*128*T"), Some(d.clone()));
        assert_eq!(Dim::parse("T*B*128"), Some(d));
        assert_eq!(Dim::fixed(0).mul(&Dim::sym("B")), Dim::fixed(0));
    }

    #[test]
    fn sums_exist_only_for_like_terms() {
        assert_eq!(Dim::sym("B").add(&Dim::sym("B")), Dim::parse("2*B"));
        assert_eq!(Dim::sym("B").add(&Dim::fixed(1)), None);
    }

    #[test]
    fn evaluation_reports_unbound_symbols() {
        let mut b = Bindings::new();
        b.insert("B".into(), 4);
        assert_eq!(Dim::parse("3*B").unwrap().eval(&b), Ok(12));
        assert_eq!(Dim::parse("B*T").unwrap().eval(&b), Err("T".to_string()));
    }

    #[test]
    fn rejects_bad_dimension_text() {
        for bad in ["", "1x", "B**2", "-3", "B+1"] {
            assert_eq!(Dim::parse(bad), None, "{bad}");
        }
    }
}
