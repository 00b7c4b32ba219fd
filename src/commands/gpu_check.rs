//! `smelt gpu-check`: measurements on a real GPU that tests cannot make — bf16 matmul
//! time, where communication CTAs run (`%smid`), the compute slowdown of reserving
//! SMs, and how much of a loopback all-to-all hides behind compute. Prints one
//! `key value` line per result (scripts/gpu-check.sh reads them) and fails with exit
//! code 2 when a check fails.

use smelt_compiler::gpu::comm::loopback::{identity_round_trip, Loopback};
use smelt_compiler::gpu::comm::{CommKernel, MoeLayout, Transport};
use smelt_compiler::gpu::eval::Data;
use smelt_compiler::gpu::plan::check_comm_sms;
use smelt_compiler::gpu::schedule;
use smelt_compiler::gpu::{GpuProgram, GpuTarget};
use smelt_compiler::ir::text;
use smelt_frontend::Diagnostic;
use smelt_runtime::cuda::partition::Partition;
use smelt_runtime::cuda::probe::{median, smid_recorder, KernelSet, Stopwatch};
use smelt_runtime::cuda::{
    CudaError, CudaProgram, DeviceBuffer, Gpu, KernelOccupancy, Lane, Streams,
};
use smelt_runtime::rng::uniform01;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Square matmul size (bf16 inputs).
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Timed repeats (after warm-up); the median is reported.
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// Only say which GPU this is (name, SMs, driver) and make the two streams on the
    /// SM split, which probes events across them; no measurements.
    #[arg(long)]
    info: bool,
    #[command(flatten)]
    gpu: super::GpuArgs,
}

fn fail(e: CudaError) -> Diagnostic {
    Diagnostic::plain(e.to_string())
}

pub fn main(args: Args) -> Result<(), Diagnostic> {
    // The product's rows are sampled by index and its reference runs on the CPU, so the
    // size is bounded before any of it is used.
    if !(1..=MAX_SIZE).contains(&args.size) {
        return Err(Diagnostic::plain(format!(
            "--size {} is not between 1 and {MAX_SIZE}",
            args.size
        )));
    }
    let options = args.gpu.options();
    let target =
        GpuTarget::by_name(options.target).map_err(|e| Diagnostic::plain(e.to_string()))?;
    let comm = options.comm_sms;
    check_comm_sms(&target, comm).map_err(|e| Diagnostic::plain(e.to_string()))?;
    if comm == 0 {
        return Err(Diagnostic::plain("gpu-check needs --comm-sms above 0"));
    }
    let gpu = Arc::new(Gpu::open(0).map_err(fail)?);
    println!(
        "device {} ({} SMs, driver {})",
        gpu.name, gpu.sms, gpu.driver_version
    );
    if args.info {
        println!("name {}", gpu.name);
        println!("sms {}", gpu.sms);
        println!("driver {}", gpu.driver_version);
        // Making the streams runs the cross-stream probe on green contexts; a failed
        // probe shows as the persistent-grid fallback with its reason.
        let streams = Streams::new(&gpu, comm).map_err(fail)?;
        let probe = match &streams.partition {
            Partition::Green(_) => "; events across the two green streams: ordered (probe passed)",
            Partition::PersistentGrid { .. } => "",
        };
        println!("streams {}{probe}", streams.partition);
        return Ok(());
    }
    let mut failures = Vec::new();

    // The product is checked against the CPU before any time is reported.
    let worst = verify_matmul(&gpu, &target, args.size).map_err(fail)?;
    println!(
        "verified bf16 {n}^3 product: {VERIFIED_ROWS} sampled rows match the CPU (worst {worst:.1e} of max(1, |row|), limit {MATMUL_TOLERANCE:.0e})",
        n = args.size
    );

    // bf16 matmul on the whole GPU, then on the compute partition.
    let full = matmul_ms(&gpu, &target, args.size, 0, args.repeats).map_err(fail)?;
    let flops = 2.0 * (args.size as f64).powi(3);
    println!("matmul_ms {full:.4}");
    println!(
        "matmul_tflops {:.1}",
        flops / (f64::from(full) * 1e-3) / 1e12
    );
    let (part, partition, occupancy) =
        matmul_partitioned_ms(&gpu, &target, args.size, comm, args.repeats).map_err(fail)?;
    println!("partition {partition}");
    for k in occupancy {
        println!(
            "occupancy {}: {} registers, {} blocks per SM (driver)",
            k.kernel, k.registers, k.resident_blocks
        );
    }
    let split = partition.split();
    let expected = f64::from(gpu.sms) / f64::from(gpu.sms - split.comm);
    let slowdown = f64::from(part) / f64::from(full);
    println!(
        "slowdown {slowdown:.3} expected {expected:.3} ({} of {} SMs computing)",
        gpu.sms - split.comm,
        gpu.sms
    );
    // Only green contexts keep compute off the reserved SMs when nothing else runs.
    let enforced = matches!(partition, Partition::Green(_));
    if enforced && !(0.85 * expected..=1.15 * expected).contains(&slowdown) {
        failures.push(format!(
            "compute slowdown {slowdown:.3} is not within 15% of SMs/(SMs-N) = {expected:.3}"
        ));
    }

    // Where CTAs ran.
    match smid_check(&gpu, comm).map_err(fail)? {
        SmidResult::Disjoint { comm, compute } => {
            println!("smid comm_sms_used {comm} compute_sms_used {compute} overlap 0")
        }
        SmidResult::Shared(n) => {
            println!("smid overlap {n}");
            failures.push(format!(
                "{n} SMs ran both communication and compute CTAs under green contexts"
            ));
        }
        SmidResult::NotEnforced(why) => println!("smid not_enforced {why}"),
    }

    // All-to-all beside compute.
    let o = overlap(&gpu, &target, comm, args.repeats).map_err(fail)?;
    println!(
        "overlap comm_ms {:.4} compute_ms {:.4} both_ms {:.4} hidden {:.3}",
        o.comm, o.compute, o.both, o.hidden
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Diagnostic::plain(failures.join("; ")))
    }
}

/// Fresh random data for a buffer (never zeros).
fn random(elem: smelt_compiler::gpu::kir::Elem, len: usize, seed: u64) -> Data {
    let t = smelt_runtime::Tensor::from_f64(
        smelt_compiler::ir::DType::F32,
        vec![len],
        (0..len as u64)
            .map(|i| uniform01(seed, i) * 2.0 - 1.0)
            .collect(),
    );
    smelt_runtime::gpusim::to_device(&t, elem)
}

fn matmul_program(size: usize) -> GpuProgram {
    let src = format!(
        "graph @mm {{\ninput %a: bf16[{size}, {size}]\ninput %b: bf16[{size}, {size}]\n%y = matmul %a, %b\noutput %y\n}}\n"
    );
    let g = text::parse(&src).expect("a valid graph").graph;
    GpuProgram::new(&schedule(&g), &Default::default()).expect("the matmul lowers")
}

fn load_matmul(
    gpu: &Arc<Gpu>,
    target: &GpuTarget,
    size: usize,
    comm: u32,
) -> Result<CudaProgram, CudaError> {
    let program = CudaProgram::load(gpu.clone(), matmul_program(size), target, comm)?;
    let given: HashMap<_, _> = (0..2)
        .map(|i| {
            let b = given_buffer(&program, i);
            (b.value, matmul_input(&program, i))
        })
        .collect();
    program.upload(&given)?;
    Ok(program)
}

/// The `i`-th given buffer of the product (a, then b).
fn given_buffer(p: &CudaProgram, i: usize) -> &smelt_compiler::gpu::program::Buffer {
    p.program
        .buffers
        .iter()
        .filter(|b| b.contents == smelt_compiler::gpu::program::Contents::Given)
        .nth(i)
        .expect("a matmul program has two given buffers")
}

/// The random data of the product's `i`-th input (the same on every call).
fn matmul_input(p: &CudaProgram, i: usize) -> Data {
    let b = given_buffer(p, i);
    random(b.elem, b.len, 7 + i as u64)
}

/// Median milliseconds of `work` on `stream` after three warm-up runs.
fn timed(
    streams: &Streams,
    from: Lane,
    repeats: usize,
    work: impl Fn() -> Result<(), CudaError>,
) -> Result<f32, CudaError> {
    let watch = Stopwatch::new()?;
    for _ in 0..3 {
        watch.time(streams, from, &work)?;
    }
    let mut samples = (0..repeats.max(1))
        .map(|_| watch.time(streams, from, &work))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(median(&mut samples))
}

fn matmul_ms(
    gpu: &Arc<Gpu>,
    target: &GpuTarget,
    size: usize,
    comm: u32,
    repeats: usize,
) -> Result<f32, CudaError> {
    let p = load_matmul(gpu, target, size, comm)?;
    timed(&p.streams, Lane::Compute, repeats, || p.launch())
}

/// The largest `--size`: a 32768³ bf16 product holds 6 GiB of operands on the GPU, and
/// its sampled reference rows take minutes on the CPU.
const MAX_SIZE: usize = 32768;

/// Rows of the product compared with the CPU, and the tolerance (bf16 output: 8-bit
/// mantissa; f32 accumulation on both sides).
const VERIFIED_ROWS: usize = 8;
const MATMUL_TOLERANCE: f64 = 2e-2;

/// Runs the timed product once and compares sampled rows with a float64 product on the
/// CPU of the same bf16 inputs; returns the worst gap relative to max(1, |row|).
fn verify_matmul(gpu: &Arc<Gpu>, target: &GpuTarget, size: usize) -> Result<f64, CudaError> {
    let p = load_matmul(gpu, target, size, 0)?;
    p.launch()?;
    p.synchronize()?;
    let y = p.download(p.program.graph.outputs[0])?;
    let (a, b) = (matmul_input(&p, 0), matmul_input(&p, 1));
    let rows = (0..VERIFIED_ROWS).map(|i| (i * 2 + 1) * size / (2 * VERIFIED_ROWS));
    let mut worst = 0.0f64;
    for r in rows.chain([0, size - 1]) {
        let reference: Vec<f64> = (0..size)
            .map(|c| {
                (0..size)
                    .map(|k| a.get_f64(r * size + k) * b.get_f64(k * size + c))
                    .sum()
            })
            .collect();
        let scale = reference.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (c, want) in reference.iter().enumerate() {
            let got = y.get_f64(r * size + c);
            let gap = (got - want).abs() / scale;
            if gap.is_nan() || gap > MATMUL_TOLERANCE {
                return Err(CudaError::WrongResult(format!(
                    "the bf16 {size}^3 product is wrong at [{r}, {c}]: {got} against {want} on the CPU"
                )));
            }
            worst = worst.max(gap);
        }
    }
    Ok(worst)
}

fn matmul_partitioned_ms(
    gpu: &Arc<Gpu>,
    target: &GpuTarget,
    size: usize,
    comm: u32,
    repeats: usize,
) -> Result<(f32, Partition, Vec<KernelOccupancy>), CudaError> {
    let p = load_matmul(gpu, target, size, comm)?;
    let s = &p.streams;
    let ms = timed(s, Lane::Compute, repeats, || p.launch())?;
    Ok((ms, s.partition.clone(), p.occupancy()))
}

enum SmidResult {
    Disjoint { comm: usize, compute: usize },
    Shared(usize),
    NotEnforced(String),
}

/// Runs `%smid` recorders on both streams at once: comm with exactly `comm` blocks,
/// compute with four blocks per SM, both spinning long enough to be co-resident.
fn smid_check(gpu: &Arc<Gpu>, comm: u32) -> Result<SmidResult, CudaError> {
    let streams = Streams::new(gpu, comm)?;
    let compute_blocks = gpu.sms as usize * 4;
    let kernels = KernelSet::load(
        gpu,
        &[
            smid_recorder("smid_comm", comm as usize),
            smid_recorder("smid_compute", compute_blocks),
        ],
    )?;
    let buffers = |n: usize| -> Result<[DeviceBuffer; 3], CudaError> {
        let smids = DeviceBuffer::alloc(smelt_compiler::gpu::kir::Elem::I32, n)?;
        smids.upload_blocking(&streams, Lane::Compute, &Data::I32(vec![-1; n]))?;
        let sink = DeviceBuffer::alloc(smelt_compiler::gpu::kir::Elem::F32, n)?;
        let spin = DeviceBuffer::alloc(smelt_compiler::gpu::kir::Elem::I32, 1)?;
        spin.upload_blocking(&streams, Lane::Compute, &Data::I32(vec![200_000]))?;
        Ok([smids, sink, spin])
    };
    let (c, k) = (buffers(comm as usize)?, buffers(compute_blocks)?);
    kernels.launch(
        "smid_comm",
        comm,
        &streams,
        Lane::Comm,
        &[&c[0], &c[1], &c[2]],
    )?;
    kernels.launch(
        "smid_compute",
        compute_blocks as u32,
        &streams,
        Lane::Compute,
        &[&k[0], &k[1], &k[2]],
    )?;
    streams.synchronize()?;
    let ids = |b: &DeviceBuffer| -> Result<BTreeSet<i32>, CudaError> {
        match b.download()? {
            Data::I32(v) if v.iter().all(|&s| s >= 0) => Ok(v.into_iter().collect()),
            _ => Err(CudaError::WrongResult(
                "a %smid recorder block did not run".into(),
            )),
        }
    };
    let (comm_ids, compute_ids) = (ids(&c[0])?, ids(&k[0])?);
    Ok(match &streams.partition {
        Partition::PersistentGrid { why, .. } => SmidResult::NotEnforced(format!(
            "(persistent-grid fallback: {why}; comm CTAs used {} SMs, compute {})",
            comm_ids.len(),
            compute_ids.len()
        )),
        Partition::Green(_) => match comm_ids.intersection(&compute_ids).count() {
            0 => SmidResult::Disjoint {
                comm: comm_ids.len(),
                compute: compute_ids.len(),
            },
            n => SmidResult::Shared(n),
        },
    })
}

/// Checks the last exchange against the host ([`identity_round_trip`]).
fn check_exchange(
    layout: &MoeLayout,
    ids: &[i32],
    named: &HashMap<&str, DeviceBuffer>,
    streams: &Streams,
) -> Result<(), CudaError> {
    streams.synchronize()?;
    let floats = |name: &str| -> Result<Vec<f32>, CudaError> {
        match named[name].download()? {
            Data::F32(v) => Ok(v),
            _ => Err(CudaError::Invalid(format!("{name} is not f32"))),
        }
    };
    let want = identity_round_trip(layout, ids, &floats("tokens")?, &floats("gates")?);
    let worst = floats("tokens_out")?
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0f32, f32::max);
    if worst > 1e-5 {
        return Err(CudaError::WrongResult(format!(
            "the loopback exchange returned tokens off by {worst:.2e} (relative)"
        )));
    }
    Ok(())
}

struct Overlap {
    comm: f32,
    compute: f32,
    both: f32,
    hidden: f64,
}

/// Loopback dispatch + combine on the comm stream beside matmuls on the compute stream:
/// the share of the shorter side that the concurrent run hides.
fn overlap(
    gpu: &Arc<Gpu>,
    target: &GpuTarget,
    comm: u32,
    repeats: usize,
) -> Result<Overlap, CudaError> {
    let layout = MoeLayout {
        tokens: 1024,
        dim: 2048,
        top_k: 4,
        experts: 32,
        capacity: 160,
        ranks: 1,
    };
    let dispatch = Loopback
        .dispatch(&layout)
        .map_err(|e| CudaError::Kernel(e.to_string()))?;
    let combine = Loopback
        .combine(&layout)
        .map_err(|e| CudaError::Kernel(e.to_string()))?;
    let mm = load_matmul(gpu, target, 4096, comm)?;
    let kernels = KernelSet::load(gpu, &[dispatch.kernel.clone(), combine.kernel.clone()])?;
    let ids: Vec<i32> = (0..(layout.tokens * layout.top_k) as u64)
        .map(|i| (uniform01(3, i) * layout.experts as f64) as i32 % layout.experts as i32)
        .collect();
    // Buffers by name, shared by both kernels. The loopback's experts are the identity,
    // so the combine reads the dispatch's expert buffer as the experts' output and
    // waits on the flags the dispatch sets: the sender raises them, nothing is preset.
    let key = |name: &'static str| match name {
        "expert_out" => "expert_in",
        "done" => "ready",
        other => other,
    };
    let mut named: HashMap<&str, DeviceBuffer> = HashMap::new();
    for (k, seed) in [(&dispatch, 10), (&combine, 20)] {
        for b in &k.buffers {
            if named.contains_key(key(b.name)) {
                continue;
            }
            let buf = DeviceBuffer::alloc(b.elem, b.len)?;
            let data = match b.name {
                "expert_ids" => Data::I32(ids.clone()),
                "epoch" => Data::I32(vec![1]),
                "ready" | "slots" => Data::I32(vec![0; b.len]),
                _ => random(b.elem, b.len, seed + named.len() as u64),
            };
            buf.upload_blocking(&mm.streams, Lane::Compute, &data)?;
            named.insert(key(b.name), buf);
        }
    }
    let args = |k: &CommKernel| -> Vec<&DeviceBuffer> {
        k.buffers.iter().map(|b| &named[key(b.name)]).collect()
    };
    let streams = &mm.streams;
    let exchange = || -> Result<(), CudaError> {
        // Lower the flags, so this exchange's combine waits for this dispatch.
        named["ready"].zero_in_order(streams, Lane::Comm)?;
        kernels.launch(
            &dispatch.kernel.name,
            comm,
            streams,
            Lane::Comm,
            &args(&dispatch),
        )?;
        kernels.launch(
            &combine.kernel.name,
            comm,
            streams,
            Lane::Comm,
            &args(&combine),
        )
    };
    let comm_ms = timed(streams, Lane::Comm, repeats, exchange)?;
    let one_mm = timed(streams, Lane::Compute, repeats, || mm.launch())?;
    // Enough matmuls to last about as long as the exchange.
    let turns = ((comm_ms / one_mm).ceil() as usize).max(1);
    let compute = || -> Result<(), CudaError> { (0..turns).try_for_each(|_| mm.launch()) };
    let compute_ms = timed(streams, Lane::Compute, repeats, compute)?;
    let both = timed(streams, Lane::Compute, repeats, || {
        exchange()?;
        compute()
    })?;
    check_exchange(&layout, &ids, &named, streams)?;
    // Unclamped: below 0 the two streams slowed each other down, above 1 the timing
    // is noisy; either is worth seeing.
    let hidden = f64::from(comm_ms + compute_ms - both) / f64::from(comm_ms.min(compute_ms));
    Ok(Overlap {
        comm: comm_ms,
        compute: compute_ms,
        both,
        hidden,
    })
}
