//! The MPI engine (cargo feature `mpi`): one rank per process, started by `mpirun`, on
//! the system's MPI library through the `mpi` crate (rsmpi).

use super::{Collectives, CommError};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};
use mpi::Threading;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The MPI world of this process. Dropping it finalises MPI (once per process).
pub struct MpiWorld {
    calls: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
    /// How long a collective may wait for the other ranks before every rank is stopped.
    timeout: Duration,
    // Declared last: dropped (MPI_Finalize) after the communicator.
    _universe: Universe,
}

// SAFETY: MPI is initialised with `Threading::Serialized` (or better), which allows
// calls from any thread as long as no two run at once; every call goes through the
// `calls` mutex. The universe is only dropped, once, with the value.
unsafe impl Send for MpiWorld {}
// SAFETY: as above: shared access reaches MPI only through the mutex.
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// Initialises MPI. `None` when the process was not started by an MPI launcher
    /// (a singleton run would be a world of one, which [`super::Solo`] already is) or
    /// MPI was initialised before. A collective that waits longer than `timeout` for
    /// the other ranks (one hangs, or its machine went away) stops them all.
    pub fn init(timeout: Duration) -> Result<Option<MpiWorld>, CommError> {
        if super::launched().is_none() {
            return Ok(None);
        }
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            return Ok(None);
        };
        if threading < Threading::Serialized {
            return Err(CommError::Engine {
                engine: "mpi",
                message: format!(
                    "the MPI library offers thread level {threading:?}; smelt needs Serialized"
                ),
            });
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Some(MpiWorld {
            calls: Mutex::new(world),
            rank,
            size,
            timeout,
            _universe: universe,
        }))
    }

    fn all_reduce<T: mpi::datatype::Equivalence + Copy>(
        &self,
        values: &mut [T],
    ) -> Result<(), CommError> {
        let world = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every rank first checks that all contribute the same length: MPI itself would
        // read past the shorter buffers.
        // One call: the maximum of (len, −len) is (longest, −shortest).
        let len = values.len() as i64;
        let mut extremes = [0i64; 2];
        self.within_timeout(&world, &[len, -len], &mut extremes, SystemOperation::max());
        let (longest, shortest) = (extremes[0], -extremes[1]);
        if longest != shortest {
            return Err(CommError::Engine {
                engine: "mpi",
                message: format!(
                    "ranks disagree on the size of an all_reduce ({shortest} to {longest} elements; rank {} has {len})",
                    self.rank
                ),
            });
        }
        let send = values.to_vec();
        self.within_timeout(&world, &send, values, SystemOperation::sum());
        Ok(())
    }

    /// An all-reduce that polls its request until it completes or the timeout passes.
    /// A collective cannot be cancelled, so on timeout MPI_Abort stops every rank (the
    /// launcher then ends the run with this rank's message).
    fn within_timeout<T: mpi::datatype::Equivalence>(
        &self,
        world: &SimpleCommunicator,
        send: &[T],
        recv: &mut [T],
        op: SystemOperation,
    ) {
        let deadline = Instant::now() + self.timeout;
        mpi::request::scope(|scope| {
            let mut request = world.immediate_all_reduce_into(scope, send, recv, op);
            for polls in 0u64.. {
                request = match request.test() {
                    Ok(_) => return,
                    Err(pending) => pending,
                };
                if Instant::now() >= deadline {
                    eprintln!(
                        "error: rank {}: the other ranks did not answer within {:?} (--comm-timeout); stopping every rank",
                        self.rank, self.timeout
                    );
                    world.abort(2);
                }
                // Spin briefly (collectives of one step follow each other closely),
                // then yield between polls: MPI progresses only inside the polls, so
                // sleeping between them made W2's sums 5× slower on 2 cores.
                if polls < 2_000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        })
    }
}

impl Collectives for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_f32(&self, values: &mut [f32]) -> Result<(), CommError> {
        self.all_reduce(values)
    }
    fn all_reduce_f64(&self, values: &mut [f64]) -> Result<(), CommError> {
        self.all_reduce(values)
    }
}
