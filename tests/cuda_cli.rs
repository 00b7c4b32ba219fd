//! `--device cuda` and `--device gpusim` from the CLI. This machine class (and CI) has
//! no GPU: the cuda tests check the driver-absent error; gpusim runs the same GPU
//! kernels on the CPU and is checked against the interpreter.

mod common;

use common::{expect_user_error, smelt, texts};
use std::path::Path;

fn driver_present() -> bool {
    smelt_runtime::cuda::driver_present()
}

/// A dataset directory for `smelt train examples/mlp.smelt` (x.npy, labels.npy).
fn mlp_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("examples/data/mlp_x.npy", dir.join("x.npy")).unwrap();
    std::fs::copy("examples/data/mlp_labels.npy", dir.join("labels.npy")).unwrap();
}

const MLP_INPUTS: [&str; 4] = [
    "--input",
    "x=examples/data/mlp_x.npy",
    "--input",
    "labels=examples/data/mlp_labels.npy",
];

fn assert_no_driver_error(args: &[&str]) {
    let err = expect_user_error(&smelt(args));
    assert!(
        err.starts_with("error: no CUDA driver found"),
        "smelt {args:?} printed:\n{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line, no panic:\n{err}"
    );
}

#[test]
fn run_on_cuda_without_a_driver_is_one_error_line_and_exit_2() {
    if driver_present() {
        eprintln!("skipped: a CUDA driver is present, so the driver-absent path cannot be tested");
        return;
    }
    let mut args = vec!["run", "examples/mlp.smelt", "--device", "cuda"];
    args.extend(MLP_INPUTS);
    assert_no_driver_error(&args);
}

#[test]
fn train_on_cuda_without_a_driver_is_one_error_line_and_exit_2() {
    if driver_present() {
        eprintln!("skipped: a CUDA driver is present, so the driver-absent path cannot be tested");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mlp_data(&data);
    assert_no_driver_error(&[
        "train",
        "examples/mlp.smelt",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "2",
        "--device",
        "cuda",
        "--target",
        "h800",
    ]);
}

#[test]
fn gpu_options_are_checked_before_the_gpu_is_opened() {
    let mut args = vec![
        "run",
        "examples/mlp.smelt",
        "--device",
        "gpusim",
        "--comm-sms",
        "3",
    ];
    args.extend(MLP_INPUTS);
    let err = expect_user_error(&smelt(&args));
    assert!(err.contains("--comm-sms must be even"), "{err}");
}

#[test]
fn gpusim_runs_the_gpu_kernels_to_the_interpreters_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for device in ["interp", "gpusim"] {
        let out_dir = dir.path().join(device);
        let mut args = vec![
            "run",
            "examples/mlp.smelt",
            "--device",
            device,
            "--output-dir",
            out_dir.to_str().unwrap(),
        ];
        args.extend(MLP_INPUTS);
        let out = smelt(&args);
        let (stdout, stderr) = texts(&out);
        assert!(out.status.success(), "{device}: {stderr}");
        assert!(stdout.contains("logits: f32[4, 10]"), "{stdout}");
        let logits = smelt_runtime::io::read_npy(&out_dir.join("logits.npy")).unwrap();
        outputs.push(logits);
    }
    let (want, got) = (&outputs[0], &outputs[1]);
    assert_eq!(want.shape, got.shape);
    for i in 0..want.numel() {
        let (a, b) = (want.data.get_f64(i), got.data.get_f64(i));
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
            "logit {i}: {a} vs {b}"
        );
    }
}

fn logged_losses(log: &Path) -> Vec<f64> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| {
            let rest = l.split("\"loss\":").nth(1).unwrap();
            rest.split([',', '}']).next().unwrap().parse().unwrap()
        })
        .collect()
}

#[test]
fn training_on_gpusim_follows_the_cpu_losses() {
    // The whole device path of `train`: parameters and optimiser state up, the step's
    // kernels, updates back; two steps, so the second uses the first's updates.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mlp_data(&data);
    let mut losses = Vec::new();
    for device in ["cpu", "gpusim"] {
        let log = dir.path().join(format!("{device}.jsonl"));
        let out = smelt(&[
            "train",
            "examples/mlp.smelt",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "2",
            "--batch",
            "2",
            "--log",
            log.to_str().unwrap(),
            "--device",
            device,
        ]);
        assert!(out.status.success(), "{device}: {}", texts(&out).1);
        losses.push(logged_losses(&log));
    }
    assert_eq!(losses[0].len(), 2);
    assert_ne!(
        losses[0][0], losses[0][1],
        "the first step changed the parameters"
    );
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "cpu {a} vs gpusim {b}");
    }
}

/// `gpu-check --size` is bounded before anything runs (no GPU needed to see it).
#[test]
fn gpu_check_refuses_a_size_out_of_range() {
    for size in ["0", "100000"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smelt"))
            .args(["gpu-check", "--size", size])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--size {size}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not between 1 and 32768"), "{err}");
    }
}
