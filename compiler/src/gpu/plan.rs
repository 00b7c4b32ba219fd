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
    /// The PTX architecture the module is assembled for.
    pub arch: super::target::Arch,
    /// Launches in issue order.
    pub launches: Vec<Launch>,
}

/// Checks a `--comm-sms` value against a target.
pub fn check_comm_sms(target: &GpuTarget, n: u32) -> Result<(), String> {
    if n % 2 != 0 {
        return Err(format!(
            "--comm-sms must be even (communication kernels pair SMs), got {n}"
        ));
    }
    if n >= target.sms {
        return Err(format!(
            "--comm-sms {n} leaves no SM for compute ({} has {} SMs)",
            target.name, target.sms
        ));
    }
    Ok(())
}

/// Blocks of `k` that fit on one SM at once (threads, blocks, shared memory, and
/// registers assuming at most 64 per thread).
pub fn resident_blocks(target: &GpuTarget, k: &Kernel) -> u32 {
    let by_threads = target.threads_per_sm / k.block.max(1);
    let by_shared = match k.shared_bytes() as u32 {
        0 => u32::MAX,
        s => target.shared_per_sm / s,
    };
    let by_registers = target.registers_per_sm / (64 * k.block.max(1));
    by_threads
        .min(by_shared)
        .min(by_registers)
        .min(target.blocks_per_sm)
        .max(1)
}

/// The grid of a launch under the plan.
pub fn grid_for(target: &GpuTarget, comm_sms: u32, call: &KernelCall) -> u32 {
    match call.role {
        Role::Comm => comm_sms,
        Role::Compute => {
            let cap = (target.sms - comm_sms) * resident_blocks(target, &call.kernel);
            call.work_blocks.min(cap).max(1)
        }
    }
}

impl SmPlan {
    /// Plans `program` on `target` with `comm_sms` SMs for communication.
    pub fn new(program: &GpuProgram, target: &GpuTarget, comm_sms: u32) -> Result<SmPlan, String> {
        check_comm_sms(target, comm_sms)?;
        if comm_sms == 0 && program.calls.iter().any(|c| c.role == Role::Comm) {
            return Err(
                "the program has communication kernels: give them SMs with --comm-sms".into(),
            );
        }
        let mut writer: HashMap<crate::ir::ValueId, usize> = HashMap::new();
        let mut stream_free = [0.0f64; 2];
        let mut launches: Vec<Launch> = Vec::new();
        for (i, call) in program.calls.iter().enumerate() {
            let stream = u32::from(call.role == Role::Comm);
            let grid = grid_for(target, comm_sms, call);
            let budget = match call.role {
                Role::Comm => comm_sms,
                Role::Compute => target.sms - comm_sms,
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
            let duration_us = estimate_seconds(program, target, call, budget, grid) * 1e6;
            stream_free[stream as usize] = ready + duration_us;
            writer.insert(call.args[0], i);
            launches.push(Launch {
                name: call.kernel.name.clone(),
                role: call.role,
                stream,
                grid: [grid, 1, 1],
                block: [call.kernel.block, 1, 1],
                shared_bytes: call.kernel.shared_bytes() as u32,
                sm_budget: budget,
                waits_for,
                start_us: ready,
                duration_us,
            });
        }
        Ok(SmPlan {
            target: target.name.to_string(),
            sms: target.sms,
            comm_sms,
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
            self.target,
            self.sms,
            self.sms - self.comm_sms,
            self.comm_sms
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
