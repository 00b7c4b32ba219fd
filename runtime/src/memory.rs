//! The memory limit (`--max-memory`): what a run would hold, sized with checked
//! arithmetic and compared with the limit before anything is allocated, so that an
//! oversized model or batch is an error naming the tensor instead of an aborted process.

use smelt_compiler::ir::{Bindings, DType, Def, DimError, Graph, SizeOverflow, ValueId};
use smelt_compiler::schedule::MemoryPlan;
use std::collections::HashSet;
use thiserror::Error;

/// Why a run would not fit.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MemoryError {
    /// One tensor alone is over the limit.
    #[error("%{name} ({ty}) needs {}, more than the memory limit of {} (--max-memory)", human(*.bytes), human(*.limit))]
    Tensor {
        /// The value.
        name: String,
        /// Its type.
        ty: String,
        /// Its size in host memory.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The tensors together are over the limit.
    #[error("the run's {count} tensors need {} together (the largest is %{largest}), more than the memory limit of {} (--max-memory)", human(*.bytes), human(*.limit))]
    Total {
        /// Values sized.
        count: usize,
        /// Their total size.
        bytes: u64,
        /// The largest value's name.
        largest: String,
        /// The limit.
        limit: u64,
    },
    /// A value's size does not fit in 64 bits under the bindings.
    #[error("%{name} ({ty}): {source}")]
    Size {
        /// The value.
        name: String,
        /// Its type.
        ty: String,
        /// What overflowed.
        source: SizeOverflow,
    },
}

/// Bytes a host tensor holds per element: the interpreter and the tensors passed in and
/// out keep floats and integers as 64-bit values, booleans as bytes.
pub fn host_elem_bytes(dtype: DType) -> u64 {
    match dtype {
        DType::Bool => 1,
        _ => 8,
    }
}

/// The default limit: three quarters of the machine's RAM (`MemTotal` in
/// `/proc/meminfo`), or no limit where that cannot be read.
pub fn default_limit() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .map_or(u64::MAX, |total| total / 4 * 3)
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What a device holds of a graph's values at once, for the total the limit is
/// checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Every value, as if nothing were freed: the interpreter and the GPU paths (an
    /// upper bound).
    Everything,
    /// Only the arguments (inputs, parameters, state) before compilation; the CPU
    /// backend's memory plan sizes the rest ([`check_planned`]).
    Arguments,
}

/// Checks that every value of `graph` under `bindings` (values with unbound symbols are
/// skipped: the run binds them from its inputs and checks again) fits in `limit` on its
/// own, and that the values `held` counts fit together.
pub fn check(
    graph: &Graph,
    bindings: &Bindings,
    limit: u64,
    held: Held,
) -> Result<(), MemoryError> {
    let mut total = Total::default();
    for v in &graph.values {
        let bytes = match v.ty.bytes(bindings, host_elem_bytes(v.ty.dtype)) {
            Ok(b) => b,
            Err(DimError::Unbound(_)) => continue,
            Err(DimError::Overflow(source)) => {
                return Err(MemoryError::Size {
                    name: v.name.clone(),
                    ty: v.ty.to_string(),
                    source,
                })
            }
        };
        if bytes > limit {
            return Err(MemoryError::Tensor {
                name: v.name.clone(),
                ty: v.ty.to_string(),
                bytes,
                limit,
            });
        }
        if held == Held::Everything || !matches!(v.def, Def::Node { .. }) {
            total.add(&v.name, bytes);
        }
    }
    total.check(limit)
}

/// Checks the CPU backend's run of `graph` (its scheduled graph) under `plan`, made for
/// the run's bindings: the arguments and escaping values as host tensors, plus the
/// plan's slots, must fit in `limit` together. Nothing is allocated yet.
pub fn check_planned(
    graph: &Graph,
    plan: &MemoryPlan,
    bindings: &Bindings,
    limit: u64,
) -> Result<(), MemoryError> {
    let mut total = Total::default();
    let escaping: HashSet<ValueId> = plan.escaping.iter().copied().collect();
    for id in graph.ids() {
        let v = graph.value(id);
        if matches!(v.def, Def::Node { .. }) && !escaping.contains(&id) {
            continue;
        }
        // Sizes were checked for overflow before compilation; saturate here.
        let bytes =
            v.ty.bytes(bindings, host_elem_bytes(v.ty.dtype))
                .unwrap_or(u64::MAX);
        total.add(&v.name, bytes);
    }
    // The slots hold every other value; each is named by its first tenant.
    for slot in &plan.slots {
        if let Some(first) = slot.tenants.first() {
            total.add(&graph.value(first.value).name, slot.bytes());
        }
    }
    total.check(limit)
}

/// A running total of tensor bytes and the largest tensor in it.
#[derive(Default)]
struct Total {
    bytes: u64,
    count: usize,
    largest: (u64, String),
}

impl Total {
    fn add(&mut self, name: &str, bytes: u64) {
        if bytes > self.largest.0 {
            self.largest = (bytes, name.to_string());
        }
        self.count += 1;
        // Saturating: a sum that large is over any limit anyway.
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn check(self, limit: u64) -> Result<(), MemoryError> {
        if self.bytes > limit {
            return Err(MemoryError::Total {
                count: self.count,
                bytes: self.bytes,
                largest: self.largest.1,
                limit,
            });
        }
        Ok(())
    }
}

/// A `--max-memory` value that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("'{text}' {why}")]
pub struct LimitError {
    /// The value given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a `--max-memory` value: bytes, or a number with K, M, G or T (powers of 1024,
/// an optional trailing `B` or `iB`).
pub fn parse_limit(text: &str) -> Result<u64, LimitError> {
    let fail = |why| LimitError {
        text: text.to_string(),
        why,
    };
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(fail("has a unit other than K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: f64 = digits
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .ok_or_else(|| fail("is not a positive size (such as 8G or 512M)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err(fail("is larger than 2^64 bytes"));
    }
    Ok(bytes as u64)
}

/// A byte count for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_compiler::ir::text;

    #[test]
    fn limits_parse_with_units() {
        assert_eq!(parse_limit("1024"), Ok(1024));
        assert_eq!(parse_limit("8G"), Ok(8 << 30));
        assert_eq!(parse_limit("1.5KiB"), Ok(1536));
        assert!(parse_limit("-1G").is_err());
        assert!(parse_limit("lots").is_err());
        assert!(parse_limit("99999999T").is_err());
    }

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       24000000 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total(text), Some(24000000 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn names_the_tensor_over_the_limit() {
        let g =
            text::parse("graph @g {\n  input %x: f32[B, 1000]\n  %y = neg %x\n  output %y\n}\n")
                .unwrap()
                .graph;
        let b = Bindings::from([("B".to_string(), 1000)]);
        assert!(check(&g, &b, 64 << 20, Held::Everything).is_ok());
        let err = check(&g, &b, 4 << 20, Held::Everything)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("%x (f32[B, 1000]) needs 7.6 MiB"), "{err}");
        let huge = Bindings::from([("B".to_string(), u64::MAX)]);
        assert!(matches!(
            check(&g, &huge, u64::MAX, Held::Arguments),
            Err(MemoryError::Size { .. })
        ));
        // Together over the limit, each under it; only the argument counts when the
        // memory plan sizes the rest.
        let err = check(&g, &b, 10 << 20, Held::Everything).unwrap_err();
        assert!(matches!(err, MemoryError::Total { .. }), "{err}");
        assert!(check(&g, &b, 10 << 20, Held::Arguments).is_ok());
    }
}
