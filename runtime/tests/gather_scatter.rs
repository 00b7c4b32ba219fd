//! `all_gather` and `reduce_scatter` in simulated worlds of 2, 3 and 4 ranks (one
//! thread per rank), in the interpreter and on the CPU backend, against results written
//! out here from the ops' definitions; their gradients (each the other) against the
//! adjoint summed over the world; and the error for a world of the wrong size.

use smelt_compiler::autodiff::differentiate;
use smelt_compiler::ir::{text, DType, Graph};
use smelt_runtime::comm::local::LocalWorld;
use smelt_runtime::comm::{self, Collectives};
use smelt_runtime::cpu::CpuProgram;
use smelt_runtime::tensor::Tensor;
use smelt_runtime::Precision;
use std::collections::HashMap;
use std::sync::Arc;

const ROWS: usize = 2;

/// One rank's outputs, each as its values.
type Outputs = Vec<Vec<f64>>;

/// Runs `g` on every rank of a world of `ranks`, each fed by `feeds(rank)`; returns
/// per rank the interpreter's and the CPU backend's outputs.
fn in_world(
    g: &Graph,
    ranks: usize,
    feeds: impl Fn(usize) -> HashMap<String, Tensor> + Sync,
) -> Vec<(Outputs, Outputs)> {
    let program = CpuProgram::compile(g).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalWorld::ranks(ranks)
            .into_iter()
            .map(|w| {
                let (program, feeds) = (&program, &feeds);
                s.spawn(move || {
                    let feeds = feeds(w.rank());
                    let w: Arc<dyn Collectives> = w;
                    comm::with_world(w, || {
                        let interp = smelt_runtime::run(g, &feeds, Precision::F64).unwrap();
                        let cpu = program.run(&feeds).unwrap().outputs;
                        let values = |ts: &[Tensor]| ts.iter().map(Tensor::to_f64_vec).collect();
                        (values(&interp), values(&cpu))
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Rank `r`'s `[ROWS, cols]` operand: `100 r + 10 i + j` (exact in f32).
fn operand(rank: usize, cols: usize) -> Tensor {
    let values = (0..ROWS * cols)
        .map(|k| (100 * rank + 10 * (k / cols) + k % cols) as f64)
        .collect();
    Tensor::from_f64(DType::F32, vec![ROWS, cols], values)
}

#[test]
fn gather_concatenates_and_scatter_sums_then_cuts_in_rank_order() {
    for ranks in [2, 3, 4] {
        let g = text::parse(&format!(
            "graph @g {{
  input %x: f32[{ROWS}, 3]
  input %y: f32[{ROWS}, {wide}]
  %gathered = all_gather %x {{axis = 1, ranks = {ranks}}}
  %scattered = reduce_scatter %y {{axis = 1, ranks = {ranks}}}
  output %gathered
  output %scattered
}}",
            wide = 2 * ranks
        ))
        .unwrap()
        .graph;
        let results = in_world(&g, ranks, |r| {
            HashMap::from([
                ("x".to_string(), operand(r, 3)),
                ("y".to_string(), operand(r, 2 * ranks)),
            ])
        });
        // gathered[i, 3s + j] = x_s[i, j]; scattered on rank r: [i, c] = Σ_s y_s[i, 2r + c].
        let gathered: Vec<f64> = (0..ROWS)
            .flat_map(|i| (0..ranks).flat_map(move |s| (0..3).map(move |j| 100 * s + 10 * i + j)))
            .map(|v| v as f64)
            .collect();
        for (rank, (interp, cpu)) in results.iter().enumerate() {
            let scattered: Vec<f64> = (0..ROWS)
                .flat_map(|i| {
                    (0..2).map(move |c| {
                        (0..ranks)
                            .map(|s| (100 * s + 10 * i + 2 * rank + c) as f64)
                            .sum::<f64>()
                    })
                })
                .collect();
            for (backend, out) in [("interpreter", interp), ("cpu", cpu)] {
                assert_eq!(
                    out[0], gathered,
                    "{backend}, {ranks} ranks, rank {rank}: all_gather"
                );
                assert_eq!(
                    out[1], scattered,
                    "{backend}, {ranks} ranks, rank {rank}: reduce_scatter"
                );
            }
        }
    }
}

#[test]
fn the_gradient_of_a_gather_is_the_scattered_sum_of_the_adjoints() {
    let ranks = 3;
    let g = text::parse(&format!(
        "graph @g {{
  input %x: f32[{ROWS}, 3]
  input %c: f32[{ROWS}, {wide}]
  %gathered = all_gather %x {{axis = 1, ranks = {ranks}}}
  %weighted = mul %gathered, %c
  %loss = reduce_sum %weighted {{axes = [0, 1]}}
  output %loss
}}",
        wide = 3 * ranks
    ))
    .unwrap()
    .graph;
    let x = g.find("x").unwrap();
    let grad = differentiate(&g, g.outputs[0], &[x]).unwrap().graph;
    let results = in_world(&grad, ranks, |r| {
        HashMap::from([
            ("x".to_string(), operand(r, 3)),
            ("c".to_string(), operand(r, 3 * ranks)),
        ])
    });
    // The world's loss is Σ_r Σ c_r ∘ gather(x): ∂/∂x_s[i, j] = Σ_r c_r[i, 3s + j].
    for (rank, (interp, cpu)) in results.iter().enumerate() {
        let want: Vec<f64> = (0..ROWS)
            .flat_map(|i| {
                (0..3).map(move |j| {
                    (0..ranks)
                        .map(|r| (100 * r + 10 * i + 3 * rank + j) as f64)
                        .sum::<f64>()
                })
            })
            .collect();
        assert_eq!(interp[1], want, "interpreter, rank {rank}");
        assert_eq!(cpu[1], want, "cpu, rank {rank}");
    }
}

#[test]
fn a_collective_compiled_for_another_world_size_is_refused() {
    let g = text::parse(
        "graph @g {
  input %x: f32[2, 3]
  %y = all_gather %x {axis = 0, ranks = 2}
  output %y
}",
    )
    .unwrap()
    .graph;
    let feeds = HashMap::from([("x".to_string(), operand(0, 3))]);
    let err = smelt_runtime::run(&g, &feeds, Precision::F64).unwrap_err();
    assert!(
        err.to_string()
            .contains("compiled for 2 ranks but runs in a world of 1"),
        "{err}"
    );
    let err = CpuProgram::compile(&g).unwrap().run(&feeds).unwrap_err();
    assert!(err.to_string().contains("compiled for 2 ranks"), "{err}");
}
