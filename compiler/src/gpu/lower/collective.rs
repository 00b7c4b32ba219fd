//! Communication kernels: `all_to_all` and `all_reduce` run on the SMs the plan
//! reserves for communication (`Role::Comm`: exactly `--comm-sms` blocks on stream 1),
//! so they overlap the compute kernels on the other SMs, as DeepSeek-V3's dispatch and
//! combine kernels do. The GPU runtime has one rank (no NCCL engine yet), so both are a
//! loopback: the send buffer is copied to the receive buffer, 16 bytes per access where
//! the size allows.

use super::{elem_of, KernelCall, Role, Shapes};
use crate::gpu::build::KernelBuilder;
use crate::gpu::kir::Operand;
use crate::ir::{Graph, ValueId};

/// Threads per communication block: a whole SM's worth of warps in one block, so the
/// reserved SMs each run one block.
pub(crate) const COMM_BLOCK: u32 = 1024;

pub(super) fn loopback(
    name: &str,
    g: &Graph,
    shapes: &Shapes,
    v: ValueId,
    x: ValueId,
) -> Result<KernelCall, String> {
    let n: usize = shapes[v.index()].iter().product();
    let elem = elem_of(g.ty(v).dtype)?;
    let width = if n.is_multiple_of(4) && elem.bytes() == 4 {
        4
    } else {
        1
    };
    let mut b = KernelBuilder::new(name, COMM_BLOCK);
    b.min_blocks_per_sm(1);
    let recv = b.param("recv", elem, n);
    let send = b.param("send", elem, n);
    b.grid_stride(n / width, |b, chunk| {
        let at = b.mul(chunk, width as i32);
        let xs = b.ld_vec(send, at, width);
        b.st_vec(recv, at, xs.into_iter().map(Operand::Reg).collect());
    });
    Ok(KernelCall {
        kernel: b.finish(),
        args: vec![v, x],
        work_blocks: super::blocks_for(n / width, 1, COMM_BLOCK),
        role: Role::Comm,
        flops: 0.0,
    })
}
