//! TMA tensor maps: the driver's `CUtensorMap` for each `kir::TensorMap` of a kernel,
//! encoded once per loaded program (`cuTensorMapEncodeTiled`) over the device buffer
//! bound to the map's parameter, and passed to the launch by value.

use super::driver::{check_raw, has_symbol, CudaError};
use cudarc::driver::sys;
use smelt_compiler::gpu::kir::{Elem, Swizzle, TensorMap};
use std::mem::MaybeUninit;

/// The driver's element type for `elem`.
fn data_type(elem: Elem) -> sys::CUtensorMapDataType {
    use sys::CUtensorMapDataType as T;
    match elem {
        Elem::F32 => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        Elem::F16 => T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        Elem::BF16 => T::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        Elem::I32 => T::CU_TENSOR_MAP_DATA_TYPE_INT32,
        Elem::I64 => T::CU_TENSOR_MAP_DATA_TYPE_INT64,
        Elem::U8 => T::CU_TENSOR_MAP_DATA_TYPE_UINT8,
    }
}

/// Encodes `map` over the buffer of `elem` at device address `address`.
pub fn encode(
    map: &TensorMap,
    elem: Elem,
    address: sys::CUdeviceptr,
) -> Result<sys::CUtensorMap, CudaError> {
    if !has_symbol("cuTensorMapEncodeTiled") {
        return Err(CudaError::DriverTooOld(
            "the CUDA driver has no cuTensorMapEncodeTiled (TMA needs CUDA 12.0 or newer)".into(),
        ));
    }
    let rank = map.dims.len();
    let element_strides = vec![1u32; rank];
    let swizzle = match map.swizzle {
        Swizzle::None => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
    };
    let mut out = MaybeUninit::<sys::CUtensorMap>::zeroed();
    // SAFETY: the arrays hold `rank` dims, box sizes and element strides and `rank - 1`
    // strides, as the call reads; `out` has room for one map. The kernel checker
    // guarantees the sizes' invariants (16-byte strides, boxes of 1 to 256).
    check_raw(&format!("cuTensorMapEncodeTiled({})", map.name), unsafe {
        sys::cuTensorMapEncodeTiled(
            out.as_mut_ptr(),
            data_type(elem),
            rank as u32,
            address as *mut std::ffi::c_void,
            map.dims.as_ptr(),
            map.strides.as_ptr(),
            map.box_dims.as_ptr(),
            element_strides.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            // Out-of-bounds elements arrive as zeros.
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    })?;
    // SAFETY: written by the successful call (and zeroed before it).
    Ok(unsafe { out.assume_init() })
}
