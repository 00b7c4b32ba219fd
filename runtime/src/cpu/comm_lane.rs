//! The communication lane of a CPU run in a world of several ranks: the step loop
//! hands each collective's buffer to a thread of its own and goes on with the steps
//! that do not need the result (the schedule puts those first, see
//! `smelt_compiler::schedule`), so gradient sums travel while the backward pass
//! computes. The lane runs collectives in the order they were issued, which is the
//! schedule's order on every rank.

use crate::comm::{Collectives, CommError};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::Scope;

type Reply = Result<(Vec<f32>, f64), CommError>;

/// A collective's buffer on its way to the lane thread.
struct Job {
    values: Vec<f32>,
    reply: Sender<Reply>,
}

/// The sending end of the lane; dropping it ends the lane thread.
pub(super) struct Lane {
    jobs: Sender<Job>,
}

/// A sum back from the lane.
pub(super) struct Landed {
    /// The sum.
    pub sum: Vec<f32>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Seconds the lane spent on it.
    pub seconds: f64,
}

/// A sum not yet back from the lane.
pub(super) struct InFlight {
    reply: Receiver<Reply>,
    /// The value's shape, for when it returns to the environment.
    pub shape: Vec<usize>,
}

impl Lane {
    /// Starts the lane thread in `scope`, communicating in `world`.
    pub fn start<'scope>(scope: &'scope Scope<'scope, '_>, world: Arc<dyn Collectives>) -> Lane {
        let (jobs, queue) = channel::<Job>();
        scope.spawn(move || {
            for mut job in queue {
                let began = std::time::Instant::now();
                let sum = world
                    .all_reduce_f32(&mut job.values)
                    .map(|()| (job.values, began.elapsed().as_secs_f64()));
                // The loop may have stopped on an error of its own; nobody waits then.
                job.reply.send(sum).ok();
            }
        });
        Lane { jobs }
    }

    /// Sums `values` over the world on the lane thread.
    pub fn all_reduce(&self, values: Vec<f32>, shape: Vec<usize>) -> InFlight {
        let (reply, answer) = channel();
        let job = Job { values, reply };
        if let Err(unsent) = self.jobs.send(job) {
            // The lane thread is gone (it panicked): say so through the reply.
            let _ = unsent.0.reply.send(Err(lane_stopped()));
        }
        InFlight {
            reply: answer,
            shape,
        }
    }
}

impl InFlight {
    /// Waits for the sum.
    pub fn wait(self) -> Result<Landed, CommError> {
        let (sum, seconds) = self.reply.recv().unwrap_or_else(|_| Err(lane_stopped()))?;
        Ok(Landed {
            sum,
            shape: self.shape,
            seconds,
        })
    }
}

/// The error of a collective whose lane thread is gone (it panicked).
fn lane_stopped() -> CommError {
    CommError::Engine {
        engine: "lane",
        message: "the communication thread stopped".into(),
    }
}
