//! Collective communication between the ranks of a world: the engine under the IR's
//! collective ops (`all_reduce`).
//!
//! A world is a [`Collectives`] implementation: [`Solo`] (one rank, the default),
//! [`local::LocalWorld`] (ranks as threads of one process, for tests of any world size)
//! or, with the `mpi` cargo feature, [`mpi::MpiWorld`] (one rank per process, started
//! by `mpirun`). The backends find the world of the calling thread through
//! [`with_current`]; [`with_world`] sets it for a scope. Backends run a program's steps
//! on the thread that called them, so every collective of a step reaches the world of
//! that thread, in the program's (deterministic) order on every rank.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use smelt_compiler::ir::Op;
use std::cell::RefCell;
use std::sync::Arc;
use thiserror::Error;

/// Why a collective failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CommError {
    /// The ranks contributed buffers of different lengths (different models or
    /// configurations on different ranks).
    #[error("ranks disagree on the size of an all_reduce: {0:?} elements by rank")]
    SizeMismatch(Vec<usize>),
    /// A collective was compiled for another world size than the one it runs in.
    #[error("the program was compiled for {compiled} ranks but runs in a world of {running}")]
    WorldSize {
        /// The `ranks` of the op.
        compiled: u64,
        /// The world's size.
        running: usize,
    },
    /// The engine reported a failure.
    #[error("{engine}: {message}")]
    Engine {
        /// The engine (`mpi`, `local`).
        engine: &'static str,
        /// What it said.
        message: String,
    },
}

/// A world of ranks that can combine values: each call is collective, made by every
/// rank in the same order.
pub trait Collectives: Send + Sync {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `values` on every rank by their elementwise sum over all ranks.
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<(), CommError>;
    /// Replaces `values` on every rank by their elementwise sum over all ranks.
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), CommError>;
}

/// The world of one rank: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collectives for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _: &mut [f32]) -> Result<(), CommError> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64]) -> Result<(), CommError> {
        Ok(())
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<dyn Collectives>>> = const { RefCell::new(None) };
}

/// Runs `f` with `world` as the calling thread's world (the previous one is restored
/// afterwards, also when `f` panics).
pub fn with_world<R>(world: Arc<dyn Collectives>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn Collectives>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(world)));
    f()
}

/// Calls `f` with the calling thread's world ([`Solo`] outside [`with_world`]).
pub fn with_current<R>(f: impl FnOnce(&dyn Collectives) -> R) -> R {
    let world = CURRENT.with(|c| c.borrow().clone());
    match world {
        Some(w) => f(w.as_ref()),
        None => f(&Solo),
    }
}

/// The sum over the ranks of a world, in one element type.
pub type SumFn<T> = fn(&dyn Collectives, &mut [T]) -> Result<(), CommError>;

fn check_world(world: &dyn Collectives, ranks: u64) -> Result<(), CommError> {
    if world.size() as u64 != ranks {
        return Err(CommError::WorldSize {
            compiled: ranks,
            running: world.size(),
        });
    }
    Ok(())
}

/// Runs `all_gather` or `reduce_scatter` (`op`) on `values` of `shape` in the calling
/// thread's world, summing with `sum`; `None` for any other op.
pub fn gather_or_scatter<T: Copy + Default>(
    op: &Op,
    values: &[T],
    shape: &[usize],
    sum: SumFn<T>,
) -> Option<Result<Vec<T>, CommError>> {
    let (Op::AllGather { axis, ranks } | Op::ReduceScatter { axis, ranks }) = op else {
        return None;
    };
    let outer = shape[..*axis].iter().product();
    Some(with_current(|w| match op {
        Op::AllGather { .. } => all_gather(w, values, outer, *ranks, sum),
        _ => reduce_scatter(w, values, outer, *ranks, sum),
    }))
}

/// `all_gather` (see `ir::ops::collective`): every rank's `local` (row-major, `outer`
/// rows before the gathered axis) concatenated along that axis in rank order. Built on
/// the sum: each rank places its piece in a zeroed buffer of all the pieces and the
/// buffers are summed (exact: every element is one piece's value plus zeros), so every
/// engine has it; the traffic is the world's size times a native all-gather's.
pub fn all_gather<T: Copy + Default>(
    world: &dyn Collectives,
    local: &[T],
    outer: usize,
    ranks: u64,
    sum: SumFn<T>,
) -> Result<Vec<T>, CommError> {
    check_world(world, ranks)?;
    let (size, n) = (world.size(), local.len());
    let mut pieces = vec![T::default(); size * n];
    pieces[world.rank() * n..][..n].copy_from_slice(local);
    sum(world, &mut pieces)?;
    // `pieces` is rank-major; the result is row-major with the ranks along the axis.
    let chunk = n / outer.max(1);
    let mut out = Vec::with_capacity(size * n);
    for row in 0..outer {
        for rank in 0..size {
            out.extend_from_slice(&pieces[rank * n + row * chunk..][..chunk]);
        }
    }
    Ok(out)
}

/// `reduce_scatter` (see `ir::ops::collective`): the sum of `values` (row-major, `outer`
/// rows before the cut axis) over the ranks, of which this rank keeps its chunk along
/// the axis. Built on the whole sum, so every engine has it.
pub fn reduce_scatter<T: Copy>(
    world: &dyn Collectives,
    values: &[T],
    outer: usize,
    ranks: u64,
    sum: SumFn<T>,
) -> Result<Vec<T>, CommError> {
    check_world(world, ranks)?;
    let mut whole = values.to_vec();
    sum(world, &mut whole)?;
    let row = values.len() / outer.max(1);
    let chunk = row / world.size();
    let at = world.rank() * chunk;
    Ok((0..outer)
        .flat_map(|r| whole[r * row + at..][..chunk].iter().copied())
        .collect())
}

/// The calling thread's rank and world size.
pub fn current_rank() -> (usize, usize) {
    with_current(|w| (w.rank(), w.size()))
}

/// Whether every rank of `world` passed the same `key` (a fingerprint of its model and
/// settings). Collective. Each 16-bit piece of the key is summed with its square over
/// the ranks: the pieces agree exactly when the spread `n·Σx² − (Σx)²` is zero, and
/// every sum stays an exact integer in f64.
pub fn agree(world: &dyn Collectives, key: u64) -> Result<bool, CommError> {
    let pieces: Vec<f64> = (0..4)
        .map(|i| ((key >> (16 * i)) & 0xffff) as f64)
        .collect();
    let mut sums: Vec<f64> = pieces.iter().flat_map(|&x| [x, x * x]).collect();
    world.all_reduce_f64(&mut sums)?;
    let n = world.size() as f64;
    Ok(sums.chunks(2).all(|s| n * s[1] - s[0] * s[0] == 0.0))
}

/// The calling thread's world, to hand to a thread that communicates for it; `None`
/// for [`Solo`].
pub fn current_world() -> Option<Arc<dyn Collectives>> {
    CURRENT
        .with(|c| c.borrow().clone())
        .filter(|w| w.size() > 1)
}

/// What an MPI launcher told this process through its environment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Launch {
    /// The number of processes it started, where it says (PMIx alone gives only a rank).
    pub size: Option<usize>,
}

/// How an MPI launcher started this process (Open MPI, MPICH/Hydra and Slurm's PMI,
/// PMIx, MVAPICH), or `None` when none did. Read without MPI too: a build without it
/// must still refuse to run as one of several processes.
pub fn launched() -> Option<Launch> {
    const SIZES: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"];
    let started = SIZES
        .iter()
        .chain(&["PMIX_RANK"])
        .any(|v| std::env::var_os(v).is_some());
    started.then(|| Launch {
        size: SIZES
            .iter()
            .find_map(|v| std::env::var(v).ok()?.trim().parse().ok()),
    })
}
