//! Checked sizes (issue 22): over random shapes, sizes and bindings — tiny, huge and
//! zero — the size arithmetic never panics or wraps; it agrees with exact 128-bit
//! arithmetic where the result fits in 2^63-1, and is an error where it does not.

use proptest::prelude::*;
use smelt_compiler::ir::{Bindings, DType, Dim, Shape, TensorType, MAX_SIZE};

/// Sizes from every range that matters: small, around 2^32, around 2^63, and 0.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..4,
        1u64..100_000,
        (1u64 << 31)..(1u64 << 33),
        (MAX_SIZE - 4)..=MAX_SIZE,
        any::<u64>(),
    ]
}

/// A dimension: a size, or a symbol with a coefficient.
fn dim() -> impl Strategy<Value = (u64, Option<&'static str>)> {
    (
        size(),
        prop::option::of(prop::sample::select(vec!["B", "T"])),
    )
}

fn build(parts: &[(u64, Option<&'static str>)]) -> Option<Shape> {
    parts
        .iter()
        .map(|&(n, sym)| {
            let d = Dim::checked_fixed(n).ok()?;
            match sym {
                Some(s) => d.mul(&Dim::sym(s)).ok(),
                None => Some(d),
            }
        })
        .collect::<Option<Vec<_>>>()
        .map(Shape)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn products_are_exact_or_errors(a in size(), b in size()) {
        let exact = a as u128 * b as u128;
        match (Dim::checked_fixed(a), Dim::checked_fixed(b)) {
            (Ok(x), Ok(y)) => match x.mul(&y) {
                Ok(p) => prop_assert_eq!(p.as_static().map(u128::from), Some(exact)),
                Err(_) => prop_assert!(exact > MAX_SIZE as u128),
            },
            _ => prop_assert!(a > MAX_SIZE || b > MAX_SIZE),
        }
    }

    #[test]
    fn shapes_size_without_panics(
        parts in prop::collection::vec(dim(), 0..6),
        b in size(),
        t in size(),
    ) {
        let Some(shape) = build(&parts) else { return Ok(()) };
        let bindings = Bindings::from([("B".to_string(), b), ("T".to_string(), t)]);
        let ty = TensorType::new(DType::F32, shape.clone());
        let fits_statically = ty.check_size().is_ok();
        // Exact bound of the static part, zero axes counted as 1.
        let bound: u128 = parts.iter().fold(1u128, |acc, &(n, _)| acc.saturating_mul(n.max(1) as u128));
        prop_assert_eq!(fits_statically, bound.saturating_mul(4) <= MAX_SIZE as u128);
        let _ = shape.numel();
        match shape.eval(&bindings) {
            Ok(sizes) => {
                let product: u128 = sizes.iter().fold(1u128, |acc, &n| acc * (n.max(1) as u128));
                prop_assert!(product <= MAX_SIZE as u128);
                if let Ok(bytes) = ty.bytes(&bindings, 8) {
                    let exact: u128 = sizes.iter().map(|&n| n as u128).product::<u128>() * 8;
                    prop_assert_eq!(bytes as u128, exact);
                }
            }
            Err(_) => {
                // Some evaluated product (zeros as 1) must really exceed the bound.
                let product: u128 = parts.iter().fold(1u128, |acc, &(n, sym)| {
                    let s = match sym { Some("B") => b, Some(_) => t, None => 1 };
                    acc.saturating_mul((n as u128 * s as u128).max(1))
                });
                prop_assert!(product > MAX_SIZE as u128);
            }
        }
    }

    #[test]
    fn sums_are_exact_or_errors(a in size(), b in size()) {
        if let (Ok(x), Ok(y)) = (Dim::checked_fixed(a), Dim::checked_fixed(b)) {
            match x.add(&y) {
                Ok(Some(s)) => prop_assert_eq!(s.as_static().map(u128::from), Some(a as u128 + b as u128)),
                Ok(None) => prop_assert!(false, "static sizes always add"),
                Err(_) => prop_assert!(a as u128 + b as u128 > MAX_SIZE as u128),
            }
        }
    }
}
