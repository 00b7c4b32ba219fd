//! The loopback MoE all-to-all kernels in the evaluator against a host reference, on
//! random inputs, with the grids the SM plan gives communication kernels; and their PTX
//! through ptxas when it is installed.

use smelt_compiler::gpu::comm::loopback::{identity_round_trip, Loopback};
use smelt_compiler::gpu::comm::{CommKernel, MoeLayout, Transport};
use smelt_compiler::gpu::eval::{self, Data};
use smelt_compiler::gpu::{ptx, ptxas};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Case {
    layout: MoeLayout,
    tokens: Vec<f32>,
    ids: Vec<i32>,
    gates: Vec<f32>,
}

/// Random tokens and gates; each token picks `top_k` distinct experts.
fn case(layout: MoeLayout, seed: u64) -> Case {
    let mut r = Rng(seed);
    let tokens = (0..layout.tokens * layout.dim)
        .map(|_| r.uniform())
        .collect();
    let mut ids = Vec::new();
    for _ in 0..layout.tokens {
        let mut chosen: Vec<i32> = Vec::new();
        while chosen.len() < layout.top_k {
            let e = r.below(layout.experts) as i32;
            if !chosen.contains(&e) {
                chosen.push(e);
            }
        }
        ids.extend(chosen);
    }
    let gates = (0..layout.tokens * layout.top_k)
        .map(|_| 0.1 + r.uniform().abs())
        .collect();
    Case {
        layout,
        tokens,
        ids,
        gates,
    }
}

/// Host dispatch: slots in token-major order per expert, −1 beyond capacity.
fn reference_dispatch(c: &Case) -> (Vec<f32>, Vec<i32>) {
    let l = c.layout;
    let mut out = vec![0.0f32; l.experts * l.capacity * l.dim];
    let mut slots = vec![-1i32; l.tokens * l.top_k];
    let mut fill = vec![0usize; l.experts];
    for (p, slot) in slots.iter_mut().enumerate() {
        let e = c.ids[p] as usize;
        if fill[e] < l.capacity {
            *slot = fill[e] as i32;
            let (src, dst) = (p / l.top_k * l.dim, (e * l.capacity + fill[e]) * l.dim);
            out[dst..dst + l.dim].copy_from_slice(&c.tokens[src..src + l.dim]);
        }
        fill[e] += 1;
    }
    (out, slots)
}

fn run(k: &CommKernel, grid: u32, mut buffers: Vec<Data>) -> Result<Vec<Data>, String> {
    eval::run(&k.kernel, grid, 132, &mut buffers).map_err(|e| e.to_string())?;
    Ok(buffers)
}

fn f32s(d: &Data) -> &[f32] {
    match d {
        Data::F32(v) => v,
        other => panic!("expected f32 data, got {:?}", other.elem()),
    }
}

fn i32s(d: &Data) -> &[i32] {
    match d {
        Data::I32(v) => v,
        other => panic!("expected i32 data, got {:?}", other.elem()),
    }
}

const EPOCH: i32 = 7;

fn dispatch(c: &Case, grid: u32) -> Vec<Data> {
    let k = Loopback.dispatch(&c.layout).unwrap();
    let l = c.layout;
    run(
        &k,
        grid,
        vec![
            Data::F32(vec![0.0; l.experts * l.capacity * l.dim]),
            Data::I32(vec![-5; l.tokens * l.top_k]),
            Data::I32(vec![EPOCH - 1; l.experts]),
            Data::F32(c.tokens.clone()),
            Data::I32(c.ids.clone()),
            Data::I32(vec![EPOCH]),
        ],
    )
    .unwrap()
}

fn layouts() -> Vec<MoeLayout> {
    vec![
        // Roomy: nothing dropped.
        MoeLayout {
            tokens: 24,
            dim: 40,
            top_k: 2,
            experts: 8,
            capacity: 24,
            ranks: 2,
        },
        // Tight: routings beyond capacity are dropped; dim above one block's threads.
        MoeLayout {
            tokens: 33,
            dim: 160,
            top_k: 3,
            experts: 6,
            capacity: 9,
            ranks: 1,
        },
    ]
}

#[test]
fn dispatch_fills_expert_buffers_like_the_host_and_flags_every_expert() {
    for (i, layout) in layouts().into_iter().enumerate() {
        let c = case(layout, 11 + i as u64);
        let (want_out, want_slots) = reference_dispatch(&c);
        assert!(want_out.iter().any(|&x| x != 0.0));
        // The comm grid: fewer blocks than experts, as many, and more.
        for grid in [1, 4, 20] {
            let got = dispatch(&c, grid);
            assert_eq!(f32s(&got[0]), &want_out[..], "layout {i}, grid {grid}");
            assert_eq!(i32s(&got[1]), &want_slots[..], "layout {i}, grid {grid}");
            assert!(
                i32s(&got[2]).iter().all(|&f| f == EPOCH),
                "every expert flagged"
            );
        }
        if layout.capacity < layout.tokens {
            assert!(want_slots.contains(&-1), "the tight layout drops routings");
        }
    }
}

/// Host combine of expert outputs `y` with the dispatch's slots.
fn reference_combine(c: &Case, y: &[f32], slots: &[i32]) -> Vec<f32> {
    let l = c.layout;
    let mut out = vec![0.0f32; l.tokens * l.dim];
    for t in 0..l.tokens {
        for j in 0..l.top_k {
            let p = t * l.top_k + j;
            if slots[p] < 0 {
                continue;
            }
            let at = (c.ids[p] as usize * l.capacity + slots[p] as usize) * l.dim;
            for x in 0..l.dim {
                out[t * l.dim + x] = c.gates[p].mul_add(y[at + x], out[t * l.dim + x]);
            }
        }
    }
    out
}

fn combine(c: &Case, y: &[f32], slots: &[i32], done: i32, grid: u32) -> Result<Vec<f32>, String> {
    let l = c.layout;
    let k = Loopback.combine(&l).unwrap();
    let got = run(
        &k,
        grid,
        vec![
            Data::F32(vec![0.0; l.tokens * l.dim]),
            Data::F32(y.to_vec()),
            Data::I32(slots.to_vec()),
            Data::I32(c.ids.clone()),
            Data::F32(c.gates.clone()),
            Data::I32(vec![done; l.experts]),
            Data::I32(vec![EPOCH]),
        ],
    )?;
    Ok(f32s(&got[0]).to_vec())
}

#[test]
fn dispatch_then_combine_matches_the_host_round_trip() {
    for (i, layout) in layouts().into_iter().enumerate() {
        let c = case(layout, 40 + i as u64);
        let dispatched = dispatch(&c, 20);
        let slots = i32s(&dispatched[1]).to_vec();
        // The "experts": a different random function per slot, so a wrong slot shows.
        let mut r = Rng(99 + i as u64);
        let y: Vec<f32> = f32s(&dispatched[0])
            .iter()
            .map(|&x| x * r.uniform() + r.uniform())
            .collect();
        let want = reference_combine(&c, &y, &slots);
        for grid in [1, 20] {
            let got = combine(&c, &y, &slots, EPOCH, grid).unwrap();
            for (n, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "layout {i} grid {grid} [{n}]: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn combine_waits_for_the_experts_flags() {
    let c = case(layouts()[0], 5);
    let slots = i32s(&dispatch(&c, 4)[1]).to_vec();
    let y = vec![1.0f32; c.layout.experts * c.layout.capacity * c.layout.dim];
    // Flags from the previous step: on a GPU combine would spin; the evaluator says so.
    let err = combine(&c, &y, &slots, EPOCH - 1, 4).unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn comm_kernels_assemble_with_ptxas() {
    let Some(ptxas) = ptxas::find_for_test("the MoE communication kernels") else {
        return;
    };
    let l = layouts()[1];
    let kernels = vec![
        Loopback.dispatch(&l).unwrap().kernel,
        Loopback.combine(&l).unwrap().kernel,
    ];
    let text = ptx::module(&kernels);
    assert!(text.contains("st.release.gpu.global.s32"), "{text}");
    assert!(text.contains("ld.acquire.gpu.global.s32"), "{text}");
    let reports = ptxas::assemble(&ptxas, &text, ptx::arch(&kernels)).unwrap();
    assert_eq!(reports.len(), 2);
}

#[test]
fn an_exchange_through_identity_experts_returns_tokens_scaled_by_their_kept_gates() {
    // As `smelt gpu-check` runs it: the combine reads the dispatch's expert buffer and
    // waits on the flags the dispatch raised; experts may repeat within a token and
    // overflow their capacity.
    let l = MoeLayout {
        tokens: 40,
        dim: 8,
        top_k: 3,
        experts: 4,
        capacity: 24,
        ranks: 1,
    };
    let mut rng = Rng(5);
    let ids: Vec<i32> = (0..l.tokens * l.top_k)
        .map(|_| rng.below(4) as i32)
        .collect();
    let tokens: Vec<f32> = (0..l.tokens * l.dim).map(|_| rng.uniform()).collect();
    let gates: Vec<f32> = (0..l.tokens * l.top_k).map(|_| rng.uniform()).collect();
    let c = Case {
        layout: l,
        tokens: tokens.clone(),
        ids: ids.clone(),
        gates: gates.clone(),
    };
    let sent = dispatch(&c, 3);
    let (expert_in, slots, ready) = (f32s(&sent[0]), i32s(&sent[1]), i32s(&sent[2]));
    assert!(slots.contains(&-1), "some routing must overflow its expert");
    let k = Loopback.combine(&l).unwrap();
    let back = run(
        &k,
        2,
        vec![
            Data::F32(vec![0.0; l.tokens * l.dim]),
            Data::F32(expert_in.to_vec()),
            Data::I32(slots.to_vec()),
            Data::I32(ids.clone()),
            Data::F32(gates.clone()),
            Data::I32(ready.to_vec()),
            Data::I32(vec![EPOCH]),
        ],
    )
    .unwrap();
    let want = identity_round_trip(&l, &ids, &tokens, &gates);
    for (i, (g, w)) in f32s(&back[0]).iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "element {i}: {g} vs {w}"
        );
    }
}
