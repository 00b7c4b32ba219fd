//! The CUDA driver: found at run time, never assumed.

use super::order::OrderError;
use cudarc::driver::{result::DriverError, sys, CudaContext};
use smelt_compiler::gpu::plan::SmPlanError;
use smelt_compiler::gpu::target::GpuTargetError;
use std::sync::Arc;

/// A failed CUDA step: what was being done and what the driver said.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CudaError {
    /// `libcuda` could not be loaded.
    #[error(
        "no CUDA driver found (libcuda could not be loaded): --device cuda needs an \
         NVIDIA GPU and its driver; --device gpusim runs the same kernels on the CPU"
    )]
    NoDriver,
    /// A driver call failed.
    #[error("CUDA {call} failed: {code}")]
    Driver {
        /// What was being done.
        call: String,
        /// The driver's name for the error (`CUDA_ERROR_OUT_OF_MEMORY`, ...).
        code: String,
    },
    /// There is no GPU of this number.
    #[error("no CUDA device {ordinal}: the driver sees {count}")]
    NoDevice {
        /// The GPU asked for.
        ordinal: usize,
        /// GPUs the driver sees.
        count: i32,
    },
    /// The driver lacks a function the program needs.
    #[error("{0}")]
    DriverTooOld(String),
    /// `--target` names another GPU than the one present.
    #[error(
        "--target {target} has {target_sms} SMs but {gpu} has {gpu_sms}: pick the target that matches the GPU"
    )]
    WrongTarget {
        /// The target's name.
        target: String,
        /// Its SMs.
        target_sms: u32,
        /// The GPU's name.
        gpu: String,
        /// Its SMs.
        gpu_sms: u32,
    },
    /// The `--target` name is unknown.
    #[error(transparent)]
    Target(#[from] GpuTargetError),
    /// The SMs cannot be planned (`--comm-sms`).
    #[error(transparent)]
    Plan(#[from] SmPlanError),
    /// An input, parameter or state was not given.
    #[error("no {what} given for %{value}")]
    Missing {
        /// "data" (a buffer to upload) or "value" (a feed of a run).
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The launch order does not order every read after its write (a bug).
    #[error("unordered run: {0}")]
    Unordered(#[from] OrderError),
    /// The program or the driver is not in the state a step expects (a buffer of the
    /// wrong size, a kernel not loaded, a split the driver made differently).
    #[error("{0}")]
    Invalid(String),
    /// A kernel ran but computed something wrong (the device checks).
    #[error("{0}")]
    WrongResult(String),
    /// A kernel could not be generated.
    #[error("{0}")]
    Kernel(String),
}

impl CudaError {
    /// The error for a machine without `libcuda`.
    pub fn no_driver() -> CudaError {
        CudaError::NoDriver
    }
}

/// Names a failed driver call, with the driver's own error name.
pub fn check<T>(what: &str, r: Result<T, DriverError>) -> Result<T, CudaError> {
    r.map_err(|e| {
        let name = e
            .error_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        CudaError::Driver {
            call: what.to_string(),
            code: name,
        }
    })
}

/// Turns a raw `CUresult` into a checked result.
pub fn check_raw(what: &str, r: sys::CUresult) -> Result<(), CudaError> {
    check(what, r.result())
}

/// True if `libcuda` can be loaded; every other driver call comes after this one,
/// because cudarc panics when it loads a missing library.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library; no driver function is called.
    unsafe { sys::is_culib_present() }
}

/// True if the loaded driver library exports `symbol` (a raw binding would panic on
/// a missing one).
pub fn has_symbol(symbol: &str) -> bool {
    // SAFETY: `culib` is only reached after `driver_present` returned true; looking a
    // name up calls nothing.
    driver_present() && unsafe { sys::culib().get::<*const ()>(symbol.as_bytes()).is_ok() }
}

/// One GPU, opened: its primary context and what the program needs to know about it.
#[derive(Debug)]
pub struct Gpu {
    /// The primary context, current on this thread.
    pub ctx: Arc<CudaContext>,
    /// The driver's CUDA version, e.g. 12080 for 12.8.
    pub driver_version: i32,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Device name.
    pub name: String,
}

impl Gpu {
    /// Opens device `ordinal`, or says why not.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        if !driver_present() {
            return Err(CudaError::no_driver());
        }
        let count = check(
            "device count (cuDeviceGetCount)",
            CudaContext::device_count(),
        )?;
        if ordinal as i32 >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = check("context creation", CudaContext::new(ordinal))?;
        let mut driver_version = 0;
        // SAFETY: writes one int.
        check_raw("cuDriverGetVersion", unsafe {
            sys::cuDriverGetVersion(&mut driver_version)
        })?;
        let sms = check(
            "SM count query",
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        )? as u32;
        let name = check("device name query", ctx.name())?;
        Ok(Gpu {
            ctx,
            driver_version,
            sms,
            name,
        })
    }
}
