//! The smelt CLI on .smelt models: dump-ir and run work, `--set` overrides configs,
//! and user errors exit with code 2 and a FILE:LINE:COL diagnostic.

use smelt_compiler::ir::DType;
use smelt_runtime::io::write_safetensors;
use smelt_runtime::Tensor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn smelt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smelt"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("smelt runs")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smelt-lang-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn dump_ir_prints_the_gpt_graph_and_honours_set() {
    let o = smelt(&["dump-ir", "examples/gpt.smelt"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("param %layers.1.wqkv: f32[256, 768]"));
    assert!(!text.contains("layers.2."));
    let o = smelt(&["dump-ir", "examples/gpt.smelt", "--set", "layers=3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("param %layers.2.wqkv"));
}

#[test]
fn run_executes_the_mlp_on_given_inputs() {
    let dir = temp_dir("run");
    let x: Vec<f64> = (0..2 * 784)
        .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
        .collect();
    // Inputs travel in one safetensors file (this branch's .npy reader predates the
    // fix for npyz's quoted dtype descriptions).
    let inputs = dir.join("inputs.safetensors");
    let tensors = [
        (
            "x".to_string(),
            Tensor::from_f64(DType::F32, vec![2, 784], x),
        ),
        (
            "labels".to_string(),
            Tensor::from_i64(DType::I32, vec![2], vec![3, 7]),
        ),
    ];
    write_safetensors(&inputs, &tensors).unwrap();
    let arg = |n: &str| format!("{n}={}", inputs.display());
    let out = dir.join("out");
    let o = smelt(&[
        "run",
        "examples/mlp.smelt",
        "--input",
        &arg("x"),
        "--input",
        &arg("labels"),
        "--set",
        "hidden=64",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("loss: f32[] = "), "{stdout}");
    assert!(Path::new(&out.join("logits.npy")).exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn user_errors_exit_with_code_2_and_a_located_diagnostic() {
    let dir = temp_dir("errors");
    let cases = [
        (
            "shape.smelt",
            "input x: f32[B, 4]\nparam w: f32[5, 2] = zeros\noutput y = x @ w\n",
            ":3:14: error: '@' contraction sizes differ",
        ),
        (
            "name.smelt",
            "input x: f32[2]\noutput y = relu(xx)\n",
            ":2:17: error: unknown name 'xx'",
        ),
        (
            "syntax.smelt",
            "input x f32[2]\n",
            ":1:9: error: expected ':'",
        ),
    ];
    for (file, src, want) in cases {
        let path = dir.join(file);
        std::fs::write(&path, src).unwrap();
        let o = smelt(&["dump-ir", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{file}");
        let err = stderr(&o);
        assert!(
            err.lines().next().unwrap_or("").contains(want),
            "{file}: {err}"
        );
        assert!(err.contains('^'), "{file}: {err}");
    }
    let o = smelt(&["dump-ir", "examples/mlp.smelt", "--set", "hiden=3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no config 'hiden'"), "{}", stderr(&o));
    let o = smelt(&["dump-ir", "examples/mlp.smelt", "--set", "hidden"]);
    assert_eq!(o.status.code(), Some(2));
    let o = smelt(&["dump-ir", "examples/mlp.sir", "--set", "hidden=3"]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}
