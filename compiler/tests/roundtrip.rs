//! Property: for random well-typed graphs, the text form and the JSON form round-trip
//! exactly (print → parse → print is byte-identical; JSON → graph gives the same graph).

use proptest::prelude::*;
use smelt_compiler::ir::{json, text, verify};

mod random_graph;

use random_graph::build;

fn special_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(1e-300),
        (-10.0..10.0f64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn text_form_round_trips(choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), special_float()), 0..40)) {
        let g = build(&choices);
        verify(&g).unwrap();
        let printed = text::print(&g);
        let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        prop_assert_eq!(text::print(&parsed.graph), printed);
    }

    #[test]
    fn json_form_round_trips(choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), special_float()), 0..40)) {
        let g = build(&choices);
        let j = json::to_json(&g);
        let back = json::from_json(&j).unwrap_or_else(|e| panic!("{e}\n{j}"));
        prop_assert_eq!(text::print(&back), text::print(&g));
        prop_assert_eq!(json::to_json(&back), j);
    }

    #[test]
    fn the_parser_never_panics(src in "\\PC{0,200}") {
        let _ = text::parse(&src);
    }

    #[test]
    fn mutated_graphs_never_panic(choices in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), -2.0..2.0f64), 0..12), cut in any::<u16>(), byte in any::<u8>()) {
        let printed = text::print(&build(&choices));
        let mut bytes = printed.into_bytes();
        let at = usize::from(cut) % bytes.len();
        bytes[at] = byte;
        let _ = text::parse(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn random_graphs_are_not_trivial() {
    // Guards the generator: a fixed choice list must yield a graph using many op kinds.
    let choices: Vec<(u8, u8, u8, f64)> = (0..64u8)
        .map(|i| {
            (
                i,
                i.wrapping_mul(7),
                i.wrapping_mul(13),
                f64::from(i) / 8.0 - 2.0,
            )
        })
        .collect();
    let g = build(&choices);
    let printed = text::print(&g);
    let kinds: std::collections::BTreeSet<&str> = g
        .values
        .iter()
        .filter_map(|v| match &v.def {
            smelt_compiler::ir::Def::Node { op, .. } => Some(op.name()),
            _ => None,
        })
        .collect();
    assert!(kinds.len() >= 10, "only {kinds:?}:\n{printed}");
}

/// Attention's backward composites (`attention_lse`, `attention_grad_q`, ...), as
/// autodiff emits them, round-trip through both forms.
#[test]
fn attention_backward_composites_round_trip() {
    for causal in [true, false] {
        let src = format!(
            "graph @t {{\n  input %q: f32[B, 2, 5, 8]\n  input %k: f32[B, 2, 7, 8]\n  input %v: f32[B, 2, 7, 3]\n  %y = attention %q, %k, %v {{causal = {causal}, scale = 0.35355339059327373}}\n  %loss: f32[] = reduce_sum %y {{axes = [0, 1, 2, 3]}}\n  output %loss\n}}\n"
        );
        let g = text::parse(&src).unwrap().graph;
        let wrt = ["q", "k", "v"].map(|n| g.find(n).unwrap());
        let g = smelt_compiler::autodiff::differentiate(&g, g.find("loss").unwrap(), &wrt)
            .unwrap()
            .graph;
        let printed = text::print(&g);
        for name in [
            "attention_lse",
            "attention_grad_q",
            "attention_grad_k",
            "attention_grad_v",
        ] {
            assert!(
                printed.contains(&format!("= {name} %")),
                "{name}:\n{printed}"
            );
        }
        let parsed = text::parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(text::print(&parsed.graph), printed);
        let j = json::to_json(&g);
        let back = json::from_json(&j).unwrap_or_else(|e| panic!("{e}\n{j}"));
        assert_eq!(text::print(&back), printed);
        assert_eq!(json::to_json(&back), j);
    }
}

/// A backward composite with mismatched operands is a shape error naming the operands
/// it expects, not a panic.
#[test]
fn attention_backward_composites_check_their_operands() {
    let src = "graph @t {\n  input %q: f32[2, 5, 8]\n  input %k: f32[2, 7, 8]\n  input %dy: f32[2, 5, 3]\n  input %lse: f32[2, 7]\n  %y = attention_grad_v %q, %k, %dy, %lse {causal = false, scale = 0.5}\n  output %y\n}\n";
    let err = text::parse(src).unwrap_err().to_string();
    assert!(
        err.contains("'attention_grad_v' needs") && err.contains("q, k, dy, lse"),
        "{err}"
    );
}
