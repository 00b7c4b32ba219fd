//! Plain device allocations (`cuMemAlloc`, never managed memory) holding one buffer
//! each, in the byte layout of the evaluator's `Data` (the kernels' layout).

use super::driver::{check, CudaError};
use cudarc::driver::{result, sys};
use smelt_compiler::gpu::eval::Data;
use smelt_compiler::gpu::kir::Elem;

/// One device buffer of `len` elements of `elem`.
#[derive(Debug)]
pub struct DeviceBuffer {
    /// Device address (what the kernel's `.param .u64` receives).
    pub ptr: sys::CUdeviceptr,
    /// Element type.
    pub elem: Elem,
    /// Elements.
    pub len: usize,
}

impl DeviceBuffer {
    /// Allocates room for `len` elements of `elem`; the context must be current.
    pub fn alloc(elem: Elem, len: usize) -> Result<DeviceBuffer, CudaError> {
        // A zero-byte cuMemAlloc is an error; an empty buffer still needs an address.
        let bytes = (len * elem.bytes()).max(1);
        // SAFETY: a plain allocation; freed in Drop.
        let ptr = check("cuMemAlloc", unsafe { result::malloc_sync(bytes) })?;
        Ok(DeviceBuffer { ptr, elem, len })
    }

    /// Sets every byte to zero (what the evaluator starts computed buffers with).
    pub fn zero(&self) -> Result<(), CudaError> {
        let bytes = (self.len * self.elem.bytes()).max(1);
        // SAFETY: within this allocation.
        check("cuMemsetD8", unsafe {
            result::memset_d8_sync(self.ptr, 0, bytes)
        })
    }

    /// Copies host data in; it must match the buffer's type and length.
    pub fn upload(&self, data: &Data) -> Result<(), CudaError> {
        if data.elem() != self.elem || data.len() != self.len {
            return Err(CudaError(format!(
                "upload of {} {:?} values into a buffer of {} {:?}",
                data.len(),
                data.elem(),
                self.len,
                self.elem
            )));
        }
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: the lengths and element types match, so the byte counts do.
        let r = unsafe {
            match data {
                Data::F32(v) => result::memcpy_htod_sync(self.ptr, v),
                Data::F16(v) | Data::BF16(v) => result::memcpy_htod_sync(self.ptr, v),
                Data::I32(v) => result::memcpy_htod_sync(self.ptr, v),
                Data::I64(v) => result::memcpy_htod_sync(self.ptr, v),
                Data::U8(v) => result::memcpy_htod_sync(self.ptr, v),
            }
        };
        check("cuMemcpyHtoD", r)
    }

    /// Copies the buffer out.
    pub fn download(&self) -> Result<Data, CudaError> {
        let mut data = Data::zeros(self.elem, self.len);
        if self.len == 0 {
            return Ok(data);
        }
        // SAFETY: `data` has exactly this buffer's type and length.
        let r = unsafe {
            match &mut data {
                Data::F32(v) => result::memcpy_dtoh_sync(v, self.ptr),
                Data::F16(v) | Data::BF16(v) => result::memcpy_dtoh_sync(v, self.ptr),
                Data::I32(v) => result::memcpy_dtoh_sync(v, self.ptr),
                Data::I64(v) => result::memcpy_dtoh_sync(v, self.ptr),
                Data::U8(v) => result::memcpy_dtoh_sync(v, self.ptr),
            }
        };
        check("cuMemcpyDtoH", r)?;
        Ok(data)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc`, freed once; the owner synchronises first.
        // A failure here (a context already torn down) has nowhere to go.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}
