//! DualPipe's and DualPipeV's generated orders are those written out by hand from the
//! eight phases of the reference implementation (`tests/data/dual_pipe_orders.txt`).

use smelt_compiler::pipeline_parallel::{generate, ScheduleKind};

const ORDERS: &str = include_str!("data/dual_pipe_orders.txt");

/// `(kind, ranks, micro-batches, each rank's tasks)` for each `schedule` section.
fn expected() -> Vec<(ScheduleKind, usize, usize, Vec<Vec<String>>)> {
    let mut cases = Vec::new();
    for line in ORDERS.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["schedule", kind, "ranks", ranks, "micro-batches", micro_batches] => {
                let kind = match *kind {
                    "dualpipe" => ScheduleKind::DualPipe,
                    "dualpipev" => ScheduleKind::DualPipeV,
                    other => panic!("unknown schedule {other}"),
                };
                cases.push((
                    kind,
                    ranks.parse().unwrap(),
                    micro_batches.parse().unwrap(),
                    Vec::new(),
                ));
            }
            ["rank", rank, tasks @ ..] => {
                let ranks = &mut cases.last_mut().expect("a schedule line first").3;
                assert_eq!(*rank, format!("{}:", ranks.len()), "ranks in order");
                let tasks = tasks.iter().filter(|&&t| t != "|").map(|t| t.to_string());
                ranks.push(tasks.collect());
            }
            _ => assert!(line.is_empty() || line.starts_with('#'), "{line}"),
        }
    }
    cases
}

#[test]
fn generated_orders_are_the_reference_phases() {
    let cases = expected();
    assert_eq!(cases.len(), 3);
    for (kind, ranks, micro_batches, want) in cases {
        assert_eq!(want.len(), ranks, "{kind} {ranks}×{micro_batches}");
        let plan = generate(kind, ranks, micro_batches).unwrap();
        for (rank, (tasks, want)) in plan.ranks.iter().zip(&want).enumerate() {
            let got: Vec<String> = tasks.iter().map(ToString::to_string).collect();
            assert_eq!(&got, want, "{kind} {ranks}×{micro_batches}, rank {rank}");
        }
    }
}
