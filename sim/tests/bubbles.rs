//! With constant pass costs, the simulated bubble of every rank equals the closed forms
//! of DeepSeek-V3's technical report (Table 2), with `B` the whole backward and `W` its
//! weight part: 1F1B `(PP - 1)(F + B)`, ZB1P `(PP - 1)(F + B - 2W)`.
//!
//! Costs are small integers, so every time is an exact float and equality is exact.

use smelt_compiler::pipeline_parallel::{generate, ScheduleKind};
use smelt_sim::{simulate, Costs};

const COSTS: [(f64, f64, f64); 5] = [
    (1.0, 2.0, 1.0),
    (2.0, 4.0, 1.0),
    (3.0, 5.0, 2.0),
    (1.0, 1.0, 0.0),
    (2.0, 3.0, 1.0),
];

fn check(kind: ScheduleKind, formula: impl Fn(f64, Costs) -> f64) {
    for pp in [4, 8, 16] {
        for micro_batches in [pp, pp + 3, 2 * pp, 3 * pp + 1] {
            let plan = generate(kind, pp, micro_batches).unwrap();
            for (forward, backward, weight) in COSTS {
                let costs = Costs::new(forward, backward, weight);
                let report = simulate(&plan, &costs).unwrap().report();
                let want = formula((pp - 1) as f64, costs);
                for (rank, got) in report.bubble_per_rank.iter().enumerate() {
                    assert_eq!(
                        *got, want,
                        "{kind:?} PP={pp} M={micro_batches} {costs:?}: rank {rank} bubble {got}, formula {want}\n{}",
                        plan.to_text()
                    );
                }
                let busy = micro_batches as f64 * (forward + backward);
                assert_eq!(report.step_time, busy + want);
            }
        }
    }
}

#[test]
fn one_f_one_b_bubble_is_the_reports_formula() {
    check(ScheduleKind::OneFOneB, |p, c| p * (c.forward + c.backward));
}

#[test]
fn zb1p_bubble_is_the_reports_formula() {
    check(ScheduleKind::ZeroBubble, |p, c| {
        p * (c.forward + c.backward - 2.0 * c.weight)
    });
}

/// The trace has one named track per rank and one slice per pass.
#[test]
fn the_chrome_trace_lists_every_pass() {
    let plan = generate(ScheduleKind::ZeroBubble, 4, 8).unwrap();
    let costs = Costs::new(1.0, 2.0, 1.0);
    let trace = simulate(&plan, &costs).unwrap().chrome_trace();
    let events = trace["traceEvents"].as_array().unwrap();
    let slices = events.iter().filter(|e| e["ph"] == "X").count();
    let tracks = events.iter().filter(|e| e["ph"] == "M").count();
    assert_eq!((slices, tracks), (4 * 8 * 3, 4));
}
