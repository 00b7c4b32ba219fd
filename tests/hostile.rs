//! Hostile input and faults (issue 22): each numbered reproducer of the issue, through
//! the CLI. Bad input is an error with exit code 2 and a message that says what is
//! wrong; never a panic, an abort, a wrapped size or silently damaged data. The `.sir`
//! and `.smelt` reproducers with a position live in `tests/malformed/`.

mod common;

use common::{
    expect_user_error, onnx_value_info as value_info, smelt, texts, write_f32_npy, write_i32_npy,
};
use prost::Message;
use smelt_frontend::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn path_arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs smelt and expects exit code 2 with stderr containing every one of `wanted`.
fn refuses(args: &[&str], wanted: &[&str]) -> String {
    expect_messages(&smelt(args), args, wanted)
}

/// Expects a failed run (exit code 2) whose stderr has every one of `wanted`; `args`
/// name the run in the failure.
fn expect_messages(out: &std::process::Output, args: &[&str], wanted: &[&str]) -> String {
    let err = expect_user_error(out);
    for w in wanted {
        assert!(err.contains(w), "{args:?}: expected {w:?} in:\n{err}");
    }
    err
}

/// A data directory for examples/mlp.smelt: x [rows, 784] and labels [rows].
fn mlp_data(dir: &Path, labels: &[i32]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows = labels.len();
    write_f32_npy(
        &data.join("x.npy"),
        &[rows as u64, 784],
        &vec![0.25; rows * 784],
    );
    write_i32_npy(&data.join("labels.npy"), &[rows as u64], labels);
    data
}

/// `smelt train examples/mlp.smelt --data DATA --no-cache` with `extra` flags (which
/// override the defaults of --steps 1 --batch 4).
fn train_mlp_with(data: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "examples/mlp.smelt",
        "--data",
        path_arg(data),
        "--no-cache",
    ];
    for (flag, default) in [("--steps", "1"), ("--batch", "4")] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    smelt(&args)
}

/// Expects `train_mlp_with(data, extra)` to fail with every one of `wanted` in stderr.
fn train_refuses(data: &Path, extra: &[&str], wanted: &[&str]) -> String {
    expect_messages(&train_mlp_with(data, extra), extra, wanted)
}

/// A model of one node, `outputs = op(inputs)`, importing `opset`.
fn onnx_model(
    node: NodeProto,
    inputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
    opset: i64,
) -> Vec<u8> {
    let outputs = node
        .output
        .iter()
        .map(|o| ValueInfoProto {
            name: Some(o.clone()),
            ..Default::default()
        })
        .collect();
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![node],
            input: inputs,
            initializer: initializers,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `y = ConstantOfShape(shape)` with `shape` an int64 initializer.
fn constant_of_shape(dims: &[i64]) -> Vec<u8> {
    let shape = TensorProto {
        name: Some("shape".into()),
        dims: vec![dims.len() as i64],
        data_type: Some(7),
        int64_data: dims.to_vec(),
        ..Default::default()
    };
    let node = NodeProto {
        op_type: Some("ConstantOfShape".into()),
        input: vec!["shape".into()],
        output: vec!["y".into()],
        ..Default::default()
    };
    onnx_model(node, vec![], vec![shape], 13)
}

/// `y = Shape(x)` over a float input [2, 3] (folded at import time).
fn shape_model(opset: i64, elem_type: i32) -> Vec<u8> {
    let node = NodeProto {
        op_type: Some("Shape".into()),
        input: vec!["x".into()],
        output: vec!["y".into()],
        attribute: Vec::<AttributeProto>::new(),
        ..Default::default()
    };
    onnx_model(
        node,
        vec![value_info("x", elem_type, &[2, 3])],
        vec![],
        opset,
    )
}

/// A `.npy` file of f32 with the header's shape written as given (no data).
fn npy_claiming(path: &Path, shape: &str, version: u8, header_len_claim: Option<u32>) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (header.len() + 13) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.push(version);
    bytes.push(0);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        let len = header_len_claim.unwrap_or(header.len() as u32);
        bytes.extend_from_slice(&len.to_le_bytes());
    }
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

// 1. Panics.

#[test]
fn item1_batch_beyond_any_size_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = mlp_data(dir.path(), &[1, 2, 3, 4]);
    train_refuses(
        &data,
        &["--batch", "18446744073709551615"],
        &["larger than 2^63-1"],
    );
}

// 2. Aborts on allocation: the limit is checked before anything is allocated.

#[test]
fn item2_oversized_parameter_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big.sir");
    std::fs::write(
        &model,
        "graph @g {\n  param %w: f32[100000, 100000] = zeros\n  %y = neg %w\n  output %y\n}\n",
    )
    .unwrap();
    for device in ["interp", "cpu"] {
        refuses(
            &[
                "run",
                path_arg(&model),
                "--device",
                device,
                "--max-memory",
                "8G",
                "--no-cache",
            ],
            &[
                "%w (f32[100000, 100000]) needs 74.5 GiB",
                "memory limit of 8.0 GiB (--max-memory)",
            ],
        );
    }
}

/// The CPU backend is held to its memory plan, the interpreter to every value at once: a
/// chain of three 1000×1000 products holds 8 MB of host parameter, 8 MB of host output
/// and one 4 MB f32 slot that the intermediates share (20 MB) on the CPU, but four 8 MB
/// host tensors (32 MB) in the interpreter.
#[test]
fn item2_the_cpu_limit_follows_the_memory_plan() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("chain.sir");
    std::fs::write(
        &model,
        "graph @g {\n  param %w: f32[1000, 1000] = normal(0.0, 0.01)\n  %y0 = matmul %w, %w\n  %y1 = matmul %y0, %w\n  %y2 = matmul %y1, %w\n  output %y2\n}\n",
    )
    .unwrap();
    let args = |device, limit| {
        [
            "run",
            path_arg(&model),
            "--device",
            device,
            "--max-memory",
            limit,
            "--no-cache",
        ]
    };
    let out = smelt(&args("cpu", "30M"));
    assert!(
        out.status.success(),
        "the CPU run fits its plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    refuses(
        &args("interp", "30M"),
        &["tensors need", "more than the memory limit of 30.0 MiB"],
    );
    // The plan itself is checked: the arguments (16 MB) fit 19M, the whole run does not.
    refuses(
        &args("cpu", "19M"),
        &["tensors need", "more than the memory limit of 19.0 MiB"],
    );
}

#[test]
fn item2_huge_constant_and_constant_of_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("const.sir");
    std::fs::write(
        &model,
        "graph @g {\n  %c: f32[2000000000] = constant {value = 0.0}\n  output %c\n}\n",
    )
    .unwrap();
    refuses(
        &[
            "run",
            path_arg(&model),
            "--max-memory",
            "8G",
            "--device",
            "interp",
        ],
        &["%c (f32[2000000000]) needs 14.9 GiB"],
    );
    let onnx = dir.path().join("cos.onnx");
    std::fs::write(&onnx, constant_of_shape(&[40000, 40000])).unwrap();
    refuses(
        &[
            "run",
            path_arg(&onnx),
            "--max-memory",
            "8G",
            "--device",
            "interp",
        ],
        &["(f32[40000, 40000]) needs 11.9 GiB"],
    );
}

#[test]
fn item2_large_config_and_batch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = mlp_data(dir.path(), &[1, 2, 3, 4]);
    train_refuses(
        &data,
        &["--batch", "100000", "--max-memory", "1G"],
        &["more than the memory limit of 1.0 GiB (--max-memory)"],
    );
    train_refuses(
        &data,
        &["--set", "hidden=1000000", "--max-memory", "8G"],
        &[
            "%l2.w (f32[1000000, 1000000]) needs 7.3 TiB",
            "memory limit of 8.0 GiB",
        ],
    );
    // The issue's `--set d=4294967296` on the MoE example.
    refuses(
        &[
            "run",
            "examples/moe.smelt",
            "--set",
            "d=4294967296",
            "--max-memory",
            "8G",
        ],
        &["%router (f32[4294967296, 8]) needs 256.0 GiB"],
    );
}

// 3. Dimension arithmetic wraps silently.

#[test]
fn item3_npy_header_shapes_are_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let wraps = dir.path().join("wraps.npy");
    npy_claiming(&wraps, "(4294967296, 4294967296)", 1, None);
    refuses(
        &[
            "run",
            "examples/mlp.sir",
            "--input",
            &format!("x={}", wraps.display()),
        ],
        &["wraps.npy", "is larger than 2^63-1"],
    );
    let short = dir.path().join("short.npy");
    npy_claiming(&short, "(1000, 784)", 1, None);
    refuses(
        &[
            "run",
            "examples/mlp.sir",
            "--input",
            &format!("x={}", short.display()),
        ],
        &["needs 3136000 bytes of data, but the file holds 0"],
    );
}

#[test]
fn item3_constant_of_shape_beyond_any_size_is_an_import_error() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("huge.onnx");
    std::fs::write(&onnx, constant_of_shape(&[1 << 62, 1 << 62])).unwrap();
    refuses(&["dump-ir", path_arg(&onnx)], &["is larger than 2^63-1"]);
}

#[test]
fn item3_bindings_beyond_any_size_are_refused() {
    refuses(
        &[
            "dump-ir",
            "examples/mlp.sir",
            "--stage",
            "scheduled",
            "--bind",
            "B=18446744073709551615",
        ],
        &["--bind: %x (f32[B, 784])", "larger than 2^63-1"],
    );
}

// 4. Silent wrong results.

#[test]
fn item4_labels_out_of_range_are_an_error_on_every_device() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    write_f32_npy(&x, &[2, 784], &vec![0.5; 2 * 784]);
    for (labels, bad) in [
        ([3, 50], "label 50 at index 1"),
        ([-1, 2], "label -1 at index 0"),
    ] {
        let l = dir.path().join("labels.npy");
        write_i32_npy(&l, &[2], &labels);
        for device in ["interp", "cpu"] {
            refuses(
                &[
                    "run",
                    "examples/mlp.sir",
                    "--input",
                    &format!("x={}", x.display()),
                    "--input",
                    &format!("labels={}", l.display()),
                    "--device",
                    device,
                    "--no-cache",
                ],
                &[bad, "'cross_entropy' over 10 classes takes labels 0 to 9"],
            );
        }
    }
    // Training checks every batch.
    let data = mlp_data(dir.path(), &[1, 2, 30, 4]);
    for device in ["interp", "cpu"] {
        train_refuses(
            &data,
            &["--steps", "3", "--device", device],
            &["label 30", "takes labels 0 to 9"],
        );
    }
}

/// Trains examples/mlp.smelt for `steps` with a checkpoint in `dir/ckpt`.
fn train_mlp(dir: &Path, steps: &str, extra: &[&str]) -> std::process::Output {
    let data = mlp_data(dir, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let ckpt = dir.join("ckpt");
    let base = ["--steps", steps, "--checkpoint", path_arg(&ckpt)];
    train_mlp_with(&data, &[&base[..], extra].concat())
}

#[test]
fn item4_corrupt_checkpoints_and_changed_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let out = train_mlp(dir.path(), "2", &[]);
    assert!(out.status.success(), "{}", texts(&out).1);
    let file = ckpt.join("checkpoint.safetensors");
    let good = std::fs::read(&file).unwrap();
    let resume = ["--resume", path_arg(&ckpt)];

    // A changed seed, optimiser, learning rate or batch would not continue the run.
    for (flag, value, shown) in [
        ("--seed", "7", "--seed 0 -> 7"),
        ("--optimizer", "sgd", "--optimizer AdamW"),
        ("--lr", "0.5", "--lr 0.001 -> 0.5"),
    ] {
        let out = train_mlp(dir.path(), "3", &[&resume[..], &[flag, value][..]].concat());
        let err = expect_user_error(&out);
        assert!(err.contains(shown), "{err}");
        assert!(err.contains("--allow-changed-settings"), "{err}");
    }
    let out = train_mlp(
        dir.path(),
        "3",
        &[
            &resume[..],
            &["--seed", "7", "--allow-changed-settings"][..],
        ]
        .concat(),
    );
    let (_, err) = texts(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: resuming with changed settings: --seed 0 -> 7"),
        "{err}"
    );

    // One flipped byte of tensor data is found.
    std::fs::write(&file, &good).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    let err = expect_user_error(&train_mlp(dir.path(), "3", &resume));
    assert!(
        err.contains("corrupt: the checksum does not match"),
        "{err}"
    );
    // `run --weights` does not fall back to reading it as plain safetensors.
    refuses(
        &["run", "examples/mlp.smelt", "--weights", path_arg(&ckpt)],
        &["corrupt: the checksum does not match"],
    );
}

#[test]
fn item8_stale_checkpoint_temporaries_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    // PIDs above the kernel's maximum (2^22) never run.
    let stale = ckpt.join(".checkpoint.safetensors.tmp-99999999");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let out = train_mlp(dir.path(), "1", &[]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(!stale.exists(), "the stale temporary is removed");
    assert!(ckpt.join("checkpoint.safetensors").exists());
}

// 5. A hang.

#[test]
fn item5_plot_of_huge_finite_losses_is_quick() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    std::fs::write(
        &log,
        "{\"step\":1,\"loss\":1e308,\"lr\":0.001}\n{\"step\":2,\"loss\":-1e308,\"lr\":0.001}\n",
    )
    .unwrap();
    let svg = dir.path().join("plot.svg");
    let began = Instant::now();
    let out = smelt(&["plot", path_arg(&log), "-o", path_arg(&svg)]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

// 6. A destructive write.

#[test]
fn item6_compile_refuses_to_replace_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    refuses(
        &["compile", "examples/mlp.sir", "-o", path_arg(&fifo)],
        &["not a regular file (refusing to replace it)"],
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let subdir = dir.path().join("sub");
    std::fs::create_dir(&subdir).unwrap();
    refuses(
        &["compile", "examples/mlp.sir", "-o", path_arg(&subdir)],
        &["not a regular file"],
    );
}

// 7. Unbounded reads.

#[test]
fn item7_reads_are_bounded() {
    refuses(
        &["dump-ir", "/dev/zero"],
        &["/dev/zero: error: cannot read: not a regular file"],
    );
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.smelt");
    let mut text = "input x: f32[2]\noutput y = x\n".repeat(10);
    text.push_str(&"#".repeat(50 << 20));
    std::fs::write(&big, text).unwrap();
    let began = Instant::now();
    refuses(
        &["dump-ir", path_arg(&big)],
        &["more than the 16777216 a model text file may have"],
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let npy = dir.path().join("v2.npy");
    npy_claiming(&npy, "(2,)", 2, Some(u32::MAX));
    refuses(
        &[
            "run",
            "examples/mlp.sir",
            "--input",
            &format!("x={}", npy.display()),
        ],
        &["the header claims 4294967295 bytes, but the file has only"],
    );
}

// 8. Messages that mislead.

#[test]
fn item8_optimiser_and_learning_rate_flags_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let data = mlp_data(dir.path(), &[1, 2, 3, 4]);
    train_refuses(
        &data,
        &["--weight-decay", "nan"],
        &["--weight-decay must be a finite number, 0 or more, found NaN"],
    );
    train_refuses(
        &data,
        &["--lr", "-0.1"],
        &["--lr must be a positive number, found -0.1"],
    );
    train_refuses(
        &data,
        &["--optimizer", "sgd", "--momentum", "1.5"],
        &["--momentum must be a number from 0 up to"],
    );
}

#[test]
fn item8_json_and_safetensors_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let out = smelt(&["dump-ir", "examples/mlp.sir", "--format", "json"]);
    assert!(out.status.success());
    let json = texts(&out).0;
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let bad_dim = write("dim.json", json.replacen("784", "-784", 1));
    let err = refuses(
        &["dump-ir", path_arg(&bad_dim)],
        &["a dimension cannot be negative, found -784"],
    );
    assert!(!err.contains("untagged enum"), "{err}");
    let no_kind = write(
        "kind.json",
        json.replacen("\"kind\": \"uniform\"", "\"kin\": \"uniform\"", 1),
    );
    let err = refuses(
        &["dump-ir", path_arg(&no_kind)],
        &["an initialiser needs a text 'kind'"],
    );
    assert!(!err.contains("None"), "{err}");
    let infinite = write(
        "inf.json",
        json.replacen("-0.03571428571428571", "\"-inf\"", 1),
    );
    refuses(
        &["dump-ir", path_arg(&infinite)],
        &["needs finite low < high"],
    );

    let x = dir.path().join("x.npy");
    write_f32_npy(&x, &[2, 784], &vec![0.5; 2 * 784]);
    let mut header_too_large = u64::MAX.to_le_bytes().to_vec();
    header_too_large.extend_from_slice(b"{}");
    let header = br#"{"w1":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut bad_offset = (header.len() as u64).to_le_bytes().to_vec();
    bad_offset.extend_from_slice(header);
    bad_offset.extend_from_slice(&[0; 12]);
    let st = dir.path().join("w.safetensors");
    let x_arg = format!("x={}", x.display());
    for (bytes, said, raw) in [
        (header_too_large, "its header length", "HeaderTooLarge"),
        (
            bad_offset,
            "the data offsets of tensor 'w1'",
            "InvalidOffset",
        ),
    ] {
        std::fs::write(&st, bytes).unwrap();
        let args = [
            "run",
            "examples/mlp.sir",
            "--weights",
            path_arg(&st),
            "--input",
            &x_arg,
        ];
        let err = refuses(&args, &["not a valid safetensors file:", said]);
        assert!(!err.contains(raw), "{err}");
    }
}

#[test]
fn item8_onnx_opsets_element_types_and_output_names() {
    let dir = tempfile::tempdir().unwrap();
    for opset in [0, 100000] {
        let p = dir.path().join(format!("opset{opset}.onnx"));
        std::fs::write(&p, shape_model(opset, 1)).unwrap();
        refuses(
            &["dump-ir", path_arg(&p)],
            &[&format!("imports opset {opset} of the default domain")],
        );
    }
    let p = dir.path().join("type999.onnx");
    std::fs::write(&p, shape_model(13, 999)).unwrap();
    let err = refuses(
        &["dump-ir", path_arg(&p)],
        &["999 (not an ONNX element type)"],
    );
    assert!(!err.contains("element type element type"), "{err}");

    let p = dir.path().join("shape.onnx");
    std::fs::write(&p, shape_model(13, 1)).unwrap();
    let x = dir.path().join("x.npy");
    write_f32_npy(&x, &[2, 3], &[0.0; 6]);
    let outdir = dir.path().join("out");
    let out = smelt(&[
        "run",
        path_arg(&p),
        "--input",
        &format!("x={}", x.display()),
        "--output-dir",
        path_arg(&outdir),
    ]);
    assert!(out.status.success(), "{}", texts(&out).1);
    assert!(outdir.join("y.npy").exists(), "the output keeps its name y");
}

#[test]
fn item8_all_nan_outputs_are_summarised_as_nan() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("nan.sir");
    std::fs::write(
        &model,
        "graph @g {\n  input %x: f32[3]\n  %y = log %x\n  output %y\n}\n",
    )
    .unwrap();
    let x = dir.path().join("x.npy");
    write_f32_npy(&x, &[3], &[-1.0, -2.0, -3.0]);
    let out = smelt(&[
        "run",
        path_arg(&model),
        "--input",
        &format!("x={}", x.display()),
    ]);
    let (stdout, err) = texts(&out);
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("y: f32[3] all 3 values NaN"), "{stdout}");
    assert!(!stdout.contains("inf"), "{stdout}");
}

/// Convolution and pool sizes from a model file are checked, not overflowed: a padding
/// and dilation near 2^63 are a located error (exit 2), never a panic.
#[test]
fn convolution_sizes_near_the_limit_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("conv.smelt");
    std::fs::write(
        &model,
        "input image: f32[1, 3, 8, 8]\nparam w: f32[4, 3, 3, 3] = kaiming\n\
         output y = conv2d(image, w, padding=9223372036854775807, dilation=9223372036854775807)\n",
    )
    .unwrap();
    refuses(
        &["run", path_arg(&model)],
        &["conv.smelt:3:12", "'conv' sizes overflow"],
    );
}
