//! Hand-made launches for measurements (`smelt gpu-check`): kernels outside a
//! `GpuProgram` (communication kernels, the `%smid` recorder) on chosen streams, and
//! CUDA-event timing.

use super::driver::{check, check_raw, CudaError, Gpu};
use super::memory::DeviceBuffer;
use super::streams::{Lane, Streams};
use cudarc::driver::{result, sys, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use smelt_compiler::gpu::build::KernelBuilder;
use smelt_compiler::gpu::eval::Data;
use smelt_compiler::gpu::kir::{Elem, Kernel, Special};
use smelt_compiler::gpu::ptx;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

/// A module of kernels, launchable by name.
#[derive(Debug)]
pub struct KernelSet {
    _module: Arc<CudaModule>,
    functions: HashMap<String, (CudaFunction, u32)>,
}

impl KernelSet {
    /// Loads `kernels` into `gpu`'s context.
    pub fn load(gpu: &Gpu, kernels: &[Kernel]) -> Result<KernelSet, CudaError> {
        check("making the context current", gpu.ctx.bind_to_thread())?;
        let module = check(
            "PTX module load (cuModuleLoadData)",
            gpu.ctx.load_module(Ptx::from_src(ptx::module(kernels))),
        )?;
        let mut functions = HashMap::new();
        for k in kernels {
            let f = check(
                &format!("cuModuleGetFunction({})", k.name),
                module.load_function(&k.name),
            )?;
            functions.insert(k.name.clone(), (f, k.block));
        }
        Ok(KernelSet {
            _module: module,
            functions,
        })
    }

    /// Launches kernel `name` with `grid` blocks on a lane of `streams`, one buffer per
    /// parameter.
    pub fn launch(
        &self,
        name: &str,
        grid: u32,
        streams: &Streams,
        lane: Lane,
        buffers: &[&DeviceBuffer],
    ) -> Result<(), CudaError> {
        let stream = streams.lane(lane);
        let (f, block) = self
            .functions
            .get(name)
            .ok_or_else(|| CudaError::Invalid(format!("no kernel {name} loaded")))?;
        let mut addresses: Vec<sys::CUdeviceptr> = buffers.iter().map(|b| b.ptr).collect();
        let mut params: Vec<*mut c_void> = addresses
            .iter_mut()
            .map(|a| a as *mut sys::CUdeviceptr as *mut c_void)
            .collect();
        // SAFETY: the caller passes one buffer per parameter, as the kernel declares.
        let r = unsafe {
            result::launch_kernel(
                f.cu_function(),
                (grid, 1, 1),
                (*block, 1, 1),
                0,
                stream,
                &mut params,
            )
        };
        check(&format!("launch of {name} (cuLaunchKernel)"), r)
    }
}

/// A pair of timing events.
#[derive(Debug)]
pub struct Stopwatch {
    start: sys::CUevent,
    end: sys::CUevent,
}

impl Stopwatch {
    /// Two events with timing enabled.
    pub fn new() -> Result<Stopwatch, CudaError> {
        let flags = || sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = check("cuEventCreate", result::event::create(flags()))?;
        let end = match check("cuEventCreate", result::event::create(flags())) {
            Ok(e) => e,
            Err(err) => {
                // SAFETY: created above, unused.
                let _ = unsafe { result::event::destroy(start) };
                return Err(err);
            }
        };
        Ok(Stopwatch { start, end })
    }

    /// Milliseconds of GPU time from the start event (recorded on `from`, which both
    /// streams wait for) until both streams have finished what `work` enqueues.
    pub fn time(
        &self,
        streams: &Streams,
        from: Lane,
        work: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<f32, CudaError> {
        let until = [streams.compute, streams.comm];
        let from = streams.lane(from);
        // SAFETY: live events and streams throughout.
        unsafe {
            check("cuEventRecord", result::event::record(self.start, from))?;
            for &s in until.iter().filter(|&&s| s != from) {
                check_raw(
                    "cuStreamWaitEvent",
                    sys::cuStreamWaitEvent(s, self.start, 0),
                )?;
            }
            work()?;
            // The end waits for every stream: record on each, join into `from`.
            for &s in until.iter().filter(|&&s| s != from) {
                check("cuEventRecord", result::event::record(self.end, s))?;
                check_raw(
                    "cuStreamWaitEvent",
                    sys::cuStreamWaitEvent(from, self.end, 0),
                )?;
            }
            check("cuEventRecord", result::event::record(self.end, from))?;
            check("cuEventSynchronize", result::event::synchronize(self.end))?;
            check(
                "cuEventElapsedTime",
                result::event::elapsed(self.start, self.end),
            )
        }
    }
}

impl Drop for Stopwatch {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::event::destroy(self.start);
            let _ = result::event::destroy(self.end);
        }
    }
}

/// The median of `samples` (sorted in place).
pub fn median(samples: &mut [f32]) -> f32 {
    samples.sort_by(f32::total_cmp);
    match samples.len() {
        0 => f32::NAN,
        n if n % 2 == 1 => samples[n / 2],
        n => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
    }
}

/// A kernel that records each block's `%smid` into `smids[ctaid]` and spins for
/// `spin` iterations of dependent arithmetic, so concurrent launches stay resident
/// together long enough to share the GPU.
pub fn smid_recorder(name: &str, blocks: usize) -> Kernel {
    let mut b = KernelBuilder::new(name, 128);
    let smids = b.param("smids", Elem::I32, blocks);
    let sink = b.param("sink", Elem::F32, blocks);
    let spin = b.param("spin", Elem::I32, 1);
    let tid = b.special(Special::Tid);
    let ctaid = b.special(Special::Ctaid);
    let sm = b.special(Special::SmId);
    let turns = b.ld(spin, 0);
    let x = b.mov(1.0f32);
    b.for_range(0, turns, 1, |b, _| {
        let y = b.fma(x, 0.999_999f32, 1e-7f32);
        b.assign(x, y);
    });
    let leader = b.setp(smelt_compiler::gpu::kir::Cmp::Eq, tid, 0);
    let inside = b.setp(
        smelt_compiler::gpu::kir::Cmp::Lt,
        ctaid,
        smelt_compiler::gpu::build::i32_of(blocks),
    );
    b.if_then(leader, |b| {
        b.if_then(inside, |b| {
            b.st(smids, ctaid, sm);
            b.st(sink, ctaid, x);
        })
    });
    b.finish()
}

/// A one-thread kernel that copies `src[0]` into `dst[0]`.
pub fn first_element_copier(name: &str) -> Kernel {
    let mut b = KernelBuilder::new(name, 32);
    let src = b.param("src", Elem::I32, 1);
    let dst = b.param("dst", Elem::I32, 1);
    let tid = b.special(Special::Tid);
    let leader = b.setp(smelt_compiler::gpu::kir::Cmp::Eq, tid, 0);
    b.if_then(leader, |b| {
        let v = b.ld(src, 0);
        b.st(dst, 0, v);
    });
    b.finish()
}

/// What programs do on every run, tried once on `streams`: an event created in the
/// primary context, recorded on the communication stream after a slow kernel, waited
/// for by the compute stream, whose kernel then reads what the slow one wrote. On
/// green contexts the driver documents events and streams of one context; a green
/// stream also belongs to the primary context, and this says whether that holds on
/// this driver. An error, or the reader running early, fails the probe.
pub fn cross_stream_probe(gpu: &Gpu, streams: &Streams) -> Result<(), CudaError> {
    let kernels = KernelSet::load(
        gpu,
        &[
            smid_recorder("probe_slow_writer", 1),
            first_element_copier("probe_reader"),
        ],
    )?;
    let written = DeviceBuffer::alloc(Elem::I32, 1)?;
    let sink = DeviceBuffer::alloc(Elem::F32, 1)?;
    let spin = DeviceBuffer::alloc(Elem::I32, 1)?;
    let seen = DeviceBuffer::alloc(Elem::I32, 1)?;
    written.upload_blocking(streams, Lane::Comm, &Data::I32(vec![-1]))?;
    spin.upload_blocking(streams, Lane::Comm, &Data::I32(vec![2_000_000]))?;
    seen.upload_blocking(streams, Lane::Compute, &Data::I32(vec![-2]))?;
    let event = check(
        "cuEventCreate",
        result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING),
    )?;
    let run = || -> Result<(), CudaError> {
        kernels.launch(
            "probe_slow_writer",
            1,
            streams,
            Lane::Comm,
            &[&written, &sink, &spin],
        )?;
        // SAFETY: live event and streams.
        unsafe {
            check("cuEventRecord", result::event::record(event, streams.comm))?;
            check_raw(
                "cuStreamWaitEvent",
                sys::cuStreamWaitEvent(streams.compute, event, 0),
            )?;
        }
        kernels.launch(
            "probe_reader",
            1,
            streams,
            Lane::Compute,
            &[&written, &seen],
        )?;
        streams.synchronize()
    };
    let outcome = run();
    // SAFETY: created above; both streams are idle or failed.
    let _ = unsafe { result::event::destroy(event) };
    outcome?;
    match seen.download()? {
        Data::I32(v) if v[0] >= 0 => Ok(()),
        Data::I32(v) => Err(CudaError::WrongResult(format!(
            "the compute stream ran before the communication stream's event (read {})",
            v[0]
        ))),
        _ => Err(CudaError::Invalid(
            "the probe read back the wrong type".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smelt_compiler::gpu::eval::{self, Data};

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn the_smid_recorder_writes_each_blocks_sm() {
        let k = smid_recorder("smid_probe", 6);
        let mut bufs = vec![
            Data::I32(vec![-1; 6]),
            Data::F32(vec![0.0; 6]),
            Data::I32(vec![3]),
        ];
        // The evaluator places blocks round-robin over the SMs it is given.
        eval::run(&k, 6, 4, &mut bufs).unwrap();
        assert_eq!(bufs[0], Data::I32(vec![0, 1, 2, 3, 0, 1]));
        // The spin ran: each turn moves x from 1 towards 0.1.
        assert!(matches!(&bufs[1], Data::F32(v) if v.iter().all(|&x| x < 1.0 && x > 0.99)));
    }

    #[test]
    fn the_probe_reader_copies_the_first_element() {
        let k = first_element_copier("probe_reader");
        let mut bufs = vec![Data::I32(vec![7]), Data::I32(vec![-2])];
        eval::run(&k, 1, 1, &mut bufs).unwrap();
        assert_eq!(bufs[1], Data::I32(vec![7]));
    }
}
