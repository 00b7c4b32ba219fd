//! The compute stream (0) and the communication stream (1) on an SM partition.

use super::driver::{check, has_symbol, CudaError, Gpu};
use super::green::{self, GreenStream};
use super::partition::{choose, Fallback, Partition, SmSplit, GREEN_SYMBOLS};
use cudarc::driver::{result, sys};

/// One of the two streams, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Stream 0: compute kernels.
    Compute,
    /// Stream 1: communication kernels.
    Comm,
}

/// What keeps the streams alive.
#[derive(Debug)]
enum Owner {
    Green {
        _compute: GreenStream,
        _comm: GreenStream,
    },
    Plain,
}

/// The two streams of a program and the partition they run on.
#[derive(Debug)]
pub struct Streams {
    /// Stream 0: compute kernels.
    pub compute: sys::CUstream,
    /// Stream 1: communication kernels.
    pub comm: sys::CUstream,
    /// How the SMs are shared.
    pub partition: Partition,
    owner: Owner,
}

impl Streams {
    /// Makes the streams for `comm_sms` communication SMs: green contexts where the
    /// driver has them and events recorded on one green stream order the other
    /// (`probe::cross_stream_probe`), otherwise two plain streams under the plan's grid
    /// budgets.
    pub fn new(gpu: &Gpu, comm_sms: u32) -> Result<Streams, CudaError> {
        let streams = Streams::partitioned(gpu, comm_sms)?;
        if !matches!(streams.partition, Partition::Green(_)) {
            return Ok(streams);
        }
        match super::probe::cross_stream_probe(gpu, &streams) {
            Ok(()) => Ok(streams),
            Err(e) => {
                drop(streams);
                Streams::plain(Partition::PersistentGrid {
                    split: SmSplit::requested(gpu.sms, comm_sms),
                    why: Fallback::CrossStreamEvents(e.to_string()),
                })
            }
        }
    }

    /// Green contexts where the driver offers them, else plain streams.
    fn partitioned(gpu: &Gpu, comm_sms: u32) -> Result<Streams, CudaError> {
        let device = gpu.ctx.cu_device();
        let can_try = comm_sms > 0
            && gpu.driver_version >= 12040
            && GREEN_SYMBOLS.iter().all(|s| has_symbol(s));
        // A failed granularity query is a reason to fall back, not to stop.
        let granularity = if can_try {
            green::granularity(device).ok()
        } else {
            None
        };
        let mut partition = choose(
            gpu.sms,
            comm_sms,
            gpu.driver_version,
            has_symbol,
            granularity,
        );
        if let Partition::Green(split) = partition {
            match green::create(device, split) {
                Ok((compute, comm)) => {
                    // What the driver made, which the split predicted.
                    let partition = Partition::Green(SmSplit {
                        compute: compute.sms,
                        comm: comm.sms,
                    });
                    return Ok(Streams {
                        compute: compute.stream,
                        comm: comm.stream,
                        partition,
                        owner: Owner::Green {
                            _compute: compute,
                            _comm: comm,
                        },
                    });
                }
                Err(e) => {
                    partition = Partition::PersistentGrid {
                        split: SmSplit::requested(gpu.sms, comm_sms),
                        why: Fallback::Unsplittable(e.to_string()),
                    }
                }
            }
        }
        Streams::plain(partition)
    }

    /// Two non-blocking streams in the primary context.
    fn plain(partition: Partition) -> Result<Streams, CudaError> {
        let kind = || result::stream::StreamKind::NonBlocking;
        let compute = check("cuStreamCreate", result::stream::create(kind()))?;
        let comm = match check("cuStreamCreate", result::stream::create(kind())) {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: created just above, unused.
                let _ = unsafe { result::stream::destroy(compute) };
                return Err(e);
            }
        };
        Ok(Streams {
            compute,
            comm,
            partition,
            owner: Owner::Plain,
        })
    }

    /// The stream of a lane.
    pub fn lane(&self, lane: Lane) -> sys::CUstream {
        match lane {
            Lane::Compute => self.compute,
            Lane::Comm => self.comm,
        }
    }

    /// The stream of plan stream number `s`.
    pub fn get(&self, s: u32) -> sys::CUstream {
        if s == 0 {
            self.compute
        } else {
            self.comm
        }
    }

    /// Waits for both streams to finish.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        for s in [self.compute, self.comm] {
            // SAFETY: a live stream.
            check("cuStreamSynchronize", unsafe {
                result::stream::synchronize(s)
            })?;
        }
        Ok(())
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let _ = self.synchronize();
        if let Owner::Plain = self.owner {
            // SAFETY: created in `new`, idle after the synchronisation.
            unsafe {
                let _ = result::stream::destroy(self.compute);
                let _ = result::stream::destroy(self.comm);
            }
        }
    }
}
