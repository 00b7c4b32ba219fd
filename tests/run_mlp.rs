//! `smelt run examples/mlp.sir` against an independent f64 computation of the same MLP.

mod common;

use common::{read_f32_npy, smelt, write_f32_npy, write_i32_npy, Rng};
use std::path::Path;

struct Layer {
    w: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

/// The MLP written out in f64: relu(x W1 + b1) -> relu(. W2 + b2) -> . W3 + b3, then
/// mean softmax cross-entropy.
fn reference(x: &[f32], labels: &[i32], layers: &[Layer]) -> (f64, Vec<f64>) {
    let batch = labels.len();
    let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (li, l) in layers.iter().enumerate() {
        let mut out = vec![0.0; batch * l.n_out];
        for r in 0..batch {
            for j in 0..l.n_out {
                let mut s = l.b[j] as f64;
                for k in 0..l.n_in {
                    s += h[r * l.n_in + k] * l.w[k * l.n_out + j] as f64;
                }
                out[r * l.n_out + j] = if li + 1 < layers.len() { s.max(0.0) } else { s };
            }
        }
        h = out;
    }
    let classes = layers.last().unwrap().n_out;
    let mut loss = 0.0;
    for r in 0..batch {
        let row = &h[r * classes..(r + 1) * classes];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
    }
    (loss / batch as f64, h)
}

#[test]
fn mlp_matches_an_independent_f64_computation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng(0x5eed);
    let batch = 3;
    let sizes = [(784, 1024), (1024, 1024), (1024, 10)];
    let layers: Vec<Layer> = sizes
        .iter()
        .map(|&(n_in, n_out)| Layer {
            w: random(&mut rng, n_in * n_out, 1.0 / (n_in as f64).sqrt()),
            b: random(&mut rng, n_out, 0.1),
            n_in,
            n_out,
        })
        .collect();
    let x = random(&mut rng, batch * 784, 1.0);
    let labels: Vec<i32> = (0..batch).map(|i| ((i * 7 + 3) % 10) as i32).collect();

    let mut args: Vec<String> = vec!["run".into(), "examples/mlp.sir".into()];
    let mut feed = |name: &str, path: &Path| {
        args.push("--input".into());
        args.push(format!("{name}={}", path.display()));
    };
    write_f32_npy(&d.join("x.npy"), &[batch as u64, 784], &x);
    feed("x", &d.join("x.npy"));
    write_i32_npy(&d.join("labels.npy"), &[batch as u64], &labels);
    feed("labels", &d.join("labels.npy"));
    for (i, l) in layers.iter().enumerate() {
        let (w, b) = (
            d.join(format!("w{}.npy", i + 1)),
            d.join(format!("b{}.npy", i + 1)),
        );
        write_f32_npy(&w, &[l.n_in as u64, l.n_out as u64], &l.w);
        write_f32_npy(&b, &[l.n_out as u64], &l.b);
        feed(&format!("w{}", i + 1), &w);
        feed(&format!("b{}", i + 1), &b);
    }
    let out_dir = d.join("out");
    args.push("--output-dir".into());
    args.push(out_dir.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = smelt(&argv);
    let (stdout, stderr) = common::texts(&out);
    assert!(out.status.success(), "smelt run failed:\n{stderr}");
    assert!(
        stdout.contains("loss: f32[] = "),
        "summary names the loss:\n{stdout}"
    );

    let (want_loss, want_logits) = reference(&x, &labels, &layers);
    let (shape, loss) = read_f32_npy(&out_dir.join("loss.npy"));
    assert!(shape.is_empty());
    let rel = ((loss[0] as f64 - want_loss) / want_loss).abs();
    assert!(
        rel < 1e-5,
        "loss {} vs f64 {want_loss}: rel. error {rel:e}",
        loss[0]
    );
    let (shape, logits) = read_f32_npy(&out_dir.join("logits.npy"));
    assert_eq!(shape, vec![batch as u64, 10]);
    let scale = want_logits.iter().map(|v| v.abs()).fold(0.0, f64::max);
    for (g, w) in logits.iter().zip(&want_logits) {
        assert!(((*g as f64) - w).abs() <= 1e-5 * scale, "logit {g} vs {w}");
    }
}

#[test]
fn mlp_runs_with_initialised_parameters_near_ln_10() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let x = random(&mut rng, 4 * 784, 1.0);
    write_f32_npy(&dir.path().join("x.npy"), &[4, 784], &x);
    write_i32_npy(&dir.path().join("y.npy"), &[4], &[1, 2, 3, 4]);
    let x_arg = format!("x={}", dir.path().join("x.npy").display());
    let y_arg = format!("labels={}", dir.path().join("y.npy").display());
    let out = smelt(&[
        "run",
        "examples/mlp.sir",
        "--input",
        &x_arg,
        "--input",
        &y_arg,
        "--seed",
        "3",
    ]);
    let (stdout, stderr) = common::texts(&out);
    assert!(out.status.success(), "{stderr}");
    let loss: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("loss: f32[] = "))
        .expect("a loss line")
        .parse()
        .unwrap();
    assert!(
        (loss - 10f64.ln()).abs() < 0.3,
        "loss at init {loss} should be near ln 10"
    );
}
