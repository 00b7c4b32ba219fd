//! `smelt train` end to end: learning a separable task, determinism, exact resume,
//! checkpoints that survive a failed write, and clear errors for bad data.

mod common;

use common::{expect_user_error, smelt, texts, write_f32_npy, write_i32_npy, Rng};
use std::path::Path;

/// Ten Gaussian classes in 784 dimensions, well separated: `rows` samples written as
/// `x.npy` and `labels.npy` into `dir`.
fn separable_task(dir: &Path, rows: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut means = Rng(1234);
    let centres: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..784).map(|_| means.normal() as f32 * 0.2).collect())
        .collect();
    let mut rng = Rng(seed);
    let mut x = Vec::with_capacity(rows * 784);
    let mut labels = Vec::with_capacity(rows);
    for r in 0..rows {
        let c = (r * 7 + (rng.next_f64() * 3.0) as usize) % 10;
        labels.push(c as i32);
        x.extend(centres[c].iter().map(|&m| m + rng.normal() as f32 * 0.5));
    }
    write_f32_npy(&dir.join("x.npy"), &[rows as u64, 784], &x);
    write_i32_npy(&dir.join("labels.npy"), &[rows as u64], &labels);
}

fn ok(args: &[&str]) -> String {
    let out = smelt(args);
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "smelt {args:?} failed:\n{stderr}");
    stdout + &stderr
}

fn losses(log: &Path) -> Vec<(usize, f64)> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let field = |k: &str| {
                l.split(&format!("\"{k}\":"))
                    .nth(1)
                    .unwrap()
                    .split([',', '}'])
                    .next()
                    .unwrap()
                    .to_string()
            };
            (
                field("step").parse().unwrap(),
                field("loss").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn mlp_learns_a_separable_task_to_over_95_percent() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    separable_task(&train, 512, 1);
    separable_task(&test, 200, 2);
    let ck = dir.path().join("ck");
    let log = dir.path().join("log.jsonl");
    ok(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        train.to_str().unwrap(),
        "--steps",
        "40",
        "--batch",
        "32",
        "--lr",
        "2e-3",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--log",
        log.to_str().unwrap(),
    ]);
    let l = losses(&log);
    assert_eq!(l.len(), 40);
    assert!(
        l[39].1 < l[0].1 * 0.5,
        "the loss falls: {:?} -> {:?}",
        l[0],
        l[39]
    );
    let out = dir.path().join("out");
    let x = format!("x={}", test.join("x.npy").display());
    let y = format!("labels={}", test.join("labels.npy").display());
    ok(&[
        "run",
        "examples/mlp.smelt",
        "--input",
        &x,
        "--input",
        &y,
        "--weights",
        ck.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let (_, logits) = common::read_f32_npy(&out.join("logits.npy"));
    let labels: Vec<i32> = {
        let bytes = std::fs::read(test.join("labels.npy")).unwrap();
        npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap()
    };
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            let row = &logits[i * 10..(i + 1) * 10];
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best as i32 == l
        })
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(accuracy > 0.95, "held-out accuracy {accuracy}");
}

#[test]
fn same_seed_same_losses_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    separable_task(&data, 128, 3);
    let d = data.to_str().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // A constant rate: a schedule depends on --steps, which the interrupted run below changes.
    let base = [
        "train",
        "examples/mlp.smelt",
        "--data",
        d,
        "--batch",
        "16",
        "--lr",
        "0.002",
        "--seed",
        "9",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        ok(&a)
    };
    run(&["--steps", "12", "--log", &path("a.jsonl")]);
    run(&["--steps", "12", "--log", &path("b.jsonl")]);
    assert_eq!(
        losses(&dir.path().join("a.jsonl")),
        losses(&dir.path().join("b.jsonl")),
        "same seed, same losses"
    );

    // Take the step-6 state by stopping a run there, then resume it to step 12.
    run(&["--steps", "6", "--checkpoint", &path("half")]);
    run(&[
        "--steps",
        "12",
        "--resume",
        &path("half"),
        "--log",
        &path("d.jsonl"),
    ]);
    let straight = losses(&dir.path().join("a.jsonl"));
    let resumed = losses(&dir.path().join("d.jsonl"));
    assert_eq!(resumed.first().map(|r| r.0), Some(7));
    assert_eq!(
        resumed[..],
        straight[6..],
        "6 steps + resume + 6 steps = 12 steps straight"
    );
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    separable_task(&data, 64, 4);
    let ck = dir.path().join("ck");
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "50",
        "--batch",
        "16",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--checkpoint-every",
        "1",
    ]));
    assert!(
        err.contains("the loss is") && err.contains("stopping"),
        "{err}"
    );
    let last = err
        .lines()
        .find(|l| l.starts_with("error: step "))
        .unwrap_or_else(|| panic!("{err}"));
    let failed_at: usize = last["error: step ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ckpt = smelt_runtime_checkpoint_step(&ck);
    assert_eq!(
        ckpt,
        failed_at - 1,
        "the checkpoint holds the last finite step"
    );
}

fn smelt_runtime_checkpoint_step(dir: &Path) -> usize {
    let bytes = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    meta.metadata().as_ref().unwrap()["smelt.step"]
        .parse()
        .unwrap()
}

#[test]
fn bad_data_is_reported_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        "nope.txt",
        "--steps",
        "1",
    ]));
    assert!(err.contains("nope.txt: cannot read"), "{err}");
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    write_f32_npy(&bad.join("x.npy"), &[4, 783], &[0.5; 4 * 783]);
    write_i32_npy(&bad.join("labels.npy"), &[4], &[1, 2, 3, 4]);
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        bad.to_str().unwrap(),
        "--steps",
        "1",
    ]));
    assert!(
        err.contains("data 'x' is f32[4, 783], but input %x expects f32[rows, 784]"),
        "{err}"
    );
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        "examples/data/genesis.txt",
        "--steps",
        "1",
    ]));
    assert!(err.contains("text data feeds one integer input"), "{err}");
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        "examples/data/genesis.txt",
        "--lr=-1",
    ]));
    assert!(err.contains("--lr must be a positive number"), "{err}");
}

/// Trains `examples/gpt.smelt` on Genesis, batch 2, for `steps` steps with `flags`,
/// logging to `log`; returns the losses.
fn train_gpt(log: &Path, steps: usize, flags: &[&str]) -> Vec<(usize, f64)> {
    let steps = steps.to_string();
    let mut args = vec![
        "train",
        "examples/gpt.smelt",
        "--data",
        "examples/data/genesis.txt",
        "--steps",
        &steps,
        "--batch",
        "2",
        "--log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    ok(&args);
    losses(log)
}

/// Trains a narrow GPT (fast in the debug profile; README's command trains the full
/// one) for 6 steps with `extra` flags, checkpointing to `ck`; returns the losses.
fn train_small_gpt(dir: &Path, ck: &Path, extra: &[&str]) -> Vec<(usize, f64)> {
    let log = dir.join(format!("log{}.jsonl", extra.len()));
    let mut flags = vec![
        "--set",
        "d_model=64",
        "--set",
        "head_dim=16",
        "--set",
        "d_mlp=128",
        "--set",
        "layers=1",
        "--lr",
        "3e-3",
        "--checkpoint",
        ck.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    train_gpt(&log, 6, &flags)
}

#[test]
fn gpt_trains_the_same_with_and_without_the_e_graph_optimiser() {
    // The optimised program runs fused attention and its gradients; the plain one, the
    // decomposition autodiff makes of the hand-written attention. Same data and seed:
    // the losses agree to f32 rounding, compounded over 6 AdamW steps.
    let dir = tempfile::tempdir().unwrap();
    let optimised = train_small_gpt(dir.path(), &dir.path().join("a"), &[]);
    let plain = train_small_gpt(dir.path(), &dir.path().join("b"), &["--no-optimize"]);
    assert_eq!(optimised.len(), plain.len());
    for ((step, a), (_, b)) in optimised.iter().zip(&plain) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "step {step}: loss {a} optimised, {b} as written"
        );
    }
}

#[test]
fn gpt_trains_on_text_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let l = train_small_gpt(dir.path(), &ck, &[]);
    assert!(
        (l[0].1 - 512f64.ln()).abs() < 0.5,
        "initial loss {} is near ln 512",
        l[0].1
    );
    assert!(l[5].1 < l[0].1, "the loss falls: {l:?}");
    let out = ok(&[
        "generate",
        ck.to_str().unwrap(),
        "--prompt",
        "In the",
        "--tokens",
        "20",
        "--seed",
        "1",
    ]);
    assert!(out.starts_with("In the") && out.len() >= 26, "{out:?}");
}

#[test]
fn data_parallel_outside_an_mpi_world_is_a_user_error() {
    // Without mpirun (or without the `mpi` feature) there is no world of two ranks.
    let err = expect_user_error(&smelt(&[
        "train",
        "examples/gpt.smelt",
        "--data",
        "examples/data/genesis.txt",
        "--dp",
        "2",
    ]));
    assert!(
        err.contains("--dp 2") && (err.contains("mpirun -np 2") || err.contains("without it")),
        "{err}"
    );
}

/// A smelt without MPI that an MPI launcher started several times refuses to train:
/// each copy would train alone and overwrite the others' log and checkpoints.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_launched_world_without_mpi_is_refused() {
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        let train = [
            "train",
            "examples/gpt.smelt",
            "--data",
            "examples/data/genesis.txt",
        ];
        let err = expect_user_error(&common::smelt_with_env(&train, &[(var, "2")]));
        assert!(
            err.contains("one of 2") && err.contains("without MPI"),
            "{err}"
        );
    }
}

/// A deep model's training step is optimised in windows, the repeated layers' windows
/// reusing one optimisation (`--explain` says so); it trains as the step optimised in
/// one e-graph does (`--opt-window 0`), to f32 rounding over 3 AdamW steps.
#[test]
fn a_deep_gpt_optimised_in_windows_trains_as_one_egraph_does() {
    let narrow_deep = [
        "--set",
        "d_model=16",
        "--set",
        "heads=2",
        "--set",
        "head_dim=8",
        "--set",
        "d_mlp=32",
        "--set",
        "layers=64",
    ];
    let mut explain = vec![
        "dump-ir",
        "examples/gpt.smelt",
        "--train",
        "--stage",
        "optimized",
        "--explain",
    ];
    explain.extend_from_slice(&narrow_deep);
    let said = ok(&explain);
    // The second report is the training step's.
    let step = said.lines().filter(|l| l.starts_with("e-graph:")).nth(1);
    assert!(
        step.is_some_and(|l| l.contains("windows (") && !l.contains("(0 reused)")),
        "{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| {
        let flags = [&narrow_deep[..], extra].concat();
        train_gpt(&dir.path().join(name), 3, &flags)
    };
    let windowed = train("windowed.jsonl", &[]);
    let whole = train("whole.jsonl", &["--opt-window", "0"]);
    assert_eq!(windowed.len(), 3);
    for ((step, a), (_, b)) in windowed.iter().zip(&whole) {
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1.0),
            "step {step}: loss {a} windowed, {b} in one e-graph"
        );
    }
}
