//! Descriptions of the Hopper GPUs smelt targets, with the figures of
//! `shared/reference/hopper-and-deepseek.md` (NVIDIA datasheets; dense tensor-core
//! rates). The SM plan, the launch parameters and the optimiser's cost model read them.

use crate::optimize::RooflineTarget;
use std::fmt;

/// A GPU target that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuTargetError {
    /// No target has this name.
    #[error("unknown GPU target '{name}' (known: h800, h100, h200)")]
    Unknown {
        /// The name asked for.
        name: String,
    },
}

/// A PTX target architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Arch {
    /// `sm_90`: Hopper without the architecture-specific instructions.
    #[serde(rename = "sm_90")]
    Sm90,
    /// `sm_90a`: adds `wgmma` (code for it runs on exactly Hopper).
    #[serde(rename = "sm_90a")]
    Sm90a,
}

impl Arch {
    /// The `.target` / `ptxas -arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm90 => "sm_90",
            Arch::Sm90a => "sm_90a",
        }
    }
}

/// One GPU model.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuTarget {
    /// `h800`, `h100` or `h200`.
    pub name: &'static str,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Shared memory per SM, bytes.
    pub shared_per_sm: u32,
    /// Shared memory one block may use after opting in, bytes.
    pub shared_per_block: u32,
    /// 32-bit registers per SM.
    pub registers_per_sm: u32,
    /// Most resident threads per SM.
    pub threads_per_sm: u32,
    /// Most resident blocks per SM.
    pub blocks_per_sm: u32,
    /// Dense bf16 tensor-core FLOP/s.
    pub bf16_flops: f64,
    /// Dense fp8 tensor-core FLOP/s.
    pub fp8_flops: f64,
    /// f32 (CUDA-core) FLOP/s.
    pub f32_flops: f64,
    /// HBM bandwidth, bytes/s.
    pub hbm_bandwidth: f64,
    /// NVLink bandwidth per direction, bytes/s.
    pub nvlink_bandwidth: f64,
    /// Seconds per kernel launch on a stream.
    pub launch_seconds: f64,
    /// The SMs reserved for communication by default (DeepSeek-V3's 20).
    pub default_comm_sms: u32,
    /// The newest architecture kernels may target (`sm_90a` on every Hopper).
    pub arch: Arch,
}

impl GpuTarget {
    /// H800 SXM: the export variant DeepSeek trained on (NVLink cut to 400 GB/s).
    pub fn h800() -> GpuTarget {
        GpuTarget {
            name: "h800",
            nvlink_bandwidth: 200e9,
            ..GpuTarget::h100()
        }
    }

    /// H100 SXM.
    pub fn h100() -> GpuTarget {
        GpuTarget {
            name: "h100",
            sms: 132,
            shared_per_sm: 228 * 1024,
            shared_per_block: 227 * 1024,
            registers_per_sm: 65536,
            threads_per_sm: 2048,
            blocks_per_sm: 32,
            bf16_flops: 989e12,
            fp8_flops: 1979e12,
            f32_flops: 67e12,
            hbm_bandwidth: 3.35e12,
            nvlink_bandwidth: 450e9,
            launch_seconds: 4e-6,
            default_comm_sms: 20,
            arch: Arch::Sm90a,
        }
    }

    /// H200 SXM: H100's compute with 141 GB of faster HBM3e.
    pub fn h200() -> GpuTarget {
        GpuTarget {
            name: "h200",
            hbm_bandwidth: 4.8e12,
            ..GpuTarget::h100()
        }
    }

    /// The target called `name`.
    pub fn by_name(name: &str) -> Result<GpuTarget, GpuTargetError> {
        match name {
            "h800" => Ok(GpuTarget::h800()),
            "h100" => Ok(GpuTarget::h100()),
            "h200" => Ok(GpuTarget::h200()),
            _ => Err(GpuTargetError::Unknown {
                name: name.to_string(),
            }),
        }
    }

    /// The roofline the e-graph optimiser costs with on this GPU (f32 graphs run on
    /// CUDA cores; bf16 matmuls would reach `bf16_flops`).
    pub fn roofline(&self) -> RooflineTarget {
        RooflineTarget {
            peak_flops: self.f32_flops,
            bandwidth: self.hbm_bandwidth,
            launch_seconds: self.launch_seconds,
            ..RooflineTarget::cpu()
        }
    }
}

impl fmt::Display for GpuTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} SMs, {} KiB shared/SM, {:.0} TFLOP/s bf16, {:.0} TFLOP/s fp8, {:.2} TB/s HBM, {:.0} GB/s NVLink",
            self.name,
            self.sms,
            self.shared_per_sm / 1024,
            self.bf16_flops / 1e12,
            self.fp8_flops / 1e12,
            self.hbm_bandwidth / 1e12,
            self.nvlink_bandwidth / 1e9
        )
    }
}
