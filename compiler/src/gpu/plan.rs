//! The SM plan: which SMs, stream and grid every launch gets.
//!
//! DeepSeek-V3 confined its all-to-all kernels to 20 of an H800's 132 SMs so the other
//! 112 could compute meanwhile. smelt makes that budget explicit:
//! - `comm_sms` SMs (even, fewer than the GPU has) are reserved for communication;
//! - compute kernels go on stream 0 with at most `(SMs − comm_sms) × resident blocks
//!   per SM` blocks (their grid-stride loops cover the rest of the work), so they
//!   never need a reserved SM;
//! - communication kernels go on stream 1 with exactly `comm_sms` blocks, one per SM,
//!   made co-resident by their launch bounds and shared-memory size;
//! - a launch that reads a value written on the other stream waits for that launch's
//!   event.
//!
//! Times are estimates from the target's roofline; they draw the timeline.

use super::kir::Kernel;
use super::lower::{KernelCall, Role};
use super::program::GpuProgram;
use super::target::GpuTarget;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// One planned launch.
#[derive(Clone, Debug, Serialize)]
pub struct Launch {
    /// Kernel name.
    pub name: String,
    /// Compute or communication.
    pub role: Role,
    /// Stream: 0 compute, 1 communication.
    pub stream: u32,
    /// Blocks (x, y, z).
    pub grid: [u32; 3],
    /// Threads per block (x, y, z).
    pub block: [u32; 3],
    /// Static shared memory per block, bytes.
    pub shared_bytes: u32,
    /// SMs this launch may occupy.
    pub sm_budget: u32,
    /// Blocks of this kernel that fit on one SM (what compute grids are capped by).
    pub resident_blocks: u32,
    /// Launches (by index) on the other stream whose events it waits for.
    pub waits_for: Vec<usize>,
    /// Estimated start and duration, microseconds.
    pub start_us: f64,
    /// Estimated duration, microseconds.
    pub duration_us: f64,
}

/// Launch parameters for a whole program.
#[derive(Clone, Debug, Serialize)]
pub struct SmPlan {
    /// Target name.
    pub target: String,
    /// SMs of the GPU.
    pub sms: u32,
    /// SMs reserved for communication.
    pub comm_sms: u32,
    /// SMs compute kernels may occupy (fewer than `sms − comm_sms` where the driver
    /// rounded the reserved part up).
    pub compute_sms: u32,
    /// The PTX architecture the module is assembled for.
    pub arch: super::target::Arch,
    /// Launches in issue order.
    pub launches: Vec<Launch>,
}

/// Why SMs could not be planned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SmPlanError {
    /// Communication kernels pair SMs.
    #[error("--comm-sms must be even (communication kernels pair SMs), got {0}")]
    OddCommSms(u32),
    /// Communication would take every SM.
    #[error("--comm-sms {comm_sms} leaves no SM for compute ({target} has {sms} SMs)")]
    NoComputeSms {
        /// SMs asked for communication.
        comm_sms: u32,
        /// The target's name.
        target: &'static str,
        /// The target's SMs.
        sms: u32,
    },
    /// The residency figures do not match the calls.
    #[error("{figures} residency figures for {calls} calls")]
    ResidencyCount {
        /// Figures given.
        figures: usize,
        /// Calls of the program.
        calls: usize,
    },
    /// The program communicates but no SM was set aside for it.
    #[error("the program has communication kernels: give them SMs with --comm-sms")]
    NoCommSms,
}

/// Checks a `--comm-sms` value against a target.
pub fn check_comm_sms(target: &GpuTarget, n: u32) -> Result<(), SmPlanError> {
    if !n.is_multiple_of(2) {
        return Err(SmPlanError::OddCommSms(n));
    }
    if n >= target.sms {
        return Err(SmPlanError::NoComputeSms {
            comm_sms: n,
            target: target.name,
            sms: target.sms,
        });
    }
    Ok(())
}

/// Registers per thread the plan assumes when nothing better is known (no ptxas
/// report, no driver): what most of the generated kernels need. Kernels that need more
/// (the wgmma product takes 97) get fewer resident blocks from `ptxas -v` or the
/// driver's occupancy query at load.
pub const ASSUMED_REGISTERS: u32 = 64;

/// Hopper's allocation units (the CUDA occupancy calculator's figures for sm_90):
/// registers per thread are allocated in steps of 8 and per warp in steps of 256;
/// shared memory in steps of 128 bytes, with 1 KiB per block reserved by the system.
const REGISTER_STEP_PER_THREAD: u32 = 8;
const REGISTER_STEP_PER_WARP: u32 = 256;
const SHARED_STEP: u32 = 128;
const SHARED_RESERVED_PER_BLOCK: u32 = 1024;
const WARP: u32 = 32;

/// Blocks of kernel `k` that fit on one SM at once, with `registers` per thread.
pub fn resident_blocks(target: &GpuTarget, k: &Kernel, registers: u32) -> u32 {
    blocks_per_sm(target, k.block, k.shared_bytes() as u32, registers)
}

/// Blocks of `block` threads with `shared` bytes of static shared memory and
/// `registers` per thread that fit on one SM: the fewest allowed by threads, blocks,
/// shared memory and registers, in the hardware's allocation units.
pub fn blocks_per_sm(target: &GpuTarget, block: u32, shared: u32, registers: u32) -> u32 {
    let block = block.max(1);
    let warps = block.div_ceil(WARP);
    let by_threads = target.threads_per_sm / block;
    let by_shared = match shared {
        0 => u32::MAX,
        s => target.shared_per_sm / (s.next_multiple_of(SHARED_STEP) + SHARED_RESERVED_PER_BLOCK),
    };
    let per_warp = (registers.max(1).next_multiple_of(REGISTER_STEP_PER_THREAD) * WARP)
        .next_multiple_of(REGISTER_STEP_PER_WARP);
    let by_registers = (target.registers_per_sm / per_warp) / warps;
    by_threads
        .min(by_shared)
        .min(by_registers)
        .min(target.blocks_per_sm)
        .max(1)
}

/// The SMs a plan may use: on a GPU, the split the driver really made (green contexts
/// come in groups of 8 SMs on Hopper, so 20 requested communication SMs become 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmBudget {
    /// SMs compute kernels may occupy.
    pub compute: u32,
    /// Blocks each communication kernel gets (one per reserved SM requested).
    pub comm: u32,
}

impl SmBudget {
    /// The budget on paper: the target's SMs less `comm_sms`.
    pub fn requested(target: &GpuTarget, comm_sms: u32) -> SmBudget {
        SmBudget {
            compute: target.sms.saturating_sub(comm_sms),
            comm: comm_sms,
        }
    }
}

/// The grid of a launch under the budget, with `resident` blocks of it per SM.
pub fn grid_for(budget: SmBudget, call: &KernelCall, resident: u32) -> u32 {
    match call.role {
        Role::Comm => budget.comm,
        Role::Compute => call.work_blocks.min(budget.compute * resident).max(1),
    }
}

/// The grid of a launch on paper (`ASSUMED_REGISTERS` per thread).
pub fn planned_grid(target: &GpuTarget, comm_sms: u32, call: &KernelCall) -> u32 {
    let resident = resident_blocks(target, &call.kernel, ASSUMED_REGISTERS);
    grid_for(SmBudget::requested(target, comm_sms), call, resident)
}

impl SmPlan {
    /// Plans `program` on `target` with `comm_sms` SMs for communication, assuming
    /// `ASSUMED_REGISTERS` per thread.
    pub fn new(
        program: &GpuProgram,
        target: &GpuTarget,
        comm_sms: u32,
    ) -> Result<SmPlan, SmPlanError> {
        let resident: Vec<u32> = program
            .calls
            .iter()
            .map(|c| resident_blocks(target, &c.kernel, ASSUMED_REGISTERS))
            .collect();
        SmPlan::on(
            program,
            target,
            comm_sms,
            SmBudget::requested(target, comm_sms),
            &resident,
        )
    }

    /// Plans `program` with the SMs of `budget` and `resident[i]` blocks of call `i`
    /// per SM (from `ptxas -v` or the driver's occupancy query).
    pub fn on(
        program: &GpuProgram,
        target: &GpuTarget,
        comm_sms: u32,
        budget: SmBudget,
        resident: &[u32],
    ) -> Result<SmPlan, SmPlanError> {
        check_comm_sms(target, comm_sms)?;
        if resident.len() != program.calls.len() {
            return Err(SmPlanError::ResidencyCount {
                figures: resident.len(),
                calls: program.calls.len(),
            });
        }
        if comm_sms == 0 && program.calls.iter().any(|c| c.role == Role::Comm) {
            return Err(SmPlanError::NoCommSms);
        }
        let mut writer: HashMap<crate::ir::ValueId, usize> = HashMap::new();
        let mut stream_free = [0.0f64; 2];
        let mut launches: Vec<Launch> = Vec::new();
        for (i, call) in program.calls.iter().enumerate() {
            let stream = u32::from(call.role == Role::Comm);
            let grid = grid_for(budget, call, resident[i]);
            let sm_budget = match call.role {
                Role::Comm => budget.comm,
                Role::Compute => budget.compute,
            };
            let mut waits_for = Vec::new();
            let mut ready = stream_free[stream as usize];
            for v in call.args.iter().skip(1) {
                if let Some(&w) = writer.get(v) {
                    let producer: &Launch = &launches[w];
                    if producer.stream != stream && !waits_for.contains(&w) {
                        waits_for.push(w);
                    }
                    ready = ready.max(producer.start_us + producer.duration_us);
                }
            }
            let duration_us = estimate_seconds(program, target, call, sm_budget, grid) * 1e6;
            stream_free[stream as usize] = ready + duration_us;
            writer.insert(call.args[0], i);
            launches.push(Launch {
                name: call.kernel.name.clone(),
                role: call.role,
                stream,
                grid: [grid, 1, 1],
                block: [call.kernel.block, 1, 1],
                shared_bytes: call.kernel.shared_bytes() as u32,
                sm_budget,
                resident_blocks: resident[i],
                waits_for,
                start_us: ready,
                duration_us,
            });
        }
        Ok(SmPlan {
            target: target.name.to_string(),
            sms: target.sms,
            comm_sms,
            compute_sms: budget.compute,
            arch: program.arch,
            launches,
        })
    }

    /// The plan as text, one launch per line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan for {}: {} SMs, {} compute on stream 0, {} communication on stream 1",
            self.target, self.sms, self.compute_sms, self.comm_sms
        );
        for (i, l) in self.launches.iter().enumerate() {
            let waits = if l.waits_for.is_empty() {
                String::new()
            } else {
                let w: Vec<String> = l.waits_for.iter().map(|w| format!("#{w}")).collect();
                format!(" waits {}", w.join(","))
            };
            let _ = writeln!(
                s,
                "  #{i} {} role={} stream={} grid=({},1,1) block=({},1,1) shared={}B sm_budget={} est={:.2}us{waits}",
                l.name,
                match l.role {
                    Role::Compute => "compute",
                    Role::Comm => "comm",
                },
                l.stream,
                l.grid[0],
                l.block[0],
                l.shared_bytes,
                l.sm_budget,
                l.duration_us
            );
        }
        s
    }
}

/// Roofline time of one launch on its share of the GPU.
fn estimate_seconds(
    program: &GpuProgram,
    target: &GpuTarget,
    call: &KernelCall,
    budget: u32,
    grid: u32,
) -> f64 {
    let bytes: f64 = call
        .args
        .iter()
        .map(|v| {
            let n: usize = program.shapes[v.index()].iter().product();
            let e = super::lower::elem_of(program.graph.ty(*v).dtype).map_or(4, |e| e.bytes());
            (n * e) as f64
        })
        .sum();
    if call.role == Role::Comm {
        // What one rank sends crosses NVLink (the loopback copy is the stand-in).
        let sent = bytes / 2.0;
        return sent / target.nvlink_bandwidth + target.launch_seconds;
    }
    let uses = f64::from(grid.min(budget)) / f64::from(target.sms);
    let peak = if call.kernel.uses_tensor_cores() {
        target.bf16_flops
    } else {
        target.f32_flops
    };
    let compute = call.flops / (peak * uses.max(1e-3));
    let memory = bytes / target.hbm_bandwidth;
    compute.max(memory) + target.launch_seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures of NVIDIA's occupancy calculator for sm_90 (228 KiB shared, 64 Ki
    /// registers, 2048 threads, 32 blocks per SM).
    #[test]
    fn residency_follows_registers_and_shared_memory() {
        let h = GpuTarget::h100();
        // The bf16 wgmma product as ptxas reports it: 128 threads, 97 registers,
        // 36,888 B shared. Registers (104 per thread after rounding, 3,328 per warp)
        // allow 19 warps, so 4 blocks; shared memory would allow 6.
        assert_eq!(blocks_per_sm(&h, 128, 36_888, 97), 4);
        assert_eq!(blocks_per_sm(&h, 128, 36_888, 64), 6);
        // Registers alone: 64 per thread fill 65,536 with 1,024 threads.
        assert_eq!(blocks_per_sm(&h, 256, 0, 64), 4);
        assert_eq!(blocks_per_sm(&h, 256, 0, 32), 8);
        // Threads and the block limit.
        assert_eq!(blocks_per_sm(&h, 1024, 0, 16), 2);
        assert_eq!(blocks_per_sm(&h, 32, 0, 16), 32);
        // A block that needs more than an SM still counts as one (the driver rejects
        // such a launch; the plan does not divide by zero).
        assert_eq!(blocks_per_sm(&h, 128, 300_000, 32), 1);
    }

    #[test]
    fn compute_grids_are_capped_by_the_real_split() {
        use crate::gpu::schedule;
        let g = crate::ir::text::parse(
            "graph @t {\ninput %x: f32[4096, 4096]\n%y = exp %x\noutput %y\n}\n",
        )
        .unwrap()
        .graph;
        let p = GpuProgram::new(&schedule(&g), &Default::default()).unwrap();
        let h = GpuTarget::h100();
        let resident = vec![2; p.calls.len()];
        // Green contexts round 20 communication SMs up to 24: 108 compute SMs remain.
        let budget = SmBudget {
            compute: 108,
            comm: 20,
        };
        let plan = SmPlan::on(&p, &h, 20, budget, &resident).unwrap();
        assert_eq!(plan.compute_sms, 108);
        for l in &plan.launches {
            assert!(l.grid[0] <= 108 * 2, "{l:?}");
            assert_eq!(l.resident_blocks, 2);
        }
        assert!(plan.to_text().contains("108 compute"), "{}", plan.to_text());
        assert!(SmPlan::on(&p, &h, 20, budget, &[]).is_err());
    }
}
