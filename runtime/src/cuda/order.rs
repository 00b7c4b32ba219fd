//! The order of one run's device work: every fill, launch, event record and event wait
//! with its stream, as data. `CudaProgram` issues exactly this list, and
//! `check_order` proves (without a GPU) that every launch sees the fills and writes it
//! depends on.
//!
//! Why it matters: the synchronous `cuMemsetD8`/`cuMemcpyHtoD` are asynchronous with
//! respect to non-blocking (and green-context) streams, so a fill issued that way may
//! land after a kernel wrote the buffer. Fills therefore go on the compute stream, and
//! the communication stream waits for an event recorded after the last of them.

use smelt_compiler::gpu::plan::SmPlan;
use smelt_compiler::gpu::GpuProgram;
use smelt_compiler::ir::ValueId;
use std::collections::HashMap;

/// Stream 0 (compute) or 1 (communication), as in the SM plan.
pub type Stream = u32;

/// One step of a run, in issue order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOp {
    /// Writes a whole buffer (an upload, a constant, or zeros) on a stream; `None` is
    /// a host-synchronous driver call, ordered with respect to no non-blocking stream.
    Fill {
        /// The buffer's value.
        value: ValueId,
        /// Where it is issued.
        stream: Option<Stream>,
    },
    /// Records `event` on `stream`.
    Record {
        /// Event index (see `RunOrder::events`).
        event: usize,
        /// The stream.
        stream: Stream,
    },
    /// Makes `stream` wait for `event`.
    Wait {
        /// The waiting stream.
        stream: Stream,
        /// Event index.
        event: usize,
    },
    /// Launches call `call` of the program on `stream`.
    Launch {
        /// Call index.
        call: usize,
        /// The stream.
        stream: Stream,
    },
}

/// The steps of a run, split where `CudaProgram::upload` ends and `launch` begins,
/// and how many events they use: one per launch (the launch's own index) and one more,
/// recorded after the last fill (index `calls.len()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOrder {
    /// Every buffer filled, and the event that tells the other stream so.
    pub fills: Vec<DeviceOp>,
    /// The launches in plan order with their waits and records.
    pub launches: Vec<DeviceOp>,
    /// Events needed.
    pub events: usize,
}

/// The run of `program` under `plan`: every buffer filled on the compute stream, the
/// communication stream made to wait for those fills, then the launches in plan order,
/// each waiting for its producers on the other stream and recording its own event.
pub fn run_order(program: &GpuProgram, plan: &SmPlan) -> RunOrder {
    let filled = program.calls.len();
    let mut fills: Vec<DeviceOp> = program
        .buffers
        .iter()
        .map(|b| DeviceOp::Fill {
            value: b.value,
            stream: Some(0),
        })
        .collect();
    fills.push(DeviceOp::Record {
        event: filled,
        stream: 0,
    });
    fills.push(DeviceOp::Wait {
        stream: 1,
        event: filled,
    });
    let mut launches = Vec::new();
    for (i, launch) in plan.launches.iter().enumerate() {
        for &w in &launch.waits_for {
            launches.push(DeviceOp::Wait {
                stream: launch.stream,
                event: w,
            });
        }
        launches.push(DeviceOp::Launch {
            call: i,
            stream: launch.stream,
        });
        launches.push(DeviceOp::Record {
            event: i,
            stream: launch.stream,
        });
    }
    RunOrder {
        fills,
        launches,
        events: filled + 1,
    }
}

/// A launch that the order does not place after what it depends on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A wait for an event nothing recorded before it.
    #[error("stream {stream} waits for event {event}, which was never recorded")]
    UnrecordedEvent {
        /// The waiting stream.
        stream: Stream,
        /// The event.
        event: usize,
    },
    /// A launch may read or write a buffer before its last write lands.
    #[error(
        "launch {call} ({kernel}) on stream {stream} may run before %{value} is written{}",
        if *.host_fill { " (a host-synchronous fill is not ordered with non-blocking streams)" } else { "" }
    )]
    BeforeWrite {
        /// Call index.
        call: usize,
        /// Its kernel.
        kernel: String,
        /// Its stream.
        stream: Stream,
        /// The buffer's value.
        value: String,
        /// The write is a host-synchronous fill.
        host_fill: bool,
    },
    /// A launch may overwrite its output while another stream still reads it.
    #[error("launch {call} ({kernel}) on stream {stream} may overwrite %{value} while stream {reader} still reads it")]
    BeforeRead {
        /// Call index.
        call: usize,
        /// Its kernel.
        kernel: String,
        /// Its stream.
        stream: Stream,
        /// The buffer's value.
        value: String,
        /// The reading stream.
        reader: Stream,
    },
}

/// A point on a stream: (stream, operations issued on it so far).
type Point = (Stream, u64);

/// Checks that in `order` every launch happens after the last write of each buffer it
/// touches, and after every earlier read of the buffer it writes (its first argument),
/// by stream order or by event waits. Says which launch and which buffer when not.
pub fn check_order(program: &GpuProgram, order: &RunOrder) -> Result<(), OrderError> {
    // Vector clocks: clock[s][t] = how many of stream t's operations stream s has seen.
    let mut clock = [[0u64; 2]; 2];
    let mut events: Vec<Option<[u64; 2]>> = vec![None; order.events];
    let mut last_write: HashMap<ValueId, Option<Point>> = HashMap::new();
    let mut reads: HashMap<ValueId, Vec<Point>> = HashMap::new();
    let name = |v: ValueId| program.graph.value(v).name.clone();
    let seen = |clock: &[[u64; 2]; 2], s: Stream, p: Option<Point>| match p {
        // A host-synchronous fill is ordered with respect to no stream.
        None => false,
        Some((t, n)) => clock[s as usize][t as usize] >= n,
    };
    for op in order.fills.iter().chain(&order.launches) {
        match *op {
            DeviceOp::Fill { value, stream } => {
                let point = stream.map(|s| {
                    clock[s as usize][s as usize] += 1;
                    (s, clock[s as usize][s as usize])
                });
                last_write.insert(value, point);
            }
            DeviceOp::Record { event, stream } => {
                let s = stream as usize;
                clock[s][s] += 1;
                events[event] = Some(clock[s]);
            }
            DeviceOp::Wait { stream, event } => {
                let recorded =
                    events[event].ok_or(OrderError::UnrecordedEvent { stream, event })?;
                let s = stream as usize;
                for t in 0..2 {
                    clock[s][t] = clock[s][t].max(recorded[t]);
                }
            }
            DeviceOp::Launch { call, stream } => {
                let c = &program.calls[call];
                for &v in &c.args {
                    if let Some(&w) = last_write.get(&v) {
                        if !seen(&clock, stream, w) {
                            return Err(OrderError::BeforeWrite {
                                call,
                                kernel: c.kernel.name.clone(),
                                stream,
                                value: name(v),
                                host_fill: w.is_none(),
                            });
                        }
                    }
                }
                let out = c.args[0];
                if let Some(r) = reads
                    .get(&out)
                    .and_then(|rs| rs.iter().find(|&&r| !seen(&clock, stream, Some(r))))
                {
                    return Err(OrderError::BeforeRead {
                        call,
                        kernel: c.kernel.name.clone(),
                        stream,
                        value: name(out),
                        reader: r.0,
                    });
                }
                let s = stream as usize;
                clock[s][s] += 1;
                let point = (stream, clock[s][s]);
                for &v in &c.args[1..] {
                    reads.entry(v).or_default().push(point);
                }
                last_write.insert(out, Some(point));
                reads.remove(&out);
            }
        }
    }
    Ok(())
}
