//! Loopback all-to-all: sender and receiver are the same GPU, so dispatch and combine
//! copy between local buffers, with the flag protocol a cross-GPU transport needs.
//!
//! Slots are deterministic: a routing's slot in its expert's buffer is its rank among
//! the routings to that expert in token-major order, so the layout does not depend on
//! timing and matches a host reference exactly.

use super::{Access, CommBuffer, CommKernel, LayoutError, MoeLayout, Transport};
use crate::gpu::build::{i32_of, KernelBuilder};
use crate::gpu::kir::{Cmp, Elem, Special};

/// What a dispatch, identity experts and a combine give back: each token times the
/// sum of the gates of its routings that found a slot (a routing's slot is its rank
/// among its expert's routings in token order; beyond `capacity` it is dropped). The
/// host reference of `smelt gpu-check`'s exchange.
pub fn identity_round_trip(l: &MoeLayout, ids: &[i32], tokens: &[f32], gates: &[f32]) -> Vec<f32> {
    let (d, k) = (l.dim, l.top_k);
    let mut filled = vec![0usize; l.experts];
    let mut out = vec![0f32; l.tokens * d];
    for t in 0..l.tokens {
        let mut scale = 0f32;
        for j in 0..k {
            let e = ids[t * k + j] as usize;
            if filled[e] < l.capacity {
                scale += gates[t * k + j];
            }
            filled[e] += 1;
        }
        for c in 0..d {
            out[t * d + c] = tokens[t * d + c] * scale;
        }
    }
    out
}

/// Threads per communication block.
const BLOCK: u32 = 128;

/// Both ends on one GPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loopback;

fn buffer(name: &'static str, elem: Elem, len: usize, access: Access) -> CommBuffer {
    CommBuffer {
        name,
        elem,
        len,
        access,
    }
}

impl Transport for Loopback {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn dispatch(&self, l: &MoeLayout) -> Result<CommKernel, LayoutError> {
        l.check()?;
        let (n, d, k, e, cap) = (l.tokens, l.dim, l.top_k, l.experts, l.capacity);
        let buffers = vec![
            buffer("expert_in", Elem::F32, e * cap * d, Access::Write),
            buffer("slots", Elem::I32, n * k, Access::Write),
            buffer("ready", Elem::I32, e, Access::Write),
            buffer("tokens", Elem::F32, n * d, Access::Read),
            buffer("expert_ids", Elem::I32, n * k, Access::Read),
            buffer("epoch", Elem::I32, 1, Access::Read),
        ];
        let mut b = KernelBuilder::new("moe_dispatch_loopback", BLOCK);
        let s: Vec<_> = buffers
            .iter()
            .map(|x| b.param(x.name, x.elem, x.len))
            .collect();
        let (out, slots, ready, tokens, ids, epoch) = (s[0], s[1], s[2], s[3], s[4], s[5]);
        let tid = b.special(Special::Tid);
        let ntid = b.special(Special::Ntid);
        let ctaid = b.special(Special::Ctaid);
        let nctaid = b.special(Special::Nctaid);
        let ep = b.ld(epoch, 0);
        let leader = b.setp(Cmp::Eq, tid, 0);
        // Each block owns experts ctaid, ctaid + nctaid, ...: it alone fills their
        // buffers, so it can flag each one complete without a grid-wide barrier.
        b.for_range(ctaid, i32_of(e), nctaid, |b, expert| {
            let count = b.mov(0);
            b.for_range(0, i32_of(n * k), 1, |b, p| {
                let id = b.ld(ids, p);
                let hit = b.setp(Cmp::Eq, id, expert);
                b.if_then(hit, |b| {
                    let full = b.setp(Cmp::Ge, count, i32_of(cap));
                    let slot = b.selp(full, -1, count);
                    b.if_then(leader, |b| b.st(slots, p, slot));
                    let room = b.setp(Cmp::Lt, count, i32_of(cap));
                    b.if_then(room, |b| {
                        let token = b.div(p, i32_of(k));
                        let src = b.mul(token, i32_of(d));
                        let row = b.mul(expert, i32_of(cap));
                        let row = b.add(row, count);
                        let dst = b.mul(row, i32_of(d));
                        b.for_range(tid, i32_of(d), ntid, |b, c| {
                            let from = b.add(src, c);
                            let v = b.ld(tokens, from);
                            let to = b.add(dst, c);
                            b.st(out, to, v);
                        });
                    });
                    b.update(crate::gpu::kir::BinOp::Add, count, 1);
                });
            });
            // Every thread's copies happen before the leader publishes the flag.
            b.bar();
            b.if_then(leader, |b| b.set_flag(ready, expert, ep));
        });
        Ok(CommKernel {
            kernel: b.finish(),
            buffers,
        })
    }

    fn combine(&self, l: &MoeLayout) -> Result<CommKernel, LayoutError> {
        l.check()?;
        let (n, d, k, e, cap) = (l.tokens, l.dim, l.top_k, l.experts, l.capacity);
        let buffers = vec![
            buffer("tokens_out", Elem::F32, n * d, Access::Write),
            buffer("expert_out", Elem::F32, e * cap * d, Access::Read),
            buffer("slots", Elem::I32, n * k, Access::Read),
            buffer("expert_ids", Elem::I32, n * k, Access::Read),
            buffer("gates", Elem::F32, n * k, Access::Read),
            buffer("done", Elem::I32, e, Access::Read),
            buffer("epoch", Elem::I32, 1, Access::Read),
        ];
        let mut b = KernelBuilder::new("moe_combine_loopback", BLOCK);
        let s: Vec<_> = buffers
            .iter()
            .map(|x| b.param(x.name, x.elem, x.len))
            .collect();
        let (out, expert_out, slots, ids, gates, done, epoch) =
            (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
        let tid = b.special(Special::Tid);
        let ntid = b.special(Special::Ntid);
        let ctaid = b.special(Special::Ctaid);
        let nctaid = b.special(Special::Nctaid);
        let ep = b.ld(epoch, 0);
        // A block per token (grid-stride); its threads split the hidden dimension.
        b.for_range(ctaid, i32_of(n), nctaid, |b, token| {
            let row = b.mul(token, i32_of(d));
            b.for_range(tid, i32_of(d), ntid, |b, c| {
                let acc = b.mov(0.0f32);
                b.for_range(0, i32_of(k), 1, |b, j| {
                    let p = b.mul(token, i32_of(k));
                    let p = b.add(p, j);
                    let slot = b.ld(slots, p);
                    let kept = b.setp(Cmp::Ge, slot, 0);
                    b.if_then(kept, |b| {
                        let expert = b.ld(ids, p);
                        b.wait_flag(done, expert, ep);
                        let gate = b.ld(gates, p);
                        let at = b.mul(expert, i32_of(cap));
                        let at = b.add(at, slot);
                        let at = b.mul(at, i32_of(d));
                        let at = b.add(at, c);
                        let v = b.ld(expert_out, at);
                        let sum = b.fma(gate, v, acc);
                        b.assign(acc, sum);
                    });
                });
                let to = b.add(row, c);
                b.st(out, to, acc);
            });
        });
        Ok(CommKernel {
            kernel: b.finish(),
            buffers,
        })
    }
}
