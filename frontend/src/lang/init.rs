//! Parameter initialisers: `zeros`, `ones`, `normal(std)`, `uniform(a, b)`, and the
//! fan-based `kaiming`, `kaiming_normal`, `xavier`, `xavier_normal`, which lower to
//! uniform or normal initialisers with bounds computed from the parameter's shape.
//!
//! Fans follow the `x @ w` convention of the language: a weight is stored
//! `[.., fan_in, fan_out]` (leading axes stack independent matrices, e.g. experts);
//! a vector `[n]` has fan_in = fan_out = n.

use smelt_compiler::ir::{Init, TensorType};

/// Every initialiser name, for error messages and docs.
pub const INITIALISERS: &[&str] = &[
    "zeros",
    "ones",
    "normal(std)",
    "uniform(low, high)",
    "kaiming",
    "kaiming_normal",
    "xavier",
    "xavier_normal",
];

/// `(fan_in, fan_out)` of a parameter type (static, rank >= 1).
fn fans(ty: &TensorType) -> Result<(f64, f64), String> {
    let dims = ty
        .shape
        .as_static()
        .ok_or_else(|| format!("fan-based initialisers need a static shape, found {ty}"))?;
    match dims.as_slice() {
        [] => Err(format!(
            "fan-based initialisers need a tensor of rank >= 1, found {ty}"
        )),
        [n] => Ok((*n as f64, *n as f64)),
        [.., fan_in, fan_out] => Ok((*fan_in as f64, *fan_out as f64)),
    }
}

/// The initialiser `name` applied to numeric arguments `args` (and `mean` for normal)
/// for a parameter of type `ty`.
pub(crate) fn initialiser(
    name: &str,
    args: &[f64],
    mean: Option<f64>,
    ty: &TensorType,
) -> Result<Init, String> {
    let arity = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "initialiser '{name}' takes {n} argument(s): {usage}, found {}",
                args.len()
            ))
        }
    };
    if mean.is_some() && name != "normal" {
        return Err(format!(
            "only 'normal' takes a 'mean' argument, not '{name}'"
        ));
    }
    let positive = |what: &str, x: f64| {
        if x.is_finite() && x > 0.0 {
            Ok(x)
        } else {
            Err(format!("{what} must be positive, found {x}"))
        }
    };
    Ok(match name {
        "zeros" => {
            arity(0, "zeros")?;
            Init::Zeros
        }
        "ones" => {
            arity(0, "ones")?;
            Init::Ones
        }
        "normal" => {
            arity(1, "normal(std)")?;
            Init::Normal {
                mean: mean.unwrap_or(0.0),
                std: positive("the std of 'normal'", args[0])?,
            }
        }
        "uniform" => {
            arity(2, "uniform(low, high)")?;
            let (low, high) = (args[0], args[1]);
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!(
                    "'uniform(low, high)' needs finite low < high, found {low} and {high}"
                ));
            }
            Init::Uniform { low, high }
        }
        "kaiming" | "kaiming_normal" | "xavier" | "xavier_normal" => {
            arity(0, name)?;
            let (fan_in, fan_out) = fans(ty)?;
            // He et al. use fan_in and gain sqrt(2) (for ReLU); Glorot and Bengio use
            // the average of the fans and gain 1. Uniform bounds are sqrt(3) std.
            let var = if name.starts_with("kaiming") {
                2.0 / fan_in
            } else {
                2.0 / (fan_in + fan_out)
            };
            let std = positive("the fan of the parameter", var)?.sqrt();
            if name.ends_with("normal") {
                Init::Normal { mean: 0.0, std }
            } else {
                let bound = 3f64.sqrt() * std;
                Init::Uniform {
                    low: -bound,
                    high: bound,
                }
            }
        }
        _ => {
            return Err(format!(
                "unknown initialiser '{name}' (expected one of: {})",
                INITIALISERS.join(", ")
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_compiler::ir::DType;

    #[test]
    fn kaiming_and_xavier_use_the_fans() {
        let ty = TensorType::fixed(DType::F32, &[600, 200]);
        let Init::Uniform { high, .. } = initialiser("kaiming", &[], None, &ty).unwrap() else {
            panic!()
        };
        assert!((high - (6.0f64 / 600.0).sqrt()).abs() < 1e-12);
        let Init::Normal { std, .. } = initialiser("xavier_normal", &[], None, &ty).unwrap() else {
            panic!()
        };
        assert!((std - (2.0f64 / 800.0).sqrt()).abs() < 1e-12);
    }
}
