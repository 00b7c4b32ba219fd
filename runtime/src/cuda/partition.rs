//! How the GPU's SMs are shared between compute and communication.
//!
//! Two mechanisms give communication kernels their own SMs:
//! - **green contexts** (driver ≥ 12.4): the hardware partitions the SMs; each stream
//!   belongs to one partition, so compute cannot spill onto reserved SMs whatever its
//!   grid. Partition sizes come in the hardware's granularity (on Hopper, groups of 8
//!   SMs), so a request is rounded up to it.
//! - **persistent-grid budgets** (any driver): the SM plan caps compute grids at
//!   `(SMs − comm) × resident blocks` and gives communication exactly `comm` blocks,
//!   so the work fits beside each other without the hardware enforcing it.
//!
//! Everything here is arithmetic on numbers the driver reports, so it is tested
//! without a GPU.

use std::fmt;

/// The smallest SM group the hardware partitions, and the step between sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granularity {
    /// Fewest SMs in one group.
    pub min_count: u32,
    /// Group sizes are multiples of this.
    pub alignment: u32,
}

/// SMs per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmSplit {
    /// SMs for compute kernels.
    pub compute: u32,
    /// SMs reserved for communication kernels.
    pub comm: u32,
}

impl SmSplit {
    /// Exactly what was asked: `comm` SMs for communication, the rest for compute.
    pub fn requested(total: u32, comm: u32) -> SmSplit {
        SmSplit {
            compute: total.saturating_sub(comm),
            comm,
        }
    }
}

/// Splits `total` SMs so that at least `comm_request` go to communication, in groups
/// the hardware can make; compute keeps the rest (the driver's remainder group).
pub(crate) fn split_sms(total: u32, comm_request: u32, g: Granularity) -> Result<SmSplit, String> {
    if comm_request == 0 {
        return Ok(SmSplit {
            compute: total,
            comm: 0,
        });
    }
    let step = g.alignment.max(1);
    let comm = comm_request.max(g.min_count).div_ceil(step) * step;
    if comm >= total {
        return Err(format!(
            "{comm_request} communication SMs round up to {comm} (groups of {} from {}), \
             which leaves no SM of {total} for compute",
            step, g.min_count
        ));
    }
    Ok(SmSplit {
        compute: total - comm,
        comm,
    })
}

/// Granularity from two trial splits: one asking for 1 SM (the driver returns its
/// minimum) and one asking for one more than that minimum (it returns the next size).
pub fn granularity_from_trials(smallest: u32, next: u32) -> Granularity {
    Granularity {
        min_count: smallest.max(1),
        alignment: next.saturating_sub(smallest).max(1),
    }
}

/// Why green contexts were not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No SMs were asked for communication: nothing to partition.
    NoCommSms,
    /// The driver predates green contexts (12.4).
    OldDriver(i32),
    /// The driver library lacks a green-context entry point.
    MissingSymbol(&'static str),
    /// The split cannot be made (rounding leaves nothing for compute).
    Unsplittable(String),
    /// Events recorded on one green-context stream did not order the other.
    CrossStreamEvents(String),
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fallback::NoCommSms => write!(f, "no communication SMs requested"),
            Fallback::OldDriver(v) => write!(
                f,
                "driver CUDA {}.{} has no green contexts (needs 12.4)",
                v / 1000,
                (v % 1000) / 10
            ),
            Fallback::MissingSymbol(s) => write!(f, "the driver does not export {s}"),
            Fallback::Unsplittable(why) => write!(f, "{why}"),
            Fallback::CrossStreamEvents(why) => write!(
                f,
                "events across the green-context streams failed the probe: {why}"
            ),
        }
    }
}

/// The partition a program runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Hardware partitions (green contexts) of these sizes.
    Green(SmSplit),
    /// One context; the SM plan's grid caps keep to these sizes.
    PersistentGrid {
        /// The budget the plan enforces.
        split: SmSplit,
        /// Why not green contexts.
        why: Fallback,
    },
}

impl Partition {
    /// The SM counts, whichever mechanism enforces them.
    pub fn split(&self) -> SmSplit {
        match self {
            Partition::Green(s) | Partition::PersistentGrid { split: s, .. } => *s,
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Green(s) => write!(
                f,
                "green contexts: {} compute SMs, {} communication SMs",
                s.compute, s.comm
            ),
            Partition::PersistentGrid { split, why } => write!(
                f,
                "persistent-grid budget: {} compute SMs, {} communication SMs ({why})",
                split.compute, split.comm
            ),
        }
    }
}

/// The entry points the green-context path calls.
pub const GREEN_SYMBOLS: [&str; 5] = [
    "cuDeviceGetDevResource",
    "cuDevSmResourceSplitByCount",
    "cuDevResourceGenerateDesc",
    "cuGreenCtxCreate",
    "cuGreenCtxStreamCreate",
];

/// Decides the mechanism from what the driver offers. `granularity` is `None` when it
/// could not be queried; `has_symbol` says whether the driver exports a name.
pub fn choose(
    total: u32,
    comm_sms: u32,
    driver_version: i32,
    has_symbol: impl Fn(&str) -> bool,
    granularity: Option<Granularity>,
) -> Partition {
    let budget = SmSplit {
        compute: total - comm_sms.min(total),
        comm: comm_sms,
    };
    let fallback = |why| Partition::PersistentGrid { split: budget, why };
    if comm_sms == 0 {
        return fallback(Fallback::NoCommSms);
    }
    if driver_version < 12040 {
        return fallback(Fallback::OldDriver(driver_version));
    }
    if let Some(missing) = GREEN_SYMBOLS.iter().find(|s| !has_symbol(s)) {
        return fallback(Fallback::MissingSymbol(missing));
    }
    let Some(g) = granularity else {
        return fallback(Fallback::Unsplittable(
            "the SM granularity could not be queried".into(),
        ));
    };
    match split_sms(total, comm_sms, g) {
        Ok(split) => Partition::Green(split),
        Err(why) => fallback(Fallback::Unsplittable(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOPPER: Granularity = Granularity {
        min_count: 8,
        alignment: 8,
    };

    #[test]
    fn requests_round_up_to_the_granularity() {
        assert_eq!(
            split_sms(132, 20, HOPPER),
            Ok(SmSplit {
                compute: 108,
                comm: 24
            })
        );
        assert_eq!(
            split_sms(132, 24, HOPPER),
            Ok(SmSplit {
                compute: 108,
                comm: 24
            })
        );
        // Below the minimum: the minimum.
        assert_eq!(split_sms(132, 2, HOPPER).unwrap().comm, 8);
        // A finer-grained chip keeps the request.
        let fine = Granularity {
            min_count: 2,
            alignment: 2,
        };
        assert_eq!(split_sms(132, 20, fine).unwrap().comm, 20);
        assert_eq!(split_sms(132, 0, HOPPER).unwrap().compute, 132);
    }

    #[test]
    fn a_split_must_leave_compute_sms() {
        let err = split_sms(132, 130, HOPPER).unwrap_err();
        assert!(
            err.contains("rounds up to 136") || err.contains("136"),
            "{err}"
        );
        assert!(split_sms(16, 9, HOPPER).is_err());
        assert_eq!(split_sms(17, 9, HOPPER).unwrap().compute, 1);
    }

    #[test]
    fn granularity_comes_from_two_trial_splits() {
        assert_eq!(granularity_from_trials(8, 16), HOPPER);
        assert_eq!(
            granularity_from_trials(4, 6),
            Granularity {
                min_count: 4,
                alignment: 2
            }
        );
    }

    #[test]
    fn green_contexts_need_a_new_driver_and_every_symbol() {
        let all = |_: &str| true;
        assert_eq!(
            choose(132, 20, 12080, all, Some(HOPPER)),
            Partition::Green(SmSplit {
                compute: 108,
                comm: 24
            })
        );
        let old = choose(132, 20, 12030, all, Some(HOPPER));
        assert_eq!(
            old,
            Partition::PersistentGrid {
                split: SmSplit {
                    compute: 112,
                    comm: 20
                },
                why: Fallback::OldDriver(12030)
            }
        );
        assert!(old.to_string().contains("12.3"), "{old}");
        let missing = choose(132, 20, 12080, |s| s != "cuGreenCtxCreate", Some(HOPPER));
        assert!(matches!(
            missing,
            Partition::PersistentGrid {
                why: Fallback::MissingSymbol("cuGreenCtxCreate"),
                ..
            }
        ));
        assert!(matches!(
            choose(132, 0, 12080, all, Some(HOPPER)),
            Partition::PersistentGrid {
                why: Fallback::NoCommSms,
                ..
            }
        ));
        assert!(matches!(
            choose(132, 20, 12080, all, None),
            Partition::PersistentGrid {
                why: Fallback::Unsplittable(_),
                ..
            }
        ));
        let tight = choose(16, 10, 12080, all, Some(HOPPER));
        assert_eq!(tight.split().comm, 10, "falls back to the plan's budget");
    }
}
