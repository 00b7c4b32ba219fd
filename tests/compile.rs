//! `smelt compile` and the compile cache end to end: an artefact runs and trains like
//! the model it came from, damaged or mismatched artefacts are refused clearly, and a
//! second run of the same model hits the cache while a changed model misses.

mod common;

use common::{
    expect_user_error, smelt, smelt_with_cache, texts, write_f32_npy, write_i32_npy, Rng,
};
use std::path::Path;

fn ok(out: std::process::Output) -> (String, String) {
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "smelt failed:\n{stderr}");
    (stdout, stderr)
}

/// `rows` random MLP samples as `x.npy` and `labels.npy` in `dir`.
fn mlp_data(dir: &Path, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(5);
    let x: Vec<f32> = (0..rows * 784).map(|_| rng.normal() as f32).collect();
    let labels: Vec<i32> = (0..rows).map(|_| (rng.next_f64() * 10.0) as i32).collect();
    write_f32_npy(&dir.join("x.npy"), &[rows as u64, 784], &x);
    write_i32_npy(&dir.join("labels.npy"), &[rows as u64], &labels);
}

#[test]
fn a_compiled_model_runs_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    mlp_data(dir.path(), 4);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let artefact = p("mlp.smeltc");
    ok(smelt(&[
        "compile",
        "examples/mlp.sir",
        "--target",
        "cpu",
        "-o",
        &artefact,
    ]));
    let inputs = [
        "--input",
        &format!("x={}", p("x.npy")),
        "--input",
        &format!("labels={}", p("labels.npy")),
    ];
    let run = |model: &str| {
        let mut a = vec!["run", model, "--seed", "4", "--no-cache"];
        a.extend_from_slice(&inputs);
        ok(smelt(&a)).0
    };
    let want = run("examples/mlp.sir");
    assert!(want.contains("loss"), "{want}");
    assert_eq!(run(&artefact), want);
}

#[test]
fn a_compiled_training_step_trains_like_the_model_and_shares_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mlp_data(&data, 32);
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let artefact = p("mlp-train.smeltc");
    ok(smelt(&[
        "compile",
        "examples/mlp.smelt",
        "--train",
        "--optimizer",
        "sgd",
        "-o",
        &artefact,
    ]));
    let train = |model: &str, extra: &[&str]| {
        let mut a = vec![
            "train",
            model,
            "--data",
            data.to_str().unwrap(),
            "--batch",
            "8",
            "--lr",
            "0.01",
            "--no-cache",
        ];
        a.extend_from_slice(extra);
        ok(smelt(&a));
    };
    train(&artefact, &["--steps", "4", "--log", &p("a.jsonl")]);
    train(
        "examples/mlp.smelt",
        &["--optimizer", "sgd", "--steps", "4", "--log", &p("b.jsonl")],
    );
    let log = |n: &str| std::fs::read_to_string(p(n)).unwrap();
    let losses = |n: &str| -> Vec<String> {
        log(n)
            .lines()
            .map(|l| l.split(",\"lr\"").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(losses("a.jsonl").len(), 4);
    assert_eq!(losses("a.jsonl"), losses("b.jsonl"));
    // A checkpoint of the artefact's run resumes from the model file, and back.
    train(&artefact, &["--steps", "2", "--checkpoint", &p("ck")]);
    train(
        "examples/mlp.smelt",
        &[
            "--optimizer",
            "sgd",
            "--steps",
            "4",
            "--resume",
            &p("ck"),
            "--log",
            &p("c.jsonl"),
        ],
    );
    assert_eq!(losses("c.jsonl"), losses("a.jsonl")[2..]);
}

#[test]
fn damaged_and_mismatched_artefacts_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    ok(smelt(&[
        "compile",
        "examples/mlp.sir",
        "-o",
        &p("run.smeltc"),
    ]));
    let bytes = std::fs::read(p("run.smeltc")).unwrap();
    std::fs::write(p("cut.smeltc"), &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let middle = bytes.len() * 3 / 4;
    flipped[middle] ^= 0x04;
    std::fs::write(p("flipped.smeltc"), &flipped).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["run", &p("cut.smeltc")], "truncated"),
        (
            &["run", &p("flipped.smeltc")],
            "content hash does not match",
        ),
        (
            &[
                "train",
                &p("run.smeltc"),
                "--data",
                "examples/data/genesis.txt",
            ],
            "without --train",
        ),
        (
            &["run", &p("run.smeltc"), "--set", "hidden=8"],
            "--set applies when compiling",
        ),
        (
            &["run", &p("run.smeltc"), "--device", "interp"],
            "runs on --device cpu",
        ),
        (&["run", &p("missing.smeltc")], "No such file"),
    ];
    for (args, want) in cases {
        let err = expect_user_error(&smelt(args));
        assert!(err.contains(want), "smelt {args:?}: {err}");
    }
    ok(smelt(&[
        "compile",
        "examples/mlp.smelt",
        "--train",
        "-o",
        &p("train.smeltc"),
    ]));
    let err = expect_user_error(&smelt(&["run", &p("train.smeltc")]));
    assert!(err.contains("use smelt train"), "{err}");
    let err = expect_user_error(&smelt(&[
        "train",
        &p("train.smeltc"),
        "--data",
        "examples/data/genesis.txt",
        "--optimizer",
        "sgd",
    ]));
    assert!(err.contains("the optimiser"), "{err}");
}

#[test]
fn a_second_run_hits_the_cache_and_a_changed_model_misses() {
    let dir = tempfile::tempdir().unwrap();
    mlp_data(dir.path(), 2);
    let cache = dir.path().join("cache");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (x, labels) = (
        format!("x={}", p("x.npy")),
        format!("labels={}", p("labels.npy")),
    );
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "examples/mlp.smelt",
            "--input",
            &x,
            "--input",
            &labels,
        ];
        a.extend_from_slice(extra);
        ok(smelt_with_cache(&a, &cache))
    };
    let (first, note) = run(&["--verbose"]);
    assert!(note.contains("compile cache: miss, stored"), "{note}");
    let (second, note) = run(&["--verbose"]);
    assert!(note.contains("compile cache: hit"), "{note}");
    assert_eq!(first, second);
    let entries = || std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries(), 1);
    let (_, note) = run(&["--verbose", "--set", "hidden=64"]);
    assert!(note.contains("miss"), "{note}");
    assert_eq!(entries(), 2);
    let (bypassed, note) = run(&["--verbose", "--no-cache"]);
    assert!(!note.contains("compile cache"), "{note}");
    assert_eq!(bypassed, first);
    assert_eq!(entries(), 2);
    // A cache that cannot be written is a warning; the run goes on.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let args = [
        "run",
        "examples/mlp.smelt",
        "--input",
        &x,
        "--input",
        &labels,
    ];
    let (out, note) = ok(smelt_with_cache(&args, &blocked));
    assert!(
        note.contains("warning: compile cache: miss, not stored"),
        "{note}"
    );
    assert_eq!(out, first);
}
