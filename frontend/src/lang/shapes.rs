//! The language's shape rules, as pure functions on IR shapes: numpy-style
//! broadcasting, axis normalisation and overflow-safe dimension arithmetic.
//!
//! Broadcasting (as in numpy): shapes are aligned at their last axis; missing leading
//! axes count as size 1; two sizes agree if they are equal or one of them is 1, and the
//! result takes the other. Symbolic sizes agree only with themselves or with 1.

use smelt_compiler::ir::{Dim, Shape};

/// The broadcast shape of `a` and `b`, or which axes disagree.
pub(crate) fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let one = Dim::fixed(1);
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        // Axis i counted from the end.
        let pick = |s: &Shape| {
            let r = s.rank();
            if i + r >= rank {
                s.dims()[i + r - rank].clone()
            } else {
                one.clone()
            }
        };
        let (x, y) = (pick(a), pick(b));
        let d = if x == y || y == one {
            x
        } else if x == one {
            y
        } else {
            return Err(format!(
                "shapes {a} and {b} do not broadcast: axis {} has size {x} vs {y} (sizes must be equal or 1)",
                i as i64 - rank as i64
            ));
        };
        dims.push(d);
    }
    Ok(Shape(dims))
}

/// The axis `axis` (negative counts from the end) of a tensor of rank `rank`.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!(
            "axis {axis} is out of range for a tensor of rank {rank} (valid: {} to {})",
            -r,
            r - 1
        ));
    }
    Ok(a as usize)
}

/// `a * b`, or an error if the constant factor would exceed 2^63-1.
pub(crate) fn mul_dims(a: &Dim, b: &Dim) -> Result<Dim, String> {
    a.mul(b).map_err(|e| e.to_string())
}

/// Checks that the static part of the element count of `shape` stays within 2^63-1.
pub(crate) fn check_numel(shape: &Shape) -> Result<(), String> {
    shape.element_bound().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[&str]) -> Shape {
        Shape(dims.iter().map(|d| Dim::parse(d).unwrap()).collect())
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shapes(&s(&["B", "1", "4"]), &s(&["3", "1"])),
            Ok(s(&["B", "3", "4"]))
        );
        assert!(broadcast_shapes(&s(&["B"]), &s(&["T"])).is_err());
        assert!(broadcast_shapes(&s(&["2", "3"]), &s(&["4"])).is_err());
    }

    #[test]
    fn monomials_divide_exactly() {
        assert_eq!(
            Dim::parse("128*B").unwrap().div_exact(&Dim::fixed(64)),
            Dim::parse("2*B").ok()
        );
        assert_eq!(Dim::sym("B").div_exact(&Dim::sym("T")), None);
    }
}
