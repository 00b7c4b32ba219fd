//! Property: the whole rule set, run on random well-typed graphs (the generator of the
//! round-trip properties), gives a graph that verifies, never costs more than its input
//! under the cost model the optimiser used, and computes the same outputs and updates in
//! the reference interpreter (f64) on random inputs and parameters.
//!
//! Tolerance, as in `optimize_soundness.rs`: `|a - b| <= 1e-9 * (1 + |a|)` where both
//! are finite. Random chains of `exp` and products overflow, and a re-associated product
//! may overflow where the original did not: an infinite or NaN result may stand against
//! a finite one only beyond 1e100; otherwise both must be the same non-finite value.

#[path = "../compiler/tests/random_graph/mod.rs"]
mod random_graph;

mod common;

use proptest::prelude::*;
use smelt_compiler::ir::{text, verify, Graph};
use smelt_compiler::optimize::{graph_cost, optimize, Options, RooflineTarget};
use smelt_runtime::interp::{execute, Precision};
use smelt_runtime::{params, Tensor};
use std::collections::HashMap;

const TOLERANCE: f64 = 1e-9;
/// The size of the generator's symbolic batch axis `B` in the fed inputs.
const BATCH: usize = 2;
/// Routing indices pick one of the generator's 2 experts.
const EXPERTS: i64 = 2;

fn feeds(g: &Graph) -> HashMap<String, Tensor> {
    let mut f: HashMap<String, Tensor> = params::init_params(g, 11).into_iter().collect();
    for id in g.inputs() {
        f.insert(
            g.value(id).name.clone(),
            common::random_input(g, id, BATCH, EXPERTS),
        );
    }
    f
}

fn agree(a: f64, b: f64) -> bool {
    if a.is_finite() && b.is_finite() {
        (a - b).abs() <= TOLERANCE * (1.0 + a.abs())
    } else if a.is_finite() || b.is_finite() {
        a.abs().min(b.abs()) > 1e100
    } else {
        a.is_nan() == b.is_nan() && (a.is_nan() || a == b)
    }
}

fn check(choices: &[(u8, u8, u8, f64)]) -> Result<(), TestCaseError> {
    let g = random_graph::build(choices);
    let model = RooflineTarget::cpu();
    let (opt, report) = optimize(&g, &model, &Options::default())
        .map_err(|e| TestCaseError::fail(format!("optimize failed: {e}")))?;
    let shown = || {
        format!(
            "input:\n{}\nresult:\n{}\n{report}",
            text::print(&g),
            text::print(&opt)
        )
    };
    prop_assert!(verify(&opt).is_ok(), "result does not verify\n{}", shown());
    let (before, after) = (graph_cost(&g, &model), graph_cost(&opt, &model));
    prop_assert!(
        after.seconds <= before.seconds,
        "cost rose from {before} to {after}\n{}",
        shown()
    );
    let f = feeds(&g);
    let run = |graph: &Graph| execute(graph, &f, Precision::F64);
    let (Ok(a), Ok(b)) = (run(&g), run(&opt)) else {
        // The input itself may fail at run time (say, an integer division by zero);
        // then the result must fail too.
        prop_assert!(run(&g).is_err() && run(&opt).is_err(), "{}", shown());
        return Ok(());
    };
    let values = |e: &smelt_runtime::interp::Execution| -> Vec<Vec<f64>> {
        e.outputs
            .iter()
            .chain(e.updates.iter().map(|(_, t)| t))
            .map(Tensor::to_f64_vec)
            .collect()
    };
    for (x, y) in values(&a).iter().zip(values(&b)) {
        prop_assert_eq!(x.len(), y.len(), "{}", shown());
        for (&p, &q) in x.iter().zip(&y) {
            prop_assert!(agree(p, q), "{p} vs {q}\n{}", shown());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn optimising_random_graphs_keeps_their_values_and_never_raises_cost(
        choices in prop::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u8>(), -2.0..2.0f64),
            0..24,
        )
    ) {
        check(&choices)?;
    }
}

/// The property above is only as good as the rewrites it sees: over a fixed set of
/// random graphs, many different rules must fire.
#[test]
fn random_graphs_make_many_rules_fire() {
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    let mut fired = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let choices: Vec<(u8, u8, u8, f64)> = (0..20)
            .map(|_| (next(), next(), next(), f64::from(next()) / 64.0 - 2.0))
            .collect();
        let g = random_graph::build(&choices);
        let (_, report) = optimize(&g, &RooflineTarget::cpu(), &Options::default()).unwrap();
        fired.extend(report.rules_fired.into_keys());
    }
    assert!(fired.len() >= 16, "only {fired:?} fired");
}
