//! `smelt simulate` from the command line: the JSON report's bubble is the closed form
//! of DeepSeek-V3's report, the trace is a Chrome trace, and bad costs are errors.

mod common;

use common::{expect_user_error, smelt, texts};

#[test]
fn json_report_and_trace() {
    let trace = std::env::temp_dir().join(format!("smelt-simulate-{}.json", std::process::id()));
    let out = smelt(&[
        "simulate",
        "--schedule",
        "zb1p",
        "--pp",
        "8",
        "--micro-batches",
        "16",
        "--costs",
        "F=2,B=3,W=1",
        "--format",
        "json",
        "--trace",
        trace.to_str().expect("utf-8 path"),
    ]);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    // (PP - 1)(F + B - 2W) = 7 * 3; the step is 16 micro-batches of F + B plus that.
    assert_eq!(report["bubble"], 21.0);
    assert_eq!(report["step_time"], 16.0 * 5.0 + 21.0);
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace written"))
            .expect("trace is JSON");
    let slices = trace["traceEvents"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    assert_eq!(slices, 8 * 16 * 3);
}

/// DualPipe with its own F&B cost: the largest bubble is the report's
/// `(PP/2 - 1)(F&B + B - 3W)` when `F = B - W` and `W <= F`, as here.
#[test]
fn dual_pipe_json_report() {
    for (schedule, pp, micro_batches, bubble) in [
        // (8/2 - 1)(4 + 3 - 3)
        ("dualpipe", "8", "20", 12.0),
        // DualPipeV on 4 ranks is 8 stages: (8/2 - 1)(4 + 3 - 3)
        ("dualpipev", "4", "10", 12.0),
    ] {
        let out = smelt(&[
            "simulate",
            "--schedule",
            schedule,
            "--pp",
            pp,
            "--micro-batches",
            micro_batches,
            "--costs",
            "F=2,B=3,W=1,FB=4",
            "--format",
            "json",
        ]);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        assert_eq!(report["bubble"], bubble, "{schedule}");
        let ranks = report["ranks"].as_array().expect("ranks");
        assert_eq!(ranks.len(), 4 + 4 * usize::from(schedule == "dualpipe"));
        assert!(
            ranks[0].as_str().unwrap().contains("&B"),
            "{schedule}: {ranks:?}"
        );
    }
}

#[test]
fn dual_pipe_sizes_it_cannot_run_are_user_errors() {
    for (schedule, pp, micro_batches, says) in [
        ("dualpipe", "3", "12", "even number of ranks"),
        ("dualpipe", "4", "9", "even number of them"),
        ("dualpipe", "4", "6", "at least 8"),
        ("dualpipev", "4", "7", "at least 8"),
    ] {
        let out = smelt(&[
            "simulate",
            "--schedule",
            schedule,
            "--pp",
            pp,
            "--micro-batches",
            micro_batches,
            "--costs",
            "F=1,B=2,W=1",
        ]);
        let err = expect_user_error(&out);
        assert!(
            err.contains(says),
            "{schedule} {pp} × {micro_batches}: {err}"
        );
    }
}

#[test]
fn bad_costs_are_user_errors() {
    for costs in [
        "F=1",
        "F=1,B=2,W=2",
        "F=-1,B=2",
        "F=1,B=x",
        "G=1",
        "F=1,B=2,FB=-1",
    ] {
        let out = smelt(&[
            "simulate",
            "--schedule",
            "1f1b",
            "--pp",
            "4",
            "--micro-batches",
            "8",
            "--costs",
            costs,
        ]);
        let err = expect_user_error(&out);
        assert!(err.contains("--costs"), "{costs}: {err}");
    }
}

/// Sizes are checked before anything is allocated for them.
#[test]
fn oversized_pipelines_are_user_errors() {
    for (pp, micro_batches) in [("0", "8"), ("4", "0"), ("1000000000", "1000000000")] {
        let out = smelt(&[
            "simulate",
            "--schedule",
            "zb1p",
            "--pp",
            pp,
            "--micro-batches",
            micro_batches,
            "--costs",
            "F=1,B=2,W=1",
        ]);
        let err = expect_user_error(&out);
        assert!(err.contains("stage"), "{pp} × {micro_batches}: {err}");
    }
}
