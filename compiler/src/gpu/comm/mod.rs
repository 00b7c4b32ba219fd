//! Communication kernels for expert parallelism: MoE all-to-all dispatch and combine.
//!
//! A [`Transport`] turns a [`MoeLayout`] into kernels that run on the communication
//! SMs (`Role::Comm`: exactly `comm_sms` blocks, one per SM, on stream 1). Buffers
//! have the layout they would have across GPUs: the expert buffers are
//! `[experts, capacity, dim]`, and rank `r` of `ranks` owns experts
//! `r·E/R .. (r+1)·E/R`, i.e. the contiguous slice `[E/R, capacity, dim]`.
//!
//! Completion is signalled with flags, as between GPUs: dispatch sets `ready[e]` to the
//! step's epoch once expert `e`'s buffer is complete; combine waits until `done[e]`
//! (set by whoever produced expert `e`'s outputs) reaches the epoch before reading.
//!
//! - `loopback.rs`: both ends on one GPU (the buffers are local).
//!
//! Later transports implement the same trait: peer-to-peer (the same kernels writing
//! through peer-mapped pointers into the owning rank's slice) and NCCL (host-issued
//! send/recv on the comm stream, with the same buffers and flags).

pub mod loopback;

use super::kir::{Elem, Kernel};

/// Sizes of one MoE layer's token exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeLayout {
    /// Tokens on this rank.
    pub tokens: usize,
    /// Hidden size.
    pub dim: usize,
    /// Experts each token goes to.
    pub top_k: usize,
    /// Experts in all.
    pub experts: usize,
    /// Token slots per expert; routings beyond it are dropped.
    pub capacity: usize,
    /// Ranks the experts are spread over (1 for loopback).
    pub ranks: usize,
}

/// A layout the communication kernels cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The experts do not split evenly over the ranks.
    #[error("{experts} experts do not split evenly over {ranks} ranks")]
    UnevenSplit {
        /// Experts.
        experts: usize,
        /// Ranks.
        ranks: usize,
    },
    /// A buffer too large for i32 indexing, or a `top_k` of 0 or above the experts.
    #[error("unsupported MoE layout {0:?}")]
    Unsupported(MoeLayout),
}

impl MoeLayout {
    /// Checks the sizes fit the kernels' i32 indexing and the rank split.
    pub fn check(&self) -> Result<(), LayoutError> {
        if self.ranks == 0 || !self.experts.is_multiple_of(self.ranks) {
            return Err(LayoutError::UnevenSplit {
                experts: self.experts,
                ranks: self.ranks,
            });
        }
        let largest = (self.experts * self.capacity * self.dim).max(self.tokens * self.dim);
        if largest > i32::MAX as usize || self.top_k == 0 || self.top_k > self.experts {
            return Err(LayoutError::Unsupported(*self));
        }
        Ok(())
    }

    /// Experts one rank owns.
    pub fn experts_per_rank(&self) -> usize {
        self.experts / self.ranks
    }
}

/// What a kernel does with one of its buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only read.
    Read,
    /// Written (possibly also read).
    Write,
}

/// One buffer parameter of a communication kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct CommBuffer {
    /// Its role (`tokens`, `expert_in`, `ready`, ...).
    pub name: &'static str,
    /// Element type.
    pub elem: Elem,
    /// Elements.
    pub len: usize,
    /// Read or written.
    pub access: Access,
}

/// A communication kernel and its buffers, in parameter order.
#[derive(Clone, Debug)]
pub struct CommKernel {
    /// The kernel (grid-stride over its work, so any block count is correct).
    pub kernel: Kernel,
    /// Its buffer parameters.
    pub buffers: Vec<CommBuffer>,
}

impl CommKernel {
    /// The parameter index of the buffer called `name`.
    pub fn param(&self, name: &str) -> Option<usize> {
        self.buffers.iter().position(|b| b.name == name)
    }
}

/// A way of moving tokens between ranks.
pub trait Transport {
    /// Short name (`loopback`, later `p2p`, `nccl`).
    fn name(&self) -> &'static str;
    /// Tokens `[N, dim]` routed by expert ids `[N, top_k]` into expert buffers
    /// `[E, capacity, dim]`, also writing each routing's slot (−1: dropped) and
    /// setting `ready[e]` to the epoch.
    fn dispatch(&self, layout: &MoeLayout) -> Result<CommKernel, LayoutError>;
    /// Expert outputs `[E, capacity, dim]` back into `[N, dim]`, summed over each
    /// token's experts weighted by its gates, after waiting for `done[e] ≥ epoch`.
    fn combine(&self, layout: &MoeLayout) -> Result<CommKernel, LayoutError>;
}
