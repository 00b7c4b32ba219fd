//! The CUDA driver: found at run time, never assumed.

use cudarc::driver::{result::DriverError, sys, CudaContext};
use std::sync::Arc;

/// A failed CUDA step: what was being done and what the driver said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CudaError(pub String);

impl CudaError {
    /// The error for a machine without `libcuda`.
    pub fn no_driver() -> CudaError {
        CudaError(
            "no CUDA driver found (libcuda could not be loaded): --device cuda needs an \
             NVIDIA GPU and its driver; --device gpusim runs the same kernels on the CPU"
                .into(),
        )
    }
}

/// Names a failed driver call, with the driver's own error name.
pub fn check<T>(what: &str, r: Result<T, DriverError>) -> Result<T, CudaError> {
    r.map_err(|e| {
        let name = e
            .error_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        CudaError(format!("CUDA {what} failed: {name}"))
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
            return Err(CudaError(format!(
                "no CUDA device {ordinal}: the driver sees {count}"
            )));
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
