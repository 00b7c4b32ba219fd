//! Data-parallel training in a simulated world (`comm::local`: one thread per rank):
//! every rank's losses and final parameters equal a single process's run on the same
//! global batches, on the CPU backend and in the interpreter, and the `all_reduce` op
//! sums over the world in both.

use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::ir::{text, DType, Graph};
use smelt_runtime::comm::local::LocalWorld;
use smelt_runtime::comm::{self, Collectives};
use smelt_runtime::compiled::{Compiled, Purpose};
use smelt_runtime::engine::Device;
use smelt_runtime::tensor::Tensor;
use smelt_runtime::train::{Dataset, Schedule, TrainConfig, Trainer};
use smelt_runtime::Precision;
use std::collections::HashMap;
use std::sync::Arc;

const MLP: &str = "graph @mlp {
  input %x: f32[B, 8]
  input %labels: i32[B]
  param %w1: f32[8, 16] = uniform(-0.35, 0.35)
  param %b1: f32[16] = uniform(-0.35, 0.35)
  param %w2: f32[16, 4] = uniform(-0.25, 0.25)
  %xw1 = matmul %x, %w1
  %b1x: f32[B, 16] = broadcast %b1 {dims = [1]}
  %h = tanh %xw1
  %z = add %h, %b1x
  %logits = matmul %z, %w2
  %loss = cross_entropy %logits, %labels
  output %loss
}";

fn model() -> Graph {
    text::parse(MLP).unwrap().graph
}

/// 64 rows of random features and labels (a fixed LCG).
fn data() -> Dataset {
    let mut s = 7u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let rows = 64;
    let x: Vec<f64> = (0..rows * 8).map(|_| next() * 2.0 - 1.0).collect();
    let labels: Vec<i64> = (0..rows).map(|_| (next() * 4.0) as i64).collect();
    Dataset::Tensors {
        tensors: vec![
            ("x".into(), Tensor::from_f64(DType::F32, vec![rows, 8], x)),
            (
                "labels".into(),
                Tensor::from_i64(DType::I32, vec![rows], labels),
            ),
        ],
        rows,
    }
}

fn config(data_parallel: usize) -> TrainConfig {
    TrainConfig {
        steps: 8,
        batch: 8,
        lr: 3e-2,
        schedule: Schedule::Constant,
        seed: 3,
        optimizer: Optimizer::adamw(),
        max_memory: u64::MAX,
        data_parallel,
    }
}

/// Where a trainer runs.
#[derive(Clone, Copy)]
enum Backend {
    Cpu,
    Interp,
}

fn trainer(backend: Backend, data_parallel: usize) -> Trainer {
    let g = model();
    match backend {
        Backend::Cpu => {
            let purpose = match data_parallel {
                1 => Purpose::Train(Optimizer::adamw()),
                replicas => Purpose::TrainReplica {
                    optimizer: Optimizer::adamw(),
                    replicas,
                },
            };
            let compiled = Compiled::compile(&g, purpose, None).unwrap();
            Trainer::from_compiled(compiled, data(), config(data_parallel)).unwrap()
        }
        Backend::Interp => Trainer::new(
            &g,
            data(),
            config(data_parallel),
            Device::Interp(Precision::F32),
        )
        .unwrap(),
    }
}

/// The losses of every step and the final state.
type Run = (Vec<f64>, HashMap<String, Tensor>);

fn train(mut t: Trainer) -> Run {
    let losses = (0..8).map(|_| t.step().unwrap().loss).collect();
    (losses, t.state())
}

/// Runs `ranks` trainers, one per thread, each in its rank of one local world.
fn train_in_world(backend: Backend, ranks: usize) -> Vec<Run> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalWorld::ranks(ranks)
            .into_iter()
            .map(|w| {
                s.spawn(move || {
                    let w: Arc<dyn Collectives> = w;
                    comm::with_world(w, || train(trainer(backend, ranks)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn close(what: &str, a: f64, b: f64, tol: f64) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1e-3),
        "{what}: {a} vs {b} (relative tolerance {tol})"
    );
}

/// f32 sums in a different order (per rank, then over ranks) compounded over 8 AdamW
/// steps stay within 1e-5 relative of the single process.
fn check_data_parallel(backend: Backend, ranks: usize) {
    let (single_losses, single_state) = train(trainer(backend, 1));
    for (rank, (losses, state)) in train_in_world(backend, ranks).into_iter().enumerate() {
        for (step, (a, b)) in losses.iter().zip(&single_losses).enumerate() {
            close(&format!("rank {rank} step {} loss", step + 1), *a, *b, 1e-5);
        }
        for (name, want) in &single_state {
            let got = state[name].to_f64_vec();
            for (i, (a, b)) in got.iter().zip(want.to_f64_vec()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1e-2),
                    "rank {rank}: %{name}[{i}] = {a}, single process {b}"
                );
            }
        }
    }
    assert!(
        single_losses[7] < single_losses[0],
        "the model learns: {single_losses:?}"
    );
}

#[test]
fn two_ranks_on_the_cpu_backend_train_as_one_process() {
    check_data_parallel(Backend::Cpu, 2);
}

#[test]
fn four_ranks_on_the_cpu_backend_train_as_one_process() {
    check_data_parallel(Backend::Cpu, 4);
}

#[test]
fn two_ranks_in_the_interpreter_train_as_one_process() {
    check_data_parallel(Backend::Interp, 2);
}

#[test]
fn a_replica_step_refuses_a_world_of_the_wrong_size() {
    let g = model();
    let purpose = Purpose::TrainReplica {
        optimizer: Optimizer::adamw(),
        replicas: 2,
    };
    let compiled = Compiled::compile(&g, purpose, None).unwrap();
    let err = Trainer::from_compiled(compiled, data(), config(2))
        .err()
        .expect("one process is not a world of two")
        .to_string();
    assert!(err.contains("mpirun -np 2"), "{err}");
}

#[test]
fn all_reduce_sums_over_the_world_in_the_interpreter_and_the_cpu_backend() {
    let g = text::parse(
        "graph @g {
  input %x: f32[3]
  %y = all_reduce %x
  output %y
}",
    )
    .unwrap()
    .graph;
    let program = Compiled::compile(&g, Purpose::Run, None).unwrap().program;
    let sums: Vec<(Vec<f64>, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalWorld::ranks(3)
            .into_iter()
            .map(|w| {
                let (g, program) = (&g, &program);
                s.spawn(move || {
                    let r = w.rank() as f64;
                    let feeds = HashMap::from([(
                        "x".to_string(),
                        Tensor::from_f64(DType::F32, vec![3], vec![r, 10.0 * r, 0.5]),
                    )]);
                    let w: Arc<dyn Collectives> = w;
                    comm::with_world(w, || {
                        let interp = smelt_runtime::run(g, &feeds, Precision::F64).unwrap();
                        let cpu = program.run(&feeds).unwrap();
                        (interp[0].to_f64_vec(), cpu.outputs[0].to_f64_vec())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (interp, cpu) in sums {
        assert_eq!(interp, vec![3.0, 30.0, 1.5]);
        assert_eq!(cpu, vec![3.0, 30.0, 1.5]);
    }
}

#[test]
fn ranks_with_different_settings_are_refused_at_start() {
    let purpose = Purpose::TrainReplica {
        optimizer: Optimizer::adamw(),
        replicas: 2,
    };
    let compiled = Compiled::compile(&model(), purpose, None).unwrap();
    let errors: Vec<Option<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = LocalWorld::ranks(2)
            .into_iter()
            .map(|w| {
                let compiled = compiled.clone();
                s.spawn(move || {
                    let mut c = config(2);
                    c.lr *= 1.0 + w.rank() as f64;
                    let w: Arc<dyn Collectives> = w;
                    comm::with_world(w, || {
                        Trainer::from_compiled(compiled, data(), c)
                            .err()
                            .map(|e| e.to_string())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for e in errors {
        let e = e.expect("every rank refuses");
        assert!(e.contains("different models or settings"), "{e}");
    }
}
