//! Learning-rate schedules, evaluated by the training loop and fed to the step graph.

use std::fmt;

/// How the learning rate changes over the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate at every step.
    Constant,
    /// Linear warm-up from 0 over `warmup` steps, then cosine decay to 10% of the base
    /// rate at the last step.
    WarmupCosine {
        /// Warm-up steps.
        warmup: usize,
    },
}

impl Schedule {
    /// The learning rate at `step` (1-based) of `total`.
    pub fn lr(&self, base: f64, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::WarmupCosine { warmup } => {
                if step <= warmup {
                    return base * step as f64 / warmup.max(1) as f64;
                }
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((step - warmup) as f64 / span).min(1.0);
                let min = 0.1 * base;
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::WarmupCosine { warmup } => write!(f, "cosine:{warmup}"),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Schedule, String> {
        match s.split_once(':') {
            None if s == "constant" => Ok(Schedule::Constant),
            None if s == "cosine" => Ok(Schedule::WarmupCosine { warmup: 0 }),
            Some(("cosine", w)) => w
                .parse()
                .map(|warmup| Schedule::WarmupCosine { warmup })
                .map_err(|_| format!("'{w}' is not a number of warm-up steps")),
            _ => Err(format!(
                "unknown schedule '{s}' (expected constant, cosine or cosine:WARMUP)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s: Schedule = "cosine:10".parse().unwrap();
        assert_eq!(s.lr(1.0, 5, 110), 0.5);
        assert_eq!(s.lr(1.0, 10, 110), 1.0);
        assert!((s.lr(1.0, 60, 110) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 110, 110) - 0.1).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 9), 0.3);
        assert!("linear".parse::<Schedule>().is_err());
    }
}
