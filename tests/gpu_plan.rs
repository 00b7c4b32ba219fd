//! `smelt dump-ir --stage scheduled --target h800`: the SM plan in text, JSON and as a
//! Chrome trace, and the checks on `--comm-sms`.

mod common;

use common::{expect_user_error, smelt, texts};

/// `dump-ir MODEL --stage scheduled --target h800 --format json` with `args` (the model
/// and its flags): the plan, and the text it was read from.
fn h800_plan(args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["dump-ir", "--stage", "scheduled", "--target", "h800"];
    all.extend_from_slice(&["--format", "json"]);
    all.extend_from_slice(args);
    let out = smelt(&all);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_str(&stdout).unwrap(), stdout)
}

/// The GPT training step's plan at B = 8, with `extra` flags.
fn plan_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["examples/gpt.smelt", "--train", "--bind", "B=8"];
    args.extend_from_slice(extra);
    h800_plan(&args).0
}

#[test]
fn json_lists_every_launch_with_its_sm_budget() {
    let plan = plan_json(&[]);
    assert_eq!(plan["sms"], 132);
    assert_eq!(plan["comm_sms"], 20);
    let launches = plan["launches"].as_array().unwrap();
    assert!(
        launches.len() > 100,
        "a GPT training step has hundreds of kernels"
    );
    for l in launches {
        for field in [
            "name",
            "role",
            "stream",
            "grid",
            "block",
            "shared_bytes",
            "sm_budget",
        ] {
            assert!(!l[field].is_null(), "{field} missing in {l}");
        }
        assert_eq!(l["role"], "compute");
        assert_eq!(l["stream"], 0);
        assert_eq!(l["sm_budget"], 112);
        // Compute kernels never need more than the compute SMs' resident blocks.
        let grid = l["grid"][0].as_u64().unwrap();
        let block = l["block"][0].as_u64().unwrap();
        assert!(grid >= 1 && grid * block <= 112 * 2048, "{l}");
    }
    // A bigger reservation shrinks every compute kernel's budget.
    let plan = plan_json(&["--comm-sms", "32"]);
    assert!(plan["launches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["sm_budget"] == 100));
}

#[test]
fn text_and_trace_show_the_same_plan() {
    let base = [
        "dump-ir",
        "examples/mlp.smelt",
        "--stage",
        "scheduled",
        "--target",
        "h200",
        "--bind",
        "B=64",
    ];
    let out = smelt(&base);
    let (text, _) = texts(&out);
    assert!(
        text.starts_with(
            "plan for h200: 132 SMs, 112 compute on stream 0, 20 communication on stream 1"
        ),
        "{text}"
    );
    let launches = text
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .count();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let mut args = base.to_vec();
    args.extend(["--format", "trace", "-o", path.to_str().unwrap()]);
    let out = smelt(&args);
    assert!(out.status.success(), "{}", texts(&out).1);
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let spans: Vec<&serde_json::Value> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    assert_eq!(spans.len(), launches);
    for e in spans {
        for field in ["name", "ts", "dur", "pid", "tid", "cat"] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
        for arg in ["grid", "block", "shared_bytes", "sm_budget"] {
            assert!(!e["args"][arg].is_null(), "{arg} missing in {e}");
        }
    }
}

#[test]
fn comm_sms_must_be_even_and_leave_compute() {
    for (n, want) in [("7", "must be even"), ("132", "leaves no SM for compute")] {
        let out = smelt(&[
            "dump-ir",
            "examples/mlp.smelt",
            "--stage",
            "scheduled",
            "--target",
            "h800",
            "--comm-sms",
            n,
        ]);
        let err = expect_user_error(&out);
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn moe_all_to_all_runs_on_the_reserved_sms_and_overlaps_compute() {
    let plan = |extra: &[&str]| {
        let mut args = vec!["examples/moe.smelt", "--bind", "N=4096"];
        args.extend_from_slice(extra);
        h800_plan(&args)
    };
    let comm_launches = |plan: &serde_json::Value| {
        plan["launches"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["role"] == "comm")
            .count()
    };
    // As written: a dispatch and a combine for each of the 8 routed experts. The
    // e-graph shares the 8 dispatches of the same tokens: one dispatch, 8 combines.
    let (written, stdout) = plan(&["--no-optimize"]);
    assert_eq!(comm_launches(&written), 16, "{stdout}");
    let (plan, stdout) = plan(&[]);
    let launches = plan["launches"].as_array().unwrap();
    let comm: Vec<&serde_json::Value> = launches.iter().filter(|l| l["role"] == "comm").collect();
    assert_eq!(comm.len(), 9, "{stdout}");
    for l in &comm {
        assert_eq!(l["stream"], 1);
        assert_eq!(l["grid"][0], 20, "exactly one block per reserved SM");
        assert_eq!(l["sm_budget"], 20);
    }
    // Compute kernels that read a combine's result wait for its event.
    let waiting = launches
        .iter()
        .filter(|l| l["role"] == "compute" && !l["waits_for"].as_array().unwrap().is_empty())
        .count();
    assert!(waiting >= 8, "{stdout}");
    // Some communication runs while stream 0 computes.
    let span = |l: &serde_json::Value| {
        let s = l["start_us"].as_f64().unwrap();
        (s, s + l["duration_us"].as_f64().unwrap())
    };
    let overlapping = comm
        .iter()
        .filter(|c| {
            let (a, b) = span(c);
            launches
                .iter()
                .filter(|l| l["role"] == "compute")
                .any(|l| span(l).0 < b && a < span(l).1)
        })
        .count();
    assert!(
        overlapping > 0,
        "no communication overlaps compute:\n{stdout}"
    );
}

#[test]
fn compile_emits_a_ptx_module_and_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("ptx");
    let out = smelt(&[
        "compile",
        "examples/mlp.smelt",
        "--train",
        "--target",
        "h800",
        "--emit",
        "ptx",
        "--bind",
        "B=64",
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    let (_, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let ptx_file = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "ptx"))
        .expect("a .ptx file");
    let ptx = std::fs::read_to_string(ptx_file).unwrap();
    assert!(
        ptx.contains(".version 8.0") && ptx.contains(".target sm_90"),
        "{ptx}"
    );
    let plan_file = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".plan.json"))
        .expect("a plan");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan_file).unwrap()).unwrap();
    let launches = plan["launches"].as_array().unwrap();
    assert_eq!(ptx.matches(".visible .entry").count(), launches.len());
    if let Some(ptxas) = smelt_compiler::gpu::ptxas::find_for_test("compile --emit ptx") {
        let reports = smelt_compiler::gpu::ptxas::assemble(&ptxas, &ptx, "sm_90").unwrap();
        assert_eq!(reports.len(), launches.len());
    }
}

#[test]
fn compile_for_a_gpu_needs_emit_ptx() {
    let out = smelt(&[
        "compile",
        "examples/mlp.smelt",
        "--target",
        "h100",
        "-o",
        "x",
    ]);
    let err = expect_user_error(&out);
    assert!(err.contains("--emit ptx"), "{err}");
    let out = smelt(&["compile", "examples/mlp.smelt", "--emit", "ptx", "-o", "x"]);
    let err = expect_user_error(&out);
    assert!(err.contains("needs a GPU target"), "{err}");
}
