//! Runs a graph's GPU program on a real NVIDIA GPU through `cudarc`'s driver API.
//!
//! ```text
//! GpuProgram + SmPlan ──▶ CudaProgram: PTX module, one device buffer per Buffer,
//!                          two streams (compute 0, comm 1) on an SM partition,
//!                          launches in plan order, events for cross-stream waits
//! ```
//!
//! - `driver.rs`: finding the driver (no panic without one), the context, checked calls.
//! - `memory.rs`: plain device buffers and their host copies.
//! - `partition.rs`: SM partition arithmetic (pure, unit-tested).
//! - `green.rs`: the green-context partition through the raw driver bindings.
//! - `streams.rs`: the compute and communication streams on that partition.
//! - `program.rs`: loading, uploading, launching and downloading a program.
//! - `tensor_map.rs`: TMA tensor maps encoded by the driver for kernels that use TMA.
//! - `order.rs`: the device work of one run as data (fills, events, launches per
//!   stream) and the check that it is ordered.
//! - `probe.rs`: hand-made launches and CUDA-event timing for `smelt gpu-check`.
//!
//! cudarc loads `libcuda` lazily (`dynamic-loading`), so smelt builds and links on a
//! machine without CUDA; only `--device cuda` needs a driver.

mod driver;
mod green;
mod memory;
pub mod order;
pub mod partition;
pub mod probe;
mod program;
mod streams;
mod tensor_map;

pub use driver::{driver_present, CudaError, Gpu};
pub use memory::DeviceBuffer;
pub use partition::{Granularity, Partition};
pub use program::{CudaProgram, CudaRunner, KernelOccupancy};
pub use streams::{Lane, Streams};
