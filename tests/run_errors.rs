//! Bad input to `smelt run`: each gets one clear message, exit code 2, no panic.

mod common;

use common::{expect_user_error, smelt, write_f32_npy, write_i32_npy};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write_f32_npy(&p.join("x.npy"), &[2, 784], &vec![0.5; 2 * 784]);
        write_f32_npy(&p.join("x_bad.npy"), &[2, 783], &vec![0.5; 2 * 783]);
        write_i32_npy(&p.join("labels.npy"), &[2], &[1, 2]);
        write_i32_npy(&p.join("labels3.npy"), &[3], &[1, 2, 3]);
        std::fs::write(p.join("junk.npy"), b"definitely not numpy").unwrap();
        Files { dir }
    }

    fn arg(&self, name: &str, file: &str) -> String {
        format!("{name}={}", self.dir.path().join(file).display())
    }
}

fn run_mlp(extra: &[&str]) -> String {
    let mut args = vec!["run", "examples/mlp.sir"];
    args.extend_from_slice(extra);
    expect_user_error(&smelt(&args))
}

#[test]
fn missing_input_points_at_its_declaration() {
    let f = Files::new();
    let err = run_mlp(&["--input", &f.arg("x", "x.npy")]);
    assert!(
        err.starts_with("examples/mlp.sir:6:3: error: missing value for input '%labels' (i32[B])"),
        "{err}"
    );
}

#[test]
fn misshaped_input_names_both_types_and_the_file() {
    let f = Files::new();
    let err = run_mlp(&[
        "--input",
        &f.arg("x", "x_bad.npy"),
        "--input",
        &f.arg("labels", "labels.npy"),
    ]);
    assert!(err.starts_with("examples/mlp.sir:5:3: error: '%x' expects f32[B, 784], but the given tensor is f32[2, 783]"), "{err}");
    assert!(err.contains("x_bad.npy"), "{err}");
}

#[test]
fn wrong_dtype_is_reported() {
    let f = Files::new();
    let err = run_mlp(&[
        "--input",
        &f.arg("x", "x.npy"),
        "--input",
        &f.arg("labels", "x.npy"),
    ]);
    assert!(
        err.contains("'%labels' expects i32[B], but the given tensor is f32[2, 784]"),
        "{err}"
    );
}

#[test]
fn conflicting_symbolic_dims_are_reported() {
    let f = Files::new();
    let err = run_mlp(&[
        "--input",
        &f.arg("x", "x.npy"),
        "--input",
        &f.arg("labels", "labels3.npy"),
    ]);
    assert!(err.contains("(B is already 2 from another input)"), "{err}");
}

#[test]
fn unknown_input_name_lists_the_inputs() {
    let f = Files::new();
    let err = run_mlp(&["--input", &f.arg("images", "x.npy")]);
    assert!(
        err.contains("the model has no input or parameter 'images' (inputs: x, labels)"),
        "{err}"
    );
}

#[test]
fn input_without_equals_sign() {
    let err = run_mlp(&["--input", "x.npy"]);
    assert!(
        err.starts_with("error: --input expects NAME=FILE, found 'x.npy'"),
        "{err}"
    );
}

#[test]
fn missing_and_corrupt_files() {
    let f = Files::new();
    let err = run_mlp(&["--input", &f.arg("x", "nope.npy")]);
    assert!(
        err.contains("nope.npy: error:") && err.contains("No such file"),
        "{err}"
    );
    let err = run_mlp(&["--input", &f.arg("x", "junk.npy")]);
    assert!(
        err.contains("junk.npy: error: not a valid .npy file"),
        "{err}"
    );
}

#[test]
fn missing_model_file_and_unknown_extension() {
    let err = expect_user_error(&smelt(&["dump-ir", "examples/nope.sir"]));
    assert!(
        err.starts_with("examples/nope.sir: error: cannot read: "),
        "{err}"
    );
    let err = expect_user_error(&smelt(&["dump-ir", "README.md"]));
    assert!(err.contains("unknown model file type"), "{err}");
}

#[test]
fn bad_flags_exit_with_code_2() {
    let err = expect_user_error(&smelt(&["run", "examples/mlp.sir", "--device", "tpu"]));
    assert!(err.contains("invalid value 'tpu'"), "{err}");
    let err = expect_user_error(&smelt(&["dump-ir", "examples/mlp.sir", "--format", "xml"]));
    assert!(err.contains("invalid value 'xml'"), "{err}");
}
