//! `smelt dump-ir`: canonical text that reads back to the same bytes, JSON that reads
//! back to the same graph, and snapshots of every example's IR.

mod common;

use common::{smelt, texts};

fn dump(args: &[&str]) -> String {
    let out = smelt(args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "smelt {args:?} failed:\n{stderr}");
    stdout
}

fn example_models() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sir") || n.ends_with(".smelt"))
        .collect();
    names.sort();
    names.into_iter().map(|n| format!("examples/{n}")).collect()
}

#[test]
fn text_dump_reads_back_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for model in example_models() {
        let first = dump(&["dump-ir", &model]);
        let path = dir.path().join("a.sir");
        std::fs::write(&path, &first).unwrap();
        let second = dump(&["dump-ir", path.to_str().unwrap()]);
        assert_eq!(first, second, "{model}: dump of the dump differs");
        assert_eq!(
            first,
            dump(&["dump-ir", &model]),
            "{model}: two dumps differ"
        );
    }
}

#[test]
fn json_dump_reads_back_to_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    for model in example_models() {
        let path = dir.path().join("g.json");
        dump(&[
            "dump-ir",
            &model,
            "--format",
            "json",
            "-o",
            path.to_str().unwrap(),
        ]);
        assert_eq!(
            dump(&["dump-ir", path.to_str().unwrap()]),
            dump(&["dump-ir", &model]),
            "{model}"
        );
    }
}

#[test]
fn example_ir_snapshots() {
    for model in example_models() {
        let name = model.trim_start_matches("examples/").replace('.', "_");
        insta::assert_snapshot!(name, dump(&["dump-ir", &model]));
    }
}

#[test]
fn help_shows_examples() {
    for cmd in [
        vec!["--help"],
        vec!["dump-ir", "--help"],
        vec!["run", "--help"],
    ] {
        let out = dump(&cmd);
        assert!(
            out.contains("Examples:"),
            "smelt {cmd:?} shows an example:\n{out}"
        );
    }
}

#[test]
fn training_step_dumps_read_back_and_show_updates() {
    let dir = tempfile::tempdir().unwrap();
    for model in example_models() {
        for args in [
            vec!["--stage", "grad"],
            vec![
                "--train",
                "--stage",
                "decomposed",
                "--optimizer",
                "sgd",
                "--momentum",
                "0.9",
            ],
        ] {
            let mut argv = vec!["dump-ir", model.as_str()];
            argv.extend(args.iter().copied());
            let first = dump(&argv);
            assert!(
                first.contains("  update %"),
                "{model} {args:?}: the step updates parameters"
            );
            assert!(
                first.contains("  input %lr: f32[]"),
                "{model}: the learning rate is an input"
            );
            let path = dir.path().join("step.sir");
            std::fs::write(&path, &first).unwrap();
            assert_eq!(
                dump(&["dump-ir", path.to_str().unwrap()]),
                first,
                "{model} {args:?}"
            );
        }
    }
    let grad = dump(&["dump-ir", "examples/mlp.smelt", "--stage", "grad"]);
    for name in [
        "%l1.w.grad",
        "%l1.w.m.next",
        "%l1.w.v.next",
        "update %l1.w = %l1.w.next",
    ] {
        assert!(grad.contains(name), "the AdamW step names {name}");
    }
}

#[test]
fn scheduled_stage_lists_kernels_and_memory() {
    let out = dump(&[
        "dump-ir",
        "examples/gpt.smelt",
        "--train",
        "--stage",
        "scheduled",
        "--bind",
        "B=8",
    ]);
    assert!(out.contains("fused pointwise kernels"), "{out}");
    assert!(out.contains("# memory: peak"), "{out}");
    assert!(out.contains(": kernel fused_"), "{out}");
    // The e-graph recognises the hand-written attention, so the backward pass runs the
    // fused attention gradients; without the optimiser it runs the decomposition.
    for step in [
        ": attention (",
        ": attention_grad_q (",
        ": attention_grad_k (",
    ] {
        assert!(out.contains(step), "{step} in\n{out}");
    }
    let plain = dump(&[
        "dump-ir",
        "examples/gpt.smelt",
        "--train",
        "--stage",
        "scheduled",
        "--no-optimize",
    ]);
    assert!(!plain.contains(": attention"), "{plain}");
    assert!(plain.contains(": kernel fused_"), "{plain}");
}

#[test]
fn scheduled_stage_shows_the_memory_plan_the_cpu_backend_runs() {
    let out = dump(&[
        "dump-ir",
        "examples/mlp.smelt",
        "--train",
        "--stage",
        "scheduled",
        "--bind",
        "B=32",
    ]);
    let summary = out
        .lines()
        .find(|l| l.starts_with("  # memory: peak"))
        .unwrap_or_else(|| panic!("{out}"));
    // Three layers' activations and gradients share fewer slots than there are
    // buffers, some steps overwrite a dead operand in place, and the updates escape.
    let count_before = |word: &str| -> usize {
        let head = &summary[..summary.find(word).unwrap_or_else(|| panic!("{summary}"))];
        let n = head.trim_end().rsplit([' ', '(']).next().unwrap();
        n.parse().unwrap_or_else(|_| panic!("{summary}"))
    };
    let (slots, buffers) = (count_before(" slots"), count_before(" buffers"));
    assert!(0 < slots && slots < buffers, "{summary}");
    assert!(count_before(" in place;") > 0, "{summary}");
    assert!(out.contains("  slot 0: f32["), "{out}");
    assert!(out.contains("in place of %"), "{out}");
    let escaping = out
        .lines()
        .find(|l| l.starts_with("  escaping (not slot-backed):"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        escaping.contains("%loss") && escaping.contains("%l1.w.next"),
        "{escaping}"
    );
}

#[test]
fn bench_harness_runs() {
    // Speed is measured by `smelt bench`, not asserted here; this only proves the
    // harness works end to end on the smallest workload.
    let out = dump(&[
        "bench",
        "--workload",
        "matmul",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--quiet-max",
        "0",
    ]);
    assert!(out.contains("| W3 matmul 1024³ |"), "{out}");
    assert!(out.contains("speed-up"), "{out}");
}

#[test]
fn bench_compile_workload_prints_a_row_of_stage_times_per_model_and_depth() {
    // Compile time is measured by `smelt bench --workload compile`, not asserted here;
    // this proves the workload compiles both models at each depth and prints every
    // stage's time.
    let out = dump(&["bench", "--workload", "compile", "--layers", "1,2"]);
    let header = "| model | layers | parse | decompose | e-graph | autodiff | e-graph (step) | schedule | JIT | total | × previous |";
    assert!(out.contains(header), "{out}");
    for (model, layers) in [("gpt", "1"), ("gpt", "2"), ("llama", "1"), ("llama", "2")] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {model} | {layers} |")))
            .unwrap_or_else(|| panic!("no row for {model} at {layers} layers:\n{out}"));
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        // Eight times, parse to total, each a number of milliseconds.
        assert_eq!(cells.len(), 11, "{row}");
        for cell in &cells[2..10] {
            let ms: f64 = cell.parse().unwrap_or_else(|_| panic!("{cell:?} in {row}"));
            assert!(ms >= 0.0, "{row}");
        }
        let growth = cells[10];
        assert_eq!(growth == "—", layers == "1", "{row}");
    }
}

#[test]
fn optimized_stage_prints_ir_that_reads_back_and_explains_to_stderr() {
    let args = [
        "dump-ir",
        "examples/gpt.smelt",
        "--set",
        "d_model=16",
        "--set",
        "d_mlp=32",
        "--set",
        "head_dim=4",
        "--train",
        "--stage",
        "optimized",
        "--explain",
        "--opt-iters",
        "4",
        "--opt-nodes",
        "20000",
        "--opt-time-ms",
        "5000",
    ];
    let out = smelt(&args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("rules fired:"), "{stderr}");
    assert!(
        stderr.contains("cost before:") && stderr.contains("cost after:"),
        "{stderr}"
    );
    assert!(stderr.contains("composite/recognise"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.sir");
    std::fs::write(&path, &stdout).unwrap();
    assert_eq!(dump(&["dump-ir", path.to_str().unwrap()]), stdout);
}
