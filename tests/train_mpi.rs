//! Data-parallel training across processes on MPI, as users run it:
//! `mpirun -np N smelt train MODEL --dp N`. Every step's loss and the final parameters
//! match a single process on the same global batches; a world whose size disagrees
//! with `--dp` is refused; a rank that dies ends the run instead of hanging it.
//!
//! Needs the `mpi` feature and Open MPI's `mpirun` (`.ci/run` installs Debian's
//! openmpi-bin and libopenmpi-dev and runs `cargo test --features mpi --test train_mpi`).
#![cfg(feature = "mpi")]

mod common;

use common::{cache_dir, texts};
use smelt_runtime::train::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun`, or `None` (a failure under `CI`, where `.ci/run` installs it).
fn mpirun() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("mpirun"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
    }
    found
}

/// `mpirun -np ranks smelt args…` (as root in CI containers, more ranks than cores).
fn mpi_command(mpirun: &Path, ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new(mpirun);
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SMELT_CACHE_DIR", cache_dir());
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().expect("the command starts");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{c:?} failed:\n{stdout}\n{stderr}");
    out
}

/// The arguments of a small GPT on the example text, trained by SGD: AdamW would turn
/// the rounding noise in gradients that are exactly zero in exact arithmetic (the key
/// bias, which softmax cancels) into full-size steps, so those parameters would differ
/// by about the learning rate between any two summation orders, one process or many.
const GPT: [&str; 14] = [
    "examples/gpt.smelt",
    "--data",
    "examples/data/genesis.txt",
    "--set",
    "d_model=64",
    "--set",
    "head_dim=16",
    "--set",
    "layers=1",
    "--optimizer",
    "sgd",
    "--lr",
    "0.1",
    "--set",
];
const GPT_LAST: &str = "d_mlp=128";

fn gpt() -> Vec<String> {
    GPT.iter()
        .chain([&GPT_LAST])
        .map(ToString::to_string)
        .collect()
}

/// A training run of `model_args` (the model file, its data and settings) with a
/// global batch of 8, logging to `dir/log.jsonl` and checkpointing into `dir`.
fn train_args(model_args: &[String], dir: &Path, steps: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let mut args: Vec<String> = vec!["train".into()];
    args.extend(model_args.iter().cloned());
    args.extend(["--batch", "8"].map(String::from));
    args.extend(["--steps".into(), steps.to_string()]);
    args.extend(["--checkpoint".into(), dir.display().to_string()]);
    args.extend(["--log".into(), dir.join("log.jsonl").display().to_string()]);
    args
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["loss"].as_f64().unwrap()
        })
        .collect()
}

/// Trains `model` for 20 steps in one process and on `ranks` MPI processes with the
/// same global batch: losses and final parameters agree within 1e-5 relative (f32
/// sums in another order, compounded over 20 AdamW steps).
fn matches_one_process(model: &[String], ranks: usize) {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (single, parallel) = (tmp.path().join("single"), tmp.path().join("parallel"));
    let model_name = &model[0];
    let args = train_args(model, &single, 20);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run({
        let mut c = Command::new(env!("CARGO_BIN_EXE_smelt"));
        c.args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SMELT_CACHE_DIR", cache_dir());
        c
    });
    let dp = ranks.to_string();
    let mut args = train_args(model, &parallel, 20);
    args.extend(["--dp".to_string(), dp]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(mpi_command(&mpirun, ranks, &args));

    let (want, got) = (losses(&single), losses(&parallel));
    assert_eq!(got.len(), 20, "rank 0 logs every step once");
    // Each step's log line says how its gradient sums went.
    for line in std::fs::read_to_string(parallel.join("log.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let hidden = v["comm_hidden"].as_f64().expect("comm_hidden is logged");
        assert!((0.0..=1.0).contains(&hidden), "{line}");
        assert!(v["comm_seconds"].as_f64().expect("comm_seconds is logged") > 0.0);
    }
    for (step, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "{model_name}, {ranks} ranks, step {}: loss {a}, one process {b}",
            step + 1
        );
    }
    assert!(want[19] < want[0], "the model learns: {want:?}");
    let (want, got) = (
        Checkpoint::load(&single).unwrap(),
        Checkpoint::load(&parallel).unwrap(),
    );
    assert_eq!(got.step, 20);
    assert_eq!(
        got.tensors.keys().collect::<Vec<_>>(),
        want.tensors.keys().collect::<Vec<_>>()
    );
    for (name, w) in &want.tensors {
        let (g, w) = (got.tensors[name].to_f64_vec(), w.to_f64_vec());
        let scale = w.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-3);
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{model_name}, {ranks} ranks: {name}[{i}] = {a}, one process {b}"
            );
        }
    }
}

#[test]
fn gpt_on_two_ranks_trains_as_one_process() {
    matches_one_process(&gpt(), 2);
}

#[test]
fn gpt_on_four_ranks_trains_as_one_process() {
    matches_one_process(&gpt(), 4);
}

#[test]
fn moe_on_two_ranks_trains_as_one_process() {
    // Random tokens and targets (64 rows of 32 features) as .npy files.
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = common::Rng(11);
    for name in ["x", "target"] {
        let v: Vec<f32> = (0..64 * 32).map(|_| rng.normal() as f32).collect();
        common::write_f32_npy(&tmp.path().join(format!("{name}.npy")), &[64, 32], &v);
    }
    let model: Vec<String> = [
        "examples/moe.smelt",
        "--data",
        &tmp.path().display().to_string(),
        "--set",
        "d=32",
        "--set",
        "d_ff=64",
        "--lr",
        "3e-3",
    ]
    .map(String::from)
    .to_vec();
    matches_one_process(&model, 2);
}

#[test]
fn a_run_checkpointed_on_two_ranks_resumes_in_one_process() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (straight, split) = (tmp.path().join("straight"), tmp.path().join("split"));
    let single = |args: &[String]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_smelt"));
        c.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SMELT_CACHE_DIR", cache_dir());
        run(c)
    };
    single(&train_args(&gpt(), &straight, 12));
    let mut first = train_args(&gpt(), &split, 6);
    first.extend(["--dp", "2"].map(String::from));
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    run(mpi_command(&mpirun, 2, &first));
    let mut rest = train_args(&gpt(), &split, 12);
    rest.extend(["--resume".to_string(), split.display().to_string()]);
    single(&rest);
    let (want, got) = (losses(&straight), losses(&split));
    assert_eq!(got.len(), 12, "6 steps on two ranks, then 6 in one process");
    for (step, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "step {}: loss {a}, one process throughout {b}",
            step + 1
        );
    }
}

#[test]
fn a_world_that_disagrees_with_dp_is_refused() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let args = train_args(&gpt(), tmp.path(), 2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = mpi_command(&mpirun, 2, &args).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        (stdout.clone() + &stderr).contains("mpirun started 2 processes but --dp is 1"),
        "{stdout}\n{stderr}"
    );
    assert!(
        !tmp.path().join("log.jsonl").exists(),
        "no rank trained alone"
    );
}

#[test]
fn ranks_started_with_different_settings_are_refused() {
    let Some(mpirun) = mpirun() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let smelt = env!("CARGO_BIN_EXE_smelt");
    let mut rank0 = train_args(&gpt(), &tmp.path().join("a"), 2);
    rank0.extend(["--dp", "2"].map(String::from));
    let mut rank1 = rank0.clone();
    rank1.extend(["--seed", "1"].map(String::from));
    // Open MPI's MPMD form: one command per rank, separated by `:`.
    let out = Command::new(mpirun)
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "1", smelt])
        .args(&rank0)
        .args([":", "-np", "1", smelt])
        .args(&rank1)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SMELT_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("different models or settings"),
        "{stdout}\n{stderr}"
    );
    assert!(!tmp.path().join("a/log.jsonl").exists(), "no step ran");
}

/// Starts a long two-rank run, sends rank 1 `signal` once rank 0 has logged a step,
/// and returns what the run printed once it ended (it must end within 60 s, failing).
fn signal_rank_1_mid_run(mpirun: &Path, signal: &str, extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let args = train_args(&gpt(), tmp.path(), 100_000);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--dp", "2", "--checkpoint-every", "100000"]);
    args.extend(extra);
    let mut child = mpi_command(mpirun, 2, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once rank 0 has logged a step, both ranks are inside the training loop.
    let log = tmp.path().join("log.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log).is_ok_and(|l| !l.is_empty()) {
        assert!(Instant::now() < deadline, "no step was logged in 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rank1 = smelt_pid_of_rank(child.id(), 1).expect("rank 1's process");
    let sent = Command::new("kill")
        .args([signal, &rank1.to_string()])
        .status();
    assert!(sent.unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            Command::new("kill")
                .args(["-9", &rank1.to_string()])
                .status()
                .ok();
            panic!("the run went on for 60 s after rank 1 got {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(!status.success(), "{stdout}\n{stderr}");
    stdout + &stderr
}

#[test]
fn a_rank_that_dies_ends_the_run() {
    let Some(mpirun) = mpirun() else { return };
    let out = signal_rank_1_mid_run(&mpirun, "-KILL", &[]);
    assert!(
        out.contains("rank 1"),
        "the launcher names the lost rank:\n{out}"
    );
}

#[test]
fn a_rank_that_hangs_stops_the_run_after_the_comm_timeout() {
    let Some(mpirun) = mpirun() else { return };
    // A stopped process neither answers nor exits: only the timeout can end the run.
    let out = signal_rank_1_mid_run(&mpirun, "-STOP", &["--comm-timeout", "3"]);
    assert!(
        out.contains("rank 0: the other ranks did not answer within 3s (--comm-timeout)"),
        "{out}"
    );
}

/// The pid of the smelt process of MPI rank `rank` under the launcher `launcher`:
/// Open MPI gives every rank `OMPI_COMM_WORLD_RANK` in its environment.
fn smelt_pid_of_rank(launcher: u32, rank: usize) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    let descendants = |root: u32| -> Vec<u32> {
        let mut found = vec![root];
        let mut i = 0;
        while i < found.len() {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", found[i]))
                    .unwrap_or_default();
            found.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
            i += 1;
        }
        found
    };
    descendants(launcher).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == wanted.as_bytes()))
    })
}
