//! A `GpuProgram` loaded on a GPU: its module, buffers, streams and launch plan.

use super::driver::{check, check_raw, CudaError, Gpu};
use super::memory::DeviceBuffer;
use super::order::{check_order, run_order, DeviceOp, RunOrder};
use super::streams::Streams;
use super::tensor_map;
use crate::gpusim::{to_device, to_host};
use crate::interp::{bind_shapes, Execution, RunError};
use crate::tensor::Tensor;
use cudarc::driver::{result, sys, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use smelt_compiler::gpu::eval::Data;
use smelt_compiler::gpu::kir::Kernel;
use smelt_compiler::gpu::plan::{SmBudget, SmPlan};
use smelt_compiler::gpu::program::{constant, Contents};
use smelt_compiler::gpu::schedule;
use smelt_compiler::gpu::{ptx, GpuProgram, GpuTarget};
use smelt_compiler::ir::{Bindings, Graph, ValueId};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// One event per launch, recorded after it, for launches on the other stream to wait
/// on, and one recorded after the fills.
#[derive(Debug)]
struct Events(Vec<sys::CUevent>);

impl Drop for Events {
    fn drop(&mut self) {
        for &e in &self.0 {
            // SAFETY: created by `result::event::create`, destroyed once.
            let _ = unsafe { result::event::destroy(e) };
        }
    }
}

/// A program resident on the GPU, ready to run many times.
#[derive(Debug)]
pub struct CudaProgram {
    /// The lowered program.
    pub program: GpuProgram,
    /// Its launch plan (grids, streams, waits), on the split the driver made.
    pub plan: SmPlan,
    /// The device work of one run, in issue order.
    order: RunOrder,
    gpu: Arc<Gpu>,
    // Keeps the module loaded while its functions are used.
    _module: Arc<CudaModule>,
    functions: Vec<CudaFunction>,
    buffers: HashMap<ValueId, DeviceBuffer>,
    /// Per call, its kernel's tensor maps over the call's buffers (passed by value).
    tensor_maps: Vec<Vec<sys::CUtensorMap>>,
    events: Events,
    // Declared last: dropped after the events and buffers it must outlive.
    /// The streams and SM partition.
    pub streams: Streams,
}

// SAFETY: the raw driver handles (streams, events, device pointers) are not tied to a
// thread; every method makes the context current on the calling thread first, and
// `CudaRunner` hands the program to one thread at a time through its mutex.
unsafe impl Send for CudaProgram {}

impl Drop for CudaProgram {
    fn drop(&mut self) {
        // Runs before the fields drop: free buffers only once no launch uses them, with
        // the context current on whichever thread drops the program.
        let _ = self.gpu.ctx.bind_to_thread();
        let _ = self.streams.synchronize();
    }
}

/// How one loaded kernel occupies an SM, as the driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelOccupancy {
    /// Kernel name.
    pub kernel: String,
    /// Registers per thread (0 if the driver did not say).
    pub registers: u32,
    /// Blocks per SM the plan capped grids with.
    pub resident_blocks: u32,
}

/// Blocks of `f` (with `block` threads) that fit on one SM, as the driver computes it
/// from the kernel's real registers and shared memory.
fn occupancy(f: &CudaFunction, block: u32) -> Result<u32, CudaError> {
    // SAFETY: a loaded function; static shared memory only.
    let n = check("cuOccupancyMaxActiveBlocksPerMultiprocessor", unsafe {
        result::occupancy::max_active_block_per_multiprocessor(f.cu_function(), block as i32, 0)
    })?;
    if n < 1 {
        return Err(CudaError::Invalid(format!(
            "the driver fits no block of {block} threads of this kernel on an SM"
        )));
    }
    Ok(n as u32)
}

/// The module's kernels, one entry per name (calls may share a kernel).
fn unique_kernels(program: &GpuProgram) -> Result<Vec<Kernel>, CudaError> {
    let mut seen: HashMap<&str, &Kernel> = HashMap::new();
    let mut out = Vec::new();
    for call in &program.calls {
        match seen.get(call.kernel.name.as_str()) {
            Some(k) if **k != call.kernel => {
                return Err(CudaError::Invalid(format!(
                    "two different kernels are named {}",
                    call.kernel.name
                )))
            }
            Some(_) => {}
            None => {
                seen.insert(&call.kernel.name, &call.kernel);
                out.push(call.kernel.clone());
            }
        }
    }
    Ok(out)
}

impl CudaProgram {
    /// Loads `program` on `gpu`, planned for `target` with `comm_sms` communication SMs.
    pub fn load(
        gpu: Arc<Gpu>,
        program: GpuProgram,
        target: &GpuTarget,
        comm_sms: u32,
    ) -> Result<CudaProgram, CudaError> {
        if gpu.sms != target.sms {
            return Err(CudaError::WrongTarget {
                target: target.name.to_string(),
                target_sms: target.sms,
                gpu: gpu.name.clone(),
                gpu_sms: gpu.sms,
            });
        }
        check("making the context current", gpu.ctx.bind_to_thread())?;
        let text = ptx::module(&unique_kernels(&program)?);
        let module = check(
            "PTX module load (cuModuleLoadData)",
            gpu.ctx.load_module(Ptx::from_src(text)),
        )?;
        let functions = program
            .calls
            .iter()
            .map(|c| {
                check(
                    &format!("cuModuleGetFunction({})", c.kernel.name),
                    module.load_function(&c.kernel.name),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The plan follows what the driver made and measured: the real SM split (green
        // contexts round the reserved part up) and each kernel's real residency (the
        // registers the driver's PTX compiler gave it, not the plan's assumption).
        let streams = Streams::new(&gpu, comm_sms)?;
        let resident = program
            .calls
            .iter()
            .zip(&functions)
            .map(|(c, f)| occupancy(f, c.kernel.block))
            .collect::<Result<Vec<_>, _>>()?;
        let budget = SmBudget {
            compute: streams.partition.split().compute,
            comm: comm_sms,
        };
        let plan = SmPlan::on(&program, target, comm_sms, budget, &resident)?;
        let order = run_order(&program, &plan);
        check_order(&program, &order)?;
        let mut buffers = HashMap::new();
        for b in &program.buffers {
            buffers.insert(b.value, DeviceBuffer::alloc(b.elem, b.len)?);
        }
        let tensor_maps = program
            .calls
            .iter()
            .map(|c| {
                c.kernel
                    .tensor_maps
                    .iter()
                    .map(|m| {
                        let buf = &buffers[&c.args[m.buffer]];
                        tensor_map::encode(m, buf.elem, buf.ptr)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = Events(Vec::new());
        for _ in 0..order.events {
            let e = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING);
            events.0.push(check("cuEventCreate", e)?);
        }
        Ok(CudaProgram {
            program,
            plan,
            order,
            gpu,
            _module: module,
            functions,
            buffers,
            tensor_maps,
            events,
            streams,
        })
    }

    /// Fills every buffer that is not computed: `given` holds the inputs, parameters
    /// and state; constants come from the program; computed buffers start at zero, as
    /// in the evaluator. The fills are ordered before every launch (see `order.rs`).
    pub fn upload(&self, given: &HashMap<ValueId, Data>) -> Result<(), CudaError> {
        check("making the context current", self.gpu.ctx.bind_to_thread())?;
        let buffers: HashMap<ValueId, &smelt_compiler::gpu::program::Buffer> =
            self.program.buffers.iter().map(|b| (b.value, b)).collect();
        for op in &self.order.fills {
            let DeviceOp::Fill { value, stream } = *op else {
                self.issue(op)?;
                continue;
            };
            let stream = self
                .streams
                .get(stream.expect("fills are issued on a stream"));
            let buf = &self.buffers[&value];
            let b = buffers[&value];
            match &b.contents {
                Contents::Given => buf.upload_on(
                    stream,
                    given.get(&value).ok_or_else(|| CudaError::Missing {
                        what: "data",
                        value: self.program.graph.value(value).name.clone(),
                    })?,
                )?,
                Contents::Constant(values) => buf.upload_on(stream, &constant(b, values))?,
                Contents::Computed => buf.zero_on(stream)?,
            }
        }
        Ok(())
    }

    /// Issues every launch of the plan on its stream, waiting for the events of the
    /// other stream's producers, and returns without synchronising.
    pub fn launch(&self) -> Result<(), CudaError> {
        check("making the context current", self.gpu.ctx.bind_to_thread())?;
        for op in &self.order.launches {
            self.issue(op)?;
        }
        Ok(())
    }

    /// Issues one event record, event wait or launch.
    fn issue(&self, op: &DeviceOp) -> Result<(), CudaError> {
        match *op {
            DeviceOp::Record { event, stream } => {
                // SAFETY: a live event and stream.
                check("cuEventRecord", unsafe {
                    result::event::record(self.events.0[event], self.streams.get(stream))
                })
            }
            DeviceOp::Wait { stream, event } => {
                // SAFETY: both live; `check_order` proved the event is recorded first.
                check_raw("cuStreamWaitEvent", unsafe {
                    sys::cuStreamWaitEvent(self.streams.get(stream), self.events.0[event], 0)
                })
            }
            DeviceOp::Launch { call, stream } => self.launch_call(call, self.streams.get(stream)),
            DeviceOp::Fill { .. } => Err(CudaError::Invalid("a fill among the launches".into())),
        }
    }

    fn launch_call(&self, i: usize, stream: sys::CUstream) -> Result<(), CudaError> {
        let call = &self.program.calls[i];
        let launch = &self.plan.launches[i];
        // One u64 device address per parameter, in `args` order, then each tensor
        // map's 128 bytes by value.
        let mut addresses: Vec<sys::CUdeviceptr> =
            call.args.iter().map(|v| self.buffers[v].ptr).collect();
        let mut maps = self.tensor_maps[i].clone();
        let mut params: Vec<*mut c_void> = addresses
            .iter_mut()
            .map(|a| a as *mut sys::CUdeviceptr as *mut c_void)
            .chain(
                maps.iter_mut()
                    .map(|m| m as *mut sys::CUtensorMap as *mut c_void),
            )
            .collect();
        let grid = (launch.grid[0], launch.grid[1], launch.grid[2]);
        let block = (launch.block[0], launch.block[1], launch.block[2]);
        // SAFETY: the kernel takes exactly these pointers and tensor maps (the
        // lowering's contract); shared memory is static, so no dynamic bytes.
        let launched = unsafe {
            result::launch_kernel(
                self.functions[i].cu_function(),
                grid,
                block,
                0,
                stream,
                &mut params,
            )
        };
        check(
            &format!("launch of {} (cuLaunchKernel)", call.kernel.name),
            launched,
        )
    }

    /// Each kernel's registers per thread and resident blocks per SM, from the driver.
    pub fn occupancy(&self) -> Vec<KernelOccupancy> {
        self.program
            .calls
            .iter()
            .zip(&self.functions)
            .zip(&self.plan.launches)
            .map(|((c, f), l)| {
                // SAFETY: a loaded function.
                let registers = unsafe {
                    result::function::get_function_attribute(
                        f.cu_function(),
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS,
                    )
                };
                KernelOccupancy {
                    kernel: c.kernel.name.clone(),
                    registers: registers.map_or(0, |r| r as u32),
                    resident_blocks: l.resident_blocks,
                }
            })
            .collect()
    }

    /// Waits for every launch; reports a kernel fault here.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.streams.synchronize()
    }

    /// A buffer's contents.
    pub fn download(&self, value: ValueId) -> Result<Data, CudaError> {
        self.buffers
            .get(&value)
            .ok_or_else(|| {
                CudaError::Invalid(format!(
                    "%{} has no device buffer",
                    self.program.graph.value(value).name
                ))
            })?
            .download()
    }

    /// Uploads, launches, waits and downloads the outputs and updates.
    pub fn execute(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, CudaError> {
        let g = &self.program.graph;
        let given: HashMap<ValueId, Data> = self
            .program
            .buffers
            .iter()
            .filter(|b| b.contents == Contents::Given)
            .map(|b| {
                let name = &g.value(b.value).name;
                feeds
                    .get(name)
                    .map(|t| (b.value, to_device(t, b.elem)))
                    .ok_or_else(|| CudaError::Missing {
                        what: "value",
                        value: name.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        self.upload(&given)?;
        self.launch()?;
        self.synchronize()?;
        let host = |v: ValueId| -> Result<Tensor, CudaError> {
            Ok(to_host(
                &self.download(v)?,
                g.ty(v).dtype,
                self.program.shapes[v.index()].clone(),
            ))
        };
        Ok(Execution {
            outputs: g
                .outputs
                .iter()
                .map(|&o| host(o))
                .collect::<Result<_, _>>()?,
            updates: g
                .updates
                .iter()
                .map(|&(target, value)| Ok((g.value(target).name.clone(), host(value)?)))
                .collect::<Result<_, CudaError>>()?,
        })
    }
}

/// Runs a graph on a GPU, lowering and loading it once per set of shapes (a training
/// loop feeds the same shapes every step, so it loads once).
#[derive(Debug)]
pub struct CudaRunner {
    graph: Graph,
    target: GpuTarget,
    comm_sms: u32,
    gpu: Arc<Gpu>,
    loaded: Mutex<Option<(Bindings, CudaProgram)>>,
}

impl CudaRunner {
    /// Opens GPU 0 for `graph`; fails with `no CUDA driver found ...` without a driver.
    pub fn new(graph: &Graph, target: GpuTarget, comm_sms: u32) -> Result<CudaRunner, CudaError> {
        let gpu = Arc::new(Gpu::open(0)?);
        Ok(CudaRunner {
            graph: graph.clone(),
            target,
            comm_sms,
            gpu,
            loaded: Mutex::new(None),
        })
    }

    /// Runs once on `feeds`.
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        let bindings = bind_shapes(&self.graph, feeds)?;
        let fail = |message: String| RunError::Eval {
            value: ValueId(0),
            name: self.graph.name.clone(),
            message,
        };
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| fail("a previous run panicked".into()))?;
        if loaded.as_ref().map(|(b, _)| b) != Some(&bindings) {
            *loaded = None; // free the old buffers before allocating new ones
            let program = GpuProgram::for_arch(&schedule(&self.graph), &bindings, self.target.arch)
                .map_err(|e| fail(e.to_string()))?;
            let p = CudaProgram::load(self.gpu.clone(), program, &self.target, self.comm_sms)
                .map_err(|e| fail(e.to_string()))?;
            *loaded = Some((bindings, p));
        }
        let (_, program) = loaded.as_ref().expect("loaded above");
        program.execute(feeds).map_err(|e| fail(e.to_string()))
    }
}
