//! Compiled artefacts and the compile cache: a stored program computes exactly what a
//! fresh compilation computes; damaged, foreign or old files are refused with a clear
//! message; the cache hits on the same model and settings and misses on any change.

mod common;

use smelt_compiler::autodiff::optimizer::Optimizer;
use smelt_compiler::ir::{text, DType, Graph};
use smelt_compiler::optimize::Options;
use smelt_runtime::compiled::cache::{Cache, Outcome};
use smelt_runtime::compiled::{ArtefactError, Compiled, Purpose, FORMAT};
use smelt_runtime::{params, Tensor};
use std::collections::HashMap;

use common::{example, Rng};

/// Feeds for the example MLP: random inputs and labels, initialised parameters.
fn mlp_feeds(g: &Graph) -> HashMap<String, Tensor> {
    let mut rng = Rng(11);
    let mut feeds = params::init_params(g, 3);
    let x = (0..4 * 784).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let labels = (0..4).map(|_| rng.uniform(0.0, 10.0) as i64).collect();
    feeds.insert(
        "x".into(),
        Tensor::from_f64(g.ty(g.find("x").unwrap()).dtype, vec![4, 784], x),
    );
    feeds.insert(
        "labels".into(),
        Tensor::from_i64(g.ty(g.find("labels").unwrap()).dtype, vec![4], labels),
    );
    feeds
}

/// A small graph with a loss, so that every byte of its artefact can be damaged in
/// turn and it can be trained.
fn tiny() -> Graph {
    text::parse(
        "graph @tiny {\n  input %x: f32[B, 3]\n  param %w: f32[3, 3] = normal(0.0, 0.5)\n  %y: f32[B, 3] = matmul %x, %w\n  %z: f32[B, 3] = tanh %y\n  %loss: f32[] = reduce_sum %z {axes = [0, 1]}\n  output %loss\n}\n",
    )
    .unwrap()
    .graph
}

#[test]
fn a_loaded_artefact_computes_what_a_fresh_compilation_computes() {
    let g = example("examples/mlp.sir");
    let feeds = mlp_feeds(&g);
    let optimized = Options::default();
    for (purpose, optimize) in [
        (Purpose::Run, Some(&optimized)),
        (Purpose::Train(Optimizer::adamw()), Some(&optimized)),
        (Purpose::Train(Optimizer::adamw()), None),
    ] {
        let fresh = Compiled::compile(&g, purpose.clone(), optimize).unwrap();
        let loaded = Compiled::from_bytes(&fresh.to_bytes()).unwrap();
        assert_eq!(loaded.purpose, purpose);
        assert_eq!(text::print(&loaded.forward), text::print(&g));
        assert_eq!(
            loaded.program.schedule().steps,
            fresh.program.schedule().steps
        );
        // The row composites (here the loss and its gradient) are steps of their own.
        let kept = if purpose == Purpose::Run {
            " cross_entropy "
        } else {
            " cross_entropy_grad "
        };
        assert!(text::print(&loaded.program.schedule().graph).contains(kept));
        let mut feeds = feeds.clone();
        if let Purpose::Train(_) = purpose {
            feeds.extend(params::init_params(&fresh.program.schedule().graph, 3));
            feeds.insert(
                "lr".into(),
                Tensor::from_f64(DType::F32, vec![], vec![0.01]),
            );
            feeds.insert(
                "step".into(),
                Tensor::from_f64(DType::F32, vec![], vec![1.0]),
            );
        }
        let a = fresh.program.run(&feeds).unwrap();
        let b = loaded.program.run(&feeds).unwrap();
        assert_eq!(a.outputs, b.outputs, "{purpose:?}");
        assert_eq!(a.updates, b.updates, "{purpose:?}");
    }
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let bytes = Compiled::compile(&tiny(), Purpose::Run, None)
        .unwrap()
        .to_bytes();
    for len in 0..bytes.len() {
        let e = Compiled::from_bytes(&bytes[..len]).unwrap_err().to_string();
        assert!(
            e.contains("truncated") || e.contains("not a smelt compiled artefact"),
            "cut at {len}: {e}"
        );
    }
    for at in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        let e = Compiled::from_bytes(&damaged).unwrap_err().to_string();
        assert!(
            ["corrupt", "truncated", "not a smelt", "format"]
                .iter()
                .any(|w| e.contains(w)),
            "byte {at} flipped: {e}"
        );
    }
}

#[test]
fn other_versions_are_refused_by_name() {
    let text = String::from_utf8(
        Compiled::compile(&tiny(), Purpose::Run, None)
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    let old = text.replacen(&format!("format {FORMAT}\n"), "format 0\n", 1);
    let e = Compiled::from_bytes(old.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("format 0") && e.contains("compile the model again"),
        "{e}"
    );
    let e = Compiled::from_bytes(b"graph @m {}\n").unwrap_err();
    assert!(matches!(e, ArtefactError::NotArtefact), "{e}");
    assert!(e.to_string().contains("not a smelt compiled artefact"));
}

#[test]
fn the_cache_hits_on_the_same_model_and_settings_and_misses_on_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().join("cache"));
    let g = tiny();
    let optimized = Options::default();
    let on = Some(&optimized);
    let (_, first) = cache.compile(&g, Purpose::Run, on).unwrap();
    let Outcome::Stored(entry) = first else {
        panic!("first compilation: {first}")
    };
    let (_, second) = cache.compile(&g, Purpose::Run, on).unwrap();
    assert_eq!(second, Outcome::Hit(entry.clone()));
    // Another purpose, another optimiser, other e-graph settings or another graph: a
    // different entry.
    let fewer_iterations = Options {
        iter_limit: 1,
        ..Options::default()
    };
    for (purpose, optimize) in [
        (Purpose::Train(Optimizer::sgd()), on),
        (Purpose::Train(Optimizer::adamw()), on),
        (Purpose::Run, None),
        (Purpose::Run, Some(&fewer_iterations)),
    ] {
        let (_, o) = cache.compile(&g, purpose, optimize).unwrap();
        assert!(matches!(o, Outcome::Stored(ref p) if *p != entry), "{o}");
    }
    let changed = text::parse(&text::print(&g).replace("tanh", "exp"))
        .unwrap()
        .graph;
    let (_, o) = cache.compile(&changed, Purpose::Run, on).unwrap();
    assert!(matches!(o, Outcome::Stored(ref p) if *p != entry), "{o}");
    // A damaged entry is a miss and is replaced.
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&entry, bytes).unwrap();
    let (_, o) = cache.compile(&g, Purpose::Run, on).unwrap();
    assert_eq!(o, Outcome::Stored(entry.clone()));
    let (_, o) = cache.compile(&g, Purpose::Run, on).unwrap();
    assert_eq!(o, Outcome::Hit(entry));
}
