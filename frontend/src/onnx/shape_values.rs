//! Small integer tensors known at import time whose elements may be symbolic sizes.
//!
//! Exported models compute shapes at run time: `Shape -> Gather -> Unsqueeze -> Concat
//! -> Reshape`, often with arithmetic (`Mul` of batch and sequence, `Div` of the hidden
//! size by the head count). With dynamic axes those vectors hold symbolic sizes. The
//! importer follows them as [`ShapeValue`]s, each element a plain integer or an IR
//! [`Dim`] (a monomial such as `batch` or `12*sequence`; the idea of tract's `TDim`,
//! kept to what the IR's dimensions can say), so that the ops consuming a shape
//! (`Reshape`, `Expand`, `ConstantOfShape`, `Range`) get symbolic dimensions instead of
//! failing.
//!
//! An operation whose result depends on a symbol's size (is `batch` equal to 1? is
//! `seq - 1` a monomial?) is refused with a message saying so, never guessed. A value
//! with a symbolic element cannot be used as data by other ops: the IR has no tensor
//! holding a dimension's size.

use super::import::{unsupported, Fail, OpResult};
use super::tensor::{Const, ConstData};
use smelt_compiler::ir::{DType, Dim};
use std::fmt;

/// One element: a plain integer, or a size with at least one symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum SymInt {
    /// A known integer.
    Int(i64),
    /// A symbolic size (never static: static sizes are `Int`).
    Dim(Dim),
}

impl SymInt {
    /// The element for size `d`.
    pub fn from_dim(d: &Dim) -> SymInt {
        match d.as_static() {
            Some(n) => SymInt::Int(n as i64),
            None => SymInt::Dim(d.clone()),
        }
    }

    /// The size this element stands for, if it is one (not negative).
    pub fn to_dim(&self) -> Option<Dim> {
        match self {
            SymInt::Int(n) => u64::try_from(*n).ok().map(Dim::fixed),
            SymInt::Dim(d) => Some(d.clone()),
        }
    }
}

impl fmt::Display for SymInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymInt::Int(n) => write!(f, "{n}"),
            SymInt::Dim(d) => write!(f, "{d}"),
        }
    }
}

/// An integer or boolean tensor of rank 0 or 1 known at import time.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeValue {
    /// The element type (an integer type, or `Bool` for comparisons).
    pub dtype: DType,
    /// Rank 0 (one element) rather than rank 1.
    pub scalar: bool,
    /// The elements.
    pub elems: Vec<SymInt>,
}

impl fmt::Display for ShapeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.elems.iter().map(ToString::to_string).collect();
        if self.scalar {
            write!(f, "{}", items.join(""))
        } else {
            write!(f, "[{}]", items.join(", "))
        }
    }
}

impl ShapeValue {
    /// The sizes `dims` as an `i64` vector (what `Shape` gives).
    pub fn from_dims(dims: &[Dim]) -> ShapeValue {
        ShapeValue {
            dtype: DType::I64,
            scalar: false,
            elems: dims.iter().map(SymInt::from_dim).collect(),
        }
    }

    /// A constant of rank 0 or 1 with integer or boolean elements.
    pub fn from_const(c: &Const) -> Option<ShapeValue> {
        if c.shape.len() > 1 || !(c.dtype.is_int() || c.dtype == DType::Bool) {
            return None;
        }
        Some(ShapeValue {
            dtype: c.dtype,
            scalar: c.shape.is_empty(),
            elems: c.as_i64s().into_iter().map(SymInt::Int).collect(),
        })
    }

    /// Whether some element is a symbolic size.
    pub fn is_symbolic(&self) -> bool {
        self.elems.iter().any(|e| matches!(e, SymInt::Dim(_)))
    }

    /// The same value as a constant, when no element is symbolic.
    pub fn to_const(&self) -> Option<Const> {
        let ints = self
            .elems
            .iter()
            .map(|e| match e {
                SymInt::Int(n) => Some(*n),
                SymInt::Dim(_) => None,
            })
            .collect::<Option<Vec<i64>>>()?;
        let shape = if self.scalar {
            vec![]
        } else {
            vec![ints.len()]
        };
        let data = if self.dtype == DType::Bool {
            ConstData::Bool(ints.iter().map(|&n| n != 0).collect())
        } else {
            ConstData::Int(ints)
        };
        Some(Const {
            dtype: self.dtype,
            shape,
            data,
        })
    }

    /// The elements as sizes, for ops whose operand is an output shape; `what` names the
    /// operand in the error.
    pub fn to_dims(&self, what: &str) -> OpResult<Vec<Dim>> {
        self.elems
            .iter()
            .map(|e| {
                e.to_dim()
                    .ok_or_else(|| Fail::from(format!("{what} {self} has negative sizes")))
            })
            .collect()
    }

    /// The same elements as type `dtype` (integer casts; sizes stay sizes).
    pub fn cast(&self, dtype: DType) -> ShapeValue {
        let elems = self
            .elems
            .iter()
            .map(|e| match e {
                SymInt::Int(n) => SymInt::Int(wrap(dtype, *n)),
                SymInt::Dim(d) => SymInt::Dim(d.clone()),
            })
            .collect();
        ShapeValue {
            dtype,
            scalar: self.scalar,
            elems,
        }
    }
}

/// `n` as a value of integer type `dtype` (two's-complement wrap, as the interpreter
/// stores it).
fn wrap(dtype: DType, n: i64) -> i64 {
    match dtype {
        DType::Bool => i64::from(n != 0),
        DType::I32 => n as i32 as i64,
        _ => n,
    }
}

/// The ONNX ops folded elementwise on known values.
pub const ELEMENTWISE: [&str; 8] = ["Add", "Sub", "Mul", "Div", "Equal", "Max", "Min", "Where"];

/// `op` (one of [`ELEMENTWISE`]) applied elementwise to `operands`, which broadcast
/// numpy-style (every operand has one element or the common count).
pub fn elementwise(op: &str, operands: &[ShapeValue]) -> OpResult<ShapeValue> {
    let arity = if op == "Where" { 3 } else { 2 };
    if operands.len() != arity {
        return Err(format!("'{op}' takes {arity} operands, not {}", operands.len()).into());
    }
    let len = operands.iter().map(|v| v.elems.len()).max().unwrap_or(0);
    if operands
        .iter()
        .any(|v| v.elems.len() != len && v.elems.len() != 1)
    {
        let shown: Vec<String> = operands.iter().map(ToString::to_string).collect();
        return Err(format!("'{op}' operands {} do not broadcast", shown.join(" and ")).into());
    }
    let at = |v: &ShapeValue, i: usize| v.elems[if v.elems.len() == 1 { 0 } else { i }].clone();
    let mut elems = Vec::with_capacity(len);
    for i in 0..len {
        let args: Vec<SymInt> = operands.iter().map(|v| at(v, i)).collect();
        elems.push(match (op, args.as_slice()) {
            ("Where", [c, a, b]) => match c {
                SymInt::Int(0) => b.clone(),
                SymInt::Int(_) => a.clone(),
                SymInt::Dim(_) => return Err("'Where' condition must be boolean".into()),
            },
            (_, [a, b]) => binary(op, a, b)?,
            _ => return Err(format!("'{op}' has {} operands", operands.len()).into()),
        });
    }
    let dtype = match op {
        "Equal" => DType::Bool,
        "Where" => operands[1].dtype,
        _ => operands[0].dtype,
    };
    let elems = elems
        .into_iter()
        .map(|e| match e {
            SymInt::Int(n) => SymInt::Int(wrap(dtype, n)),
            d => d,
        })
        .collect();
    Ok(ShapeValue {
        dtype,
        scalar: operands.iter().all(|v| v.scalar),
        elems,
    })
}

/// One element of a binary op. Plain integers follow the interpreter (wrapping,
/// truncating division); with a symbolic size the result must not depend on the
/// symbol's value.
fn binary(op: &str, a: &SymInt, b: &SymInt) -> OpResult<SymInt> {
    use SymInt::{Dim as D, Int as I};
    let undecided = || -> OpResult<SymInt> {
        unsupported(format!(
            "'{op}' of {a} and {b} depends on the size of a symbolic dimension; give the model's inputs static sizes (or pass their values with --input)"
        ))
    };
    let sized = |d: Option<Dim>| d.map(|d| SymInt::from_dim(&d));
    let flag = |x: bool| Ok(I(i64::from(x)));
    match (op, a, b) {
        (_, I(x), I(y)) => match op {
            "Add" => Ok(I(x.wrapping_add(*y))),
            "Sub" => Ok(I(x.wrapping_sub(*y))),
            "Mul" => Ok(I(x.wrapping_mul(*y))),
            "Div" if *y == 0 => Err("integer division by zero".into()),
            "Div" => Ok(I(x.wrapping_div(*y))),
            "Equal" => flag(x == y),
            "Max" => Ok(I(*x.max(y))),
            "Min" => Ok(I(*x.min(y))),
            _ => Err(format!("'{op}' is not an elementwise integer op").into()),
        },
        ("Equal", D(x), D(y)) if x == y => flag(true),
        // A size is never negative.
        ("Equal", D(_), I(n)) | ("Equal", I(n), D(_)) if *n < 0 => flag(false),
        ("Max" | "Min", D(x), D(y)) if x == y => Ok(a.clone()),
        ("Max", D(_), I(n)) | ("Max", I(n), D(_)) if *n <= 0 => Ok(if matches!(a, D(_)) {
            a.clone()
        } else {
            b.clone()
        }),
        ("Min", D(_), I(n)) | ("Min", I(n), D(_)) if *n <= 0 => Ok(I(*n)),
        ("Mul", _, _) => match (a.to_dim(), b.to_dim()) {
            (Some(x), Some(y)) => Ok(SymInt::from_dim(&x.mul(&y)?)),
            _ => undecided(),
        },
        ("Div", _, I(0)) => Err("integer division by zero".into()),
        ("Div", _, _) => match (a.to_dim(), b.to_dim()) {
            (Some(x), Some(y)) => sized(x.div_exact(&y)).map_or_else(undecided, Ok),
            _ => undecided(),
        },
        ("Add", _, I(0)) | ("Sub", _, I(0)) => Ok(a.clone()),
        ("Add", I(0), _) => Ok(b.clone()),
        ("Add", D(x), D(y)) => sized(x.add(y)?).map_or_else(undecided, Ok),
        ("Sub", D(x), D(y)) if x == y => Ok(I(0)),
        // `k*s - j*s = (k-j)*s` for the same symbols and k >= j.
        ("Sub", D(x), D(y)) if x.syms() == y.syms() && x.coeff() > y.coeff() => {
            let unit = x.div_exact(&Dim::fixed(x.coeff())).map(|s| {
                s.mul(&Dim::fixed(x.coeff() - y.coeff()))
                    .map(|d| SymInt::from_dim(&d))
            });
            match unit {
                Some(d) => Ok(d?),
                None => undecided(),
            }
        }
        _ => undecided(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(elems: Vec<SymInt>) -> ShapeValue {
        ShapeValue {
            dtype: DType::I64,
            scalar: false,
            elems,
        }
    }

    fn sym(text: &str) -> SymInt {
        SymInt::from_dim(&Dim::parse(text).unwrap())
    }

    #[test]
    fn arithmetic_keeps_sizes_symbolic() {
        let shape = v(vec![sym("batch"), sym("seq"), SymInt::Int(768)]);
        let heads = v(vec![SymInt::Int(12)]);
        let per_head = elementwise("Div", &[v(vec![sym("12*seq"), SymInt::Int(768)]), heads]);
        assert_eq!(per_head.unwrap().to_string(), "[seq, 64]");
        let rows = elementwise("Mul", &[v(vec![sym("batch")]), v(vec![sym("seq")])]).unwrap();
        assert_eq!(rows.to_string(), "[batch*seq]");
        let twice = elementwise("Add", &[v(vec![sym("seq")]), v(vec![sym("seq")])]).unwrap();
        assert_eq!(twice.to_string(), "[2*seq]");
        let back = elementwise("Sub", &[twice, v(vec![sym("seq")])]).unwrap();
        assert_eq!(back.to_string(), "[seq]");
        // Sizes are never negative, so comparing with -1 is decided (PyTorch's Expand).
        let eq = elementwise("Equal", &[shape, v(vec![SymInt::Int(-1)])]).unwrap();
        assert_eq!(eq.to_const().unwrap().as_i64s(), vec![0, 0, 0]);
    }

    #[test]
    fn results_that_depend_on_a_symbol_are_refused() {
        for (op, a, b) in [
            ("Equal", sym("batch"), SymInt::Int(1)),
            ("Sub", sym("seq"), SymInt::Int(1)),
            ("Div", sym("seq"), SymInt::Int(2)),
            ("Max", sym("seq"), SymInt::Int(4)),
            ("Mul", sym("seq"), SymInt::Int(-1)),
        ] {
            let got = elementwise(op, &[v(vec![a]), v(vec![b])]);
            assert!(
                matches!(&got, Err(Fail::Unsupported(m)) if m.contains("symbolic")),
                "{op}: {got:?}"
            );
        }
    }
}
