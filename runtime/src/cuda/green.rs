//! Green contexts through cudarc's raw driver bindings (cudarc has no safe API for
//! them): query the SM granularity, split the SMs once, and make one stream per part.
//!
//! Device memory and the PTX module stay in the primary context: green contexts share
//! its memory, and a launch on a green context's stream runs on that context's SMs.

use super::driver::{check_raw, CudaError};
use super::partition::{granularity_from_trials, Granularity, SmSplit};
use cudarc::driver::sys;
use std::mem::MaybeUninit;

fn sm_count(r: &sys::CUdevResource) -> u32 {
    // SAFETY: every resource here is of type SM, so `sm` is the live union member.
    unsafe { r.__bindgen_anon_1.sm.smCount }
}

/// The device's whole SM resource.
fn device_sms(device: sys::CUdevice) -> Result<sys::CUdevResource, CudaError> {
    let mut r = MaybeUninit::<sys::CUdevResource>::zeroed();
    // SAFETY: writes one resource.
    check_raw("cuDeviceGetDevResource(SM)", unsafe {
        sys::cuDeviceGetDevResource(
            device,
            r.as_mut_ptr(),
            sys::CUdevResourceType::CU_DEV_RESOURCE_TYPE_SM,
        )
    })?;
    // SAFETY: initialised by the successful call (and zeroed before it).
    Ok(unsafe { r.assume_init() })
}

/// Splits off one group of at least `min_count` SMs; returns (group, remainder).
fn split_one(
    all: &sys::CUdevResource,
    min_count: u32,
) -> Result<(sys::CUdevResource, sys::CUdevResource), CudaError> {
    let mut group = MaybeUninit::<sys::CUdevResource>::zeroed();
    let mut rest = MaybeUninit::<sys::CUdevResource>::zeroed();
    let mut groups = 1u32;
    // SAFETY: room for one group and the remainder.
    check_raw("cuDevSmResourceSplitByCount", unsafe {
        sys::cuDevSmResourceSplitByCount(
            group.as_mut_ptr(),
            &mut groups,
            all,
            rest.as_mut_ptr(),
            0,
            min_count,
        )
    })?;
    if groups != 1 {
        return Err(CudaError::Invalid(format!(
            "cuDevSmResourceSplitByCount made {groups} groups of {min_count} SMs, not 1"
        )));
    }
    // SAFETY: both written by the successful call.
    Ok(unsafe { (group.assume_init(), rest.assume_init()) })
}

/// The hardware's partition granularity, from two trial splits (nothing is created).
/// The CUDA 12.8 `CUdevSmResource` holds only `smCount` (`minSmPartitionSize` and
/// `smCoscheduledAlignment` arrived with 13.0), so the driver is asked instead.
pub fn granularity(device: sys::CUdevice) -> Result<Granularity, CudaError> {
    let all = device_sms(device)?;
    let (smallest, _) = split_one(&all, 1)?;
    let smallest = sm_count(&smallest);
    let (next, _) = split_one(&all, smallest + 1)?;
    Ok(granularity_from_trials(smallest, sm_count(&next)))
}

/// One green context and a non-blocking stream on it.
#[derive(Debug)]
pub struct GreenStream {
    ctx: sys::CUgreenCtx,
    /// The stream; launches on it run on this context's SMs only.
    pub stream: sys::CUstream,
    /// SMs the context holds.
    pub sms: u32,
}

impl GreenStream {
    fn new(device: sys::CUdevice, mut part: sys::CUdevResource) -> Result<Self, CudaError> {
        let mut desc = MaybeUninit::<sys::CUdevResourceDesc>::zeroed();
        // SAFETY: one resource in, one descriptor out.
        check_raw("cuDevResourceGenerateDesc", unsafe {
            sys::cuDevResourceGenerateDesc(desc.as_mut_ptr(), &mut part, 1)
        })?;
        let mut ctx = MaybeUninit::<sys::CUgreenCtx>::zeroed();
        // CUDA 12.x drivers require CU_GREEN_CTX_DEFAULT_STREAM (later ones accept it).
        let flags = sys::CUgreenCtxCreate_flags::CU_GREEN_CTX_DEFAULT_STREAM as u32;
        // SAFETY: the descriptor was just generated for this device.
        check_raw("cuGreenCtxCreate", unsafe {
            sys::cuGreenCtxCreate(ctx.as_mut_ptr(), desc.assume_init(), device, flags)
        })?;
        // SAFETY: written by the successful call.
        let ctx = unsafe { ctx.assume_init() };
        let mut stream = MaybeUninit::<sys::CUstream>::zeroed();
        // SAFETY: green-context streams must be non-blocking.
        let made = check_raw("cuGreenCtxStreamCreate", unsafe {
            sys::cuGreenCtxStreamCreate(
                stream.as_mut_ptr(),
                ctx,
                sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                0,
            )
        });
        if let Err(e) = made {
            // SAFETY: created above, no stream on it.
            unsafe { sys::cuGreenCtxDestroy(ctx) };
            return Err(e);
        }
        Ok(GreenStream {
            ctx,
            // SAFETY: written by the successful call.
            stream: unsafe { stream.assume_init() },
            sms: sm_count(&part),
        })
    }
}

impl Drop for GreenStream {
    fn drop(&mut self) {
        // SAFETY: owned here; the program synchronised its streams before dropping.
        unsafe {
            sys::cuStreamDestroy_v2(self.stream);
            sys::cuGreenCtxDestroy(self.ctx);
        }
    }
}

/// Splits the device once into a compute part and a communication part of
/// `split.comm` SMs; returns (compute, comm).
pub fn create(
    device: sys::CUdevice,
    split: SmSplit,
) -> Result<(GreenStream, GreenStream), CudaError> {
    let all = device_sms(device)?;
    let (comm, rest) = split_one(&all, split.comm)?;
    if sm_count(&comm) != split.comm {
        return Err(CudaError::Invalid(format!(
            "asked the driver for {} communication SMs and got {}",
            split.comm,
            sm_count(&comm)
        )));
    }
    let comm = GreenStream::new(device, comm)?;
    let compute = GreenStream::new(device, rest)?;
    Ok((compute, comm))
}
