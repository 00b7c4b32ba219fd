//! Plain device allocations (`cuMemAlloc`, never managed memory) holding one buffer
//! each, in the byte layout of the evaluator's `Data` (the kernels' layout).

use super::driver::{check, CudaError};
use super::streams::{Lane, Streams};
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

    /// Sets every byte to zero (what the evaluator starts computed buffers with), in
    /// `stream`'s order: the synchronous `cuMemsetD8` is not ordered with non-blocking
    /// streams, so a later kernel on one could run first.
    pub(crate) fn zero_on(&self, stream: sys::CUstream) -> Result<(), CudaError> {
        let bytes = (self.len * self.elem.bytes()).max(1);
        // SAFETY: within this allocation.
        check("cuMemsetD8Async", unsafe {
            result::memset_d8_async(self.ptr, 0, bytes, stream)
        })
    }

    /// Sets every byte to zero in `lane`'s order, without waiting (a reset between
    /// runs of kernels on that lane).
    pub fn zero_in_order(&self, streams: &Streams, lane: Lane) -> Result<(), CudaError> {
        self.zero_on(streams.lane(lane))
    }

    /// Copies host data in, in `stream`'s order; it must match the buffer's type and
    /// length. The host data may be dropped on return: pageable memory is staged
    /// before `cuMemcpyHtoDAsync` returns.
    pub(crate) fn upload_on(&self, stream: sys::CUstream, data: &Data) -> Result<(), CudaError> {
        if data.elem() != self.elem || data.len() != self.len {
            return Err(CudaError::Invalid(format!(
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
                Data::F32(v) => result::memcpy_htod_async(self.ptr, v, stream),
                Data::F16(v) | Data::BF16(v) => result::memcpy_htod_async(self.ptr, v, stream),
                Data::I32(v) => result::memcpy_htod_async(self.ptr, v, stream),
                Data::I64(v) => result::memcpy_htod_async(self.ptr, v, stream),
                Data::U8(v) => result::memcpy_htod_async(self.ptr, v, stream),
            }
        };
        check("cuMemcpyHtoDAsync", r)
    }

    /// Copies host data in on a lane of `streams` and waits for it (set-up outside a
    /// program's run).
    pub fn upload_blocking(
        &self,
        streams: &Streams,
        lane: Lane,
        data: &Data,
    ) -> Result<(), CudaError> {
        let stream = streams.lane(lane);
        self.upload_on(stream, data)?;
        // SAFETY: a live stream.
        check("cuStreamSynchronize", unsafe {
            result::stream::synchronize(stream)
        })
    }

    /// Copies the buffer out; the streams that wrote it must have been synchronised.
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
