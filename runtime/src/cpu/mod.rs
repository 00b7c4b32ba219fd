//! The CPU backend: runs a schedule on `f32` buffers with fast kernels (matrix products
//! through the `gemm` crate, both cores through `rayon`, pointwise kernels JIT-compiled
//! by Cranelift).
//!
//! Compiling a graph schedules it (`compiler::schedule`): composites are expanded
//! except those with library kernels here (attention in `attention.rs`, the row
//! composites in `rows.rs`), chains of elementwise ops are fused into pointwise kernels
//! of the kernel IR (`fused.rs`), additive epilogues fold into matrix products, and the
//! remaining ops run library kernels (`kernels.rs`, `routing.rs`). Every step writes
//! into the buffer the schedule's memory plan gives it (`buffers.rs`): slots reused by
//! liveness and kept across runs, or an operand's buffer overwritten in place; a
//! training loop keeps its parameters and state in a [`Resident`], whose replaced
//! buffers hold the next step's updates. Floats other than `f32` are
//! not supported here (the interpreter runs them). Every kernel is tested against the
//! reference interpreter on random inputs (`runtime/tests/cpu_vs_interp.rs`).

mod attention;
mod buffers;
mod comm_lane;
mod conv;
mod fused;
mod kernels;
mod paged_attention;
pub mod quant;
mod routing;
mod rows;

pub use buffers::AllocStats;

use crate::interp::{bind_more, bind_shapes_except, Execution, RunError};
use crate::tensor::{Data, Tensor};
use buffers::{Arena, Out};
use fused::Input;
use quant::QuantMatrix;
use smelt_compiler::codegen::cranelift::{self, JitKernel};
use smelt_compiler::ir::{Bindings, DType, Def, Graph, Op, ValueId};
use smelt_compiler::kernel::PointwiseKernel;
use smelt_compiler::schedule::memory::Home;
use smelt_compiler::schedule::{schedule_with, MemoryPlan, Schedule, Step};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A buffer of the CPU backend.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Buf {
    F32(Vec<f32>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Buf {
    fn len(&self) -> usize {
        match self {
            Buf::F32(v) => v.len(),
            Buf::Int(v) => v.len(),
            Buf::Bool(v) => v.len(),
        }
    }
}

/// A value during a run: its buffer and concrete shape. Buffers are immutable while
/// shared, so a reshape, a loopback exchange or a resident parameter is an alias rather
/// than a copy; a step writes in place only into a buffer it owns alone.
#[derive(Clone, Debug)]
pub(crate) struct Val {
    data: Arc<Buf>,
    pub shape: Vec<usize>,
}

impl Val {
    pub fn new(buf: Buf, shape: Vec<usize>) -> Val {
        Val {
            data: Arc::new(buf),
            shape,
        }
    }

    /// The same buffer seen with another shape of as many elements.
    fn alias(&self, shape: Vec<usize>) -> Val {
        Val {
            data: self.data.clone(),
            shape,
        }
    }

    pub fn buf(&self) -> &Buf {
        &self.data
    }

    pub fn f32(&self) -> &[f32] {
        match self.buf() {
            Buf::F32(v) => v,
            _ => unreachable!("operand is f32 (verified types)"),
        }
    }
}

/// A graph prepared for the CPU backend.
#[derive(Debug, Clone)]
pub struct CpuProgram {
    schedule: Schedule,
    /// Native code for each step that is a pointwise kernel (`None` for library steps,
    /// or when the kernel runs on the kernel-IR evaluator).
    jit: Vec<Option<Arc<JitKernel>>>,
    /// Memory plans with their slot buffers, most recent bindings first (a run takes
    /// its arena out while it runs).
    arenas: Arc<Mutex<Vec<Arena>>>,
    /// What the latest run allocated.
    last_alloc: Arc<Mutex<AllocStats>>,
    /// How the latest run's collectives went.
    last_comm: Arc<Mutex<CommStats>>,
    /// Whether a step is a collective (decided once, not per run).
    communicates: bool,
}

/// The collectives of a run on the communication lane (all zero outside a world of
/// several ranks).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommStats {
    /// Collectives run.
    pub collectives: usize,
    /// Seconds the lane spent in them.
    pub seconds: f64,
    /// Seconds the step loop stood waiting for their results.
    pub waited: f64,
}

impl CommStats {
    /// The share of communication time that compute hid (1 when nothing was waited).
    pub fn hidden(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 1.0;
        }
        (1.0 - self.waited / self.seconds).clamp(0.0, 1.0)
    }
}

/// What a run returns: the outputs, and the updates in backend buffers or (with
/// [`UpdatesTo::Host`]) as host tensors.
type Ran = (Vec<Tensor>, Updates, Vec<(String, Tensor)>);

/// Arenas kept per program: a training loop needs one; evaluation at another batch
/// size a second.
const ARENAS_KEPT: usize = 2;

/// Where updates go at the end of a run.
#[derive(Clone, Copy, PartialEq)]
enum UpdatesTo {
    /// Stay in backend buffers ([`Updates`]).
    Backend,
    /// Host tensors (their buffers serve the next run).
    Host,
}

/// Why a graph cannot run on the CPU backend.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the cpu backend cannot run %{value}: {reason} (use --device interp)")]
pub struct Unsupported {
    /// The value.
    pub value: String,
    /// Why.
    pub reason: String,
}

impl CpuProgram {
    /// Prepares `graph` (which must verify).
    pub fn compile(graph: &Graph) -> Result<CpuProgram, Unsupported> {
        CpuProgram::compile_with(graph, true)
    }

    /// Like [`CpuProgram::compile`]; `fuse: false` runs every op as its own kernel (the
    /// op-by-op baseline of `smelt bench`).
    pub fn compile_with(graph: &Graph, fuse: bool) -> Result<CpuProgram, Unsupported> {
        CpuProgram::compile_options(graph, fuse, true)
    }

    /// Like [`CpuProgram::compile_with`]; `jit: false` runs pointwise kernels on the
    /// kernel-IR evaluator instead of native code (the reference the JIT is tested against).
    pub fn compile_options(
        graph: &Graph,
        fuse: bool,
        jit: bool,
    ) -> Result<CpuProgram, Unsupported> {
        CpuProgram::from_schedule(schedule_with(graph, fuse), jit)
    }

    /// Prepares an already scheduled graph (as stored in a compiled artefact): only the
    /// pointwise kernels are compiled to native code (`jit: false`: evaluated instead).
    pub fn from_schedule(schedule: Schedule, jit: bool) -> Result<CpuProgram, Unsupported> {
        let g = &schedule.graph;
        if let Some(v) = g
            .values
            .iter()
            .find(|v| v.ty.dtype.is_float() && v.ty.dtype != DType::F32)
        {
            return Err(Unsupported {
                value: v.name.clone(),
                reason: format!("{} is not supported yet", v.ty.dtype),
            });
        }
        // Native code depends only on a kernel's body, not on the values it reads or
        // their shapes, so kernels with equal bodies (the same update for every
        // parameter, the same block in every layer) share one compilation.
        let mut compiled: HashMap<String, Arc<JitKernel>> = HashMap::new();
        let mut native = |k: &PointwiseKernel| -> Result<Arc<JitKernel>, Unsupported> {
            let body = format!("{:?}", (k.rank, &k.exprs));
            if let Some(j) = compiled.get(&body) {
                return Ok(j.clone());
            }
            let j = Arc::new(compile_kernel(k)?);
            compiled.insert(body, j.clone());
            Ok(j)
        };
        let jit = schedule
            .steps
            .iter()
            .map(|s| match s {
                Step::Pointwise(k) if jit => native(k).map(Some),
                Step::MatMul { init: Some(k), .. } if jit => native(k).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let g = &schedule.graph;
        let communicates =
            (schedule.steps.iter()).any(|s| matches!(g.op(s.output()), Some(Op::AllReduce)));
        Ok(CpuProgram {
            schedule,
            jit,
            arenas: Arc::default(),
            last_alloc: Arc::default(),
            last_comm: Arc::default(),
            communicates,
        })
    }

    /// What the latest run allocated for step outputs (a loop's later runs: nothing).
    pub fn last_alloc(&self) -> AllocStats {
        *self.last_alloc.lock().expect("no run panicked holding it")
    }

    /// How the latest run's collectives went.
    pub fn last_comm(&self) -> CommStats {
        *self.last_comm.lock().expect("no run panicked holding it")
    }

    /// The memory plan runs with `bindings` follow.
    pub fn memory_plan(&self, bindings: &Bindings) -> MemoryPlan {
        MemoryPlan::new(&self.schedule, bindings)
    }

    /// The arena for `bindings`: kept from an earlier run, or newly planned.
    fn take_arena(&self, bindings: &Bindings) -> Arena {
        let mut kept = self.arenas.lock().expect("no run panicked holding it");
        match kept.iter().position(|a| &a.bindings == bindings) {
            Some(i) => kept.remove(i),
            None => Arena::new(bindings.clone(), self.memory_plan(bindings)),
        }
    }

    /// Keeps `arena` for the next run (dropping the least recently used beyond
    /// [`ARENAS_KEPT`]).
    fn keep_arena(&self, arena: Arena) {
        *self.last_alloc.lock().expect("no run panicked holding it") = arena.stats;
        let mut kept = self.arenas.lock().expect("no run panicked holding it");
        kept.insert(0, arena);
        kept.truncate(ARENAS_KEPT);
    }

    /// Checks that `name` is a parameter or state value of type `dtype[shape]`, which
    /// a [`Resident`] may hold.
    fn check_held(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<(), RunError> {
        let g = &self.schedule.graph;
        let id = g
            .find(name)
            .filter(|&id| !matches!(g.value(id).def, Def::Node { .. } | Def::Input))
            .ok_or_else(|| RunError::Unknown(name.to_string()))?;
        let ty = g.ty(id);
        let static_shape: Option<Vec<usize>> = ty
            .dims()
            .iter()
            .map(|d| d.as_static().map(|n| n as usize))
            .collect();
        if dtype != ty.dtype || static_shape.as_deref() != Some(shape) {
            return Err(RunError::Mismatch {
                value: id,
                name: name.to_string(),
                expected: ty.to_string(),
                found: format!("{dtype}{shape:?}"),
                why: String::new(),
            });
        }
        Ok(())
    }

    /// Checks that parameter `name`, of type `f32[k, n]`, is read only as the right
    /// operand of matrix products, as stored (what a quantised weight supports).
    pub(crate) fn read_only_as_weight(&self, name: &str, [k, n]: [usize; 2]) -> Result<(), String> {
        self.read_only_by(name, [k, n], "a product's weight", |_, step, id| {
            matches!(step, Step::MatMul { rhs, lhs, .. }
                if rhs.value == id && !rhs.transposed && lhs.value != id)
        })
    }

    /// Checks that parameter `name`, of type `f32[rows, k]`, is read only as the table
    /// of row lookups (`gather` along axis 0), what a quantised table supports.
    pub(crate) fn read_only_as_table(
        &self,
        name: &str,
        [rows, k]: [usize; 2],
    ) -> Result<(), String> {
        self.read_only_by(name, [rows, k], "a lookup table", |g, step, id| {
            let Step::Library(v) = step else { return false };
            matches!(&g.value(*v).def,
                Def::Node { op: Op::Gather { axis: 0 }, operands }
                    if operands[0] == id && operands[1] != id)
        })
    }

    /// Checks that `name` is an `f32` parameter of shape `shape` and that every step
    /// reading it is one `allowed` accepts (what a held form of it supports).
    fn read_only_by(
        &self,
        name: &str,
        shape: [usize; 2],
        what: &str,
        allowed: impl Fn(&Graph, &Step, ValueId) -> bool,
    ) -> Result<(), String> {
        self.check_held(name, DType::F32, &shape)
            .map_err(|e| e.to_string())?;
        let g = &self.schedule.graph;
        let id = g.find(name).expect("checked above");
        for step in &self.schedule.steps {
            if !allowed(g, step, id) && step.reads(g).contains(&id) {
                let user = &g.value(step.output()).name;
                return Err(format!("'{name}' is read by %{user} other than as {what}"));
            }
        }
        Ok(())
    }

    /// The schedule this program runs.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs the program on `feeds` (every input, parameter and state value by name).
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Execution, RunError> {
        let (outputs, _, updates) = self.run_held(feeds, &Resident::default(), UpdatesTo::Host)?;
        Ok(Execution { outputs, updates })
    }

    /// Runs one step of a loop whose parameters and state stay in this backend's
    /// buffers: values named in `resident` are read from it, the others from `feeds`.
    /// Returns the outputs and the updates, which stay on the backend until
    /// [`Resident::apply`] makes them the new state (a training loop checks the loss
    /// first). Nothing is converted to or from `f64` for held values.
    pub fn run_resident(
        &self,
        feeds: &HashMap<String, Tensor>,
        resident: &Resident,
    ) -> Result<(Vec<Tensor>, Updates), RunError> {
        let (outputs, updates, _) = self.run_held(feeds, resident, UpdatesTo::Backend)?;
        Ok((outputs, updates))
    }

    fn run_held(
        &self,
        feeds: &HashMap<String, Tensor>,
        resident: &Resident,
        updates_to: UpdatesTo,
    ) -> Result<Ran, RunError> {
        let g = &self.schedule.graph;
        let held = |name: &str| resident.values.contains_key(name);
        let mut bindings = bind_shapes_except(g, feeds, &held)?;
        // Held inputs (a KV cache) bind the symbols only they have (`past`).
        let held_inputs: Vec<(ValueId, DType, &[usize])> = g
            .inputs()
            .filter_map(|id| {
                let (dtype, v) = resident.values.get(&g.value(id).name)?;
                Some((id, *dtype, &v.shape[..]))
            })
            .collect();
        bind_more(g, &mut bindings, &held_inputs)?;
        let mut arena = self.take_arena(&bindings);
        arena.stats = AllocStats::default();
        // In a world of several ranks, collectives go to a communication lane that
        // overlaps them with the steps that do not need their results.
        let communicating = crate::comm::current_world().filter(|_| self.communicates);
        let run = match communicating {
            None => self.run_planned(&mut arena, &bindings, feeds, resident, updates_to, None),
            Some(world) => std::thread::scope(|scope| {
                let lane = comm_lane::Lane::start(scope, world);
                let lane = Some(&lane);
                self.run_planned(&mut arena, &bindings, feeds, resident, updates_to, lane)
            }),
        };
        self.keep_arena(arena);
        run
    }

    /// Runs the steps with every output in the buffer `arena`'s plan gives it, and
    /// collectives on `lane` when there is one.
    fn run_planned(
        &self,
        arena: &mut Arena,
        bindings: &Bindings,
        feeds: &HashMap<String, Tensor>,
        resident: &Resident,
        updates_to: UpdatesTo,
        lane: Option<&comm_lane::Lane>,
    ) -> Result<Ran, RunError> {
        let g = &self.schedule.graph;
        let mut in_flight: HashMap<ValueId, comm_lane::InFlight> = HashMap::new();
        let comm = std::cell::Cell::new(CommStats::default());
        let landed = |id: ValueId, flight: comm_lane::InFlight| {
            let began = std::time::Instant::now();
            let sum = flight.wait();
            let mut stats = comm.get();
            stats.waited += began.elapsed().as_secs_f64();
            stats.collectives += 1;
            if let Ok(landed) = &sum {
                stats.seconds += landed.seconds;
            }
            comm.set(stats);
            sum.map(|l| Val::new(Buf::F32(l.sum), l.shape))
                .map_err(|e| RunError::Eval {
                    value: id,
                    name: g.value(id).name.clone(),
                    message: e.to_string(),
                })
        };
        // The buffers the state replaced last step hold this step's updates.
        let mut update_spares: HashMap<ValueId, Buf> = g
            .updates
            .iter()
            .filter_map(|&(t, v)| Some((v, resident.take_spare(&g.value(t).name)?)))
            .collect();
        let mut env: Vec<Option<Val>> = vec![None; g.values.len()];
        for id in g.ids() {
            if !matches!(g.value(id).def, Def::Node { .. }) {
                let name = &g.value(id).name;
                env[id.index()] = Some(match resident.values.get(name) {
                    Some((_, v)) => v.clone(),
                    None => to_val(&feeds[name]),
                });
            }
        }
        let plan = arena.plan.clone();
        for (i, step) in self.schedule.steps.iter().enumerate() {
            let mem = &plan.steps[i];
            let out = step.output();
            let v = g.value(out);
            let reads = step.reads(g);
            let blocking_collective = matches!(
                g.op(out),
                Some(Op::AllGather { .. } | Op::ReduceScatter { .. })
            );
            if blocking_collective {
                // This thread's collective must follow, on every rank, the sums the
                // lane has been given: let them land first.
                for (id, flight) in in_flight.drain() {
                    env[id.index()] = Some(landed(id, flight)?);
                }
            }
            if !in_flight.is_empty() {
                for r in &reads {
                    if let Some(flight) = in_flight.remove(r) {
                        env[r.index()] = Some(landed(*r, flight)?);
                    }
                }
            }
            let shape = v.ty.shape.eval(bindings)?;
            let n: usize = shape.iter().product();
            // An in-place operand leaves the environment: the step owns its buffer.
            let overwritten = mem.in_place.map(|x| {
                let root = plan.roots[x.index()];
                let val = env[x.index()].take().expect("live until its last read");
                if root != x {
                    // The buffer's own entry ends here too (the plan checked it).
                    env[root.index()] = None;
                }
                Arc::try_unwrap(val.data).unwrap_or_else(|shared| {
                    // Not reached when the plan is right; a copy keeps the result right
                    // (and counts as allocated).
                    debug_assert!(false, "an in-place operand is owned by the step");
                    let copy = (*shared).clone();
                    arena.stats.temporary_bytes += buffers::storage_of(&copy).1 as u64;
                    copy
                })
            });
            let escaping = mem.output == Home::Escapes;
            let mut dest = || match mem.output {
                Home::Slot(s) => arena.take_slot(s),
                Home::Escapes => {
                    let spare = update_spares.remove(&out);
                    arena.take_escaping(out, v.ty.dtype, n, spare)
                }
                Home::Alias(_) => Out::fresh(),
            };
            let live = |o: &ValueId| {
                env[o.index()].as_ref().unwrap_or_else(|| {
                    panic!(
                        "internal: step {i} reads %{} outside its live range",
                        g.value(*o).name
                    )
                })
            };
            let inputs = |reads: &[ValueId]| -> Vec<Input> {
                reads
                    .iter()
                    .map(|o| match mem.in_place {
                        Some(x) if x == *o => Input::Output,
                        _ => Input::Val(live(o)),
                    })
                    .collect()
            };
            // A pointwise kernel into its planned buffer (or in place).
            let pointwise = |k: &PointwiseKernel, ins: &[Input], buf: Buf| match &self.jit[i] {
                Some(native) => fused::run_jit(k, native, ins, &shape, buf),
                None => fused::run(k, ins, &shape, buf),
            };
            let (buf, given) = match step {
                Step::Pointwise(k) => {
                    let buf = overwritten.unwrap_or_else(|| dest().any(n));
                    let given = buffers::storage_of(&buf);
                    (pointwise(k, &inputs(&reads), buf), given)
                }
                Step::Library(_) => {
                    let Def::Node { op, .. } = &v.def else {
                        unreachable!("library steps are nodes")
                    };
                    let args: Vec<&Val> = reads.iter().map(live).collect();
                    if let Home::Alias(_) = mem.output {
                        // Row-major data does not move: same buffer, new shape. A
                        // loopback exchange with one rank is the identity.
                        env[out.index()] = Some(args[0].alias(shape));
                        self.release(arena, &mut env, &mem.release);
                        continue;
                    }
                    let out_buf = dest();
                    let given = buffers::given(&out_buf);
                    if let (Op::AllReduce, Some(lane)) = (op, lane) {
                        // A copy into the planned buffer travels; the sum lands there.
                        let buf = kernels::copy(out_buf, args[0]);
                        arena.account(given, &buf, escaping);
                        let Buf::F32(values) = buf else {
                            unreachable!("all_reduce sums f32 buffers")
                        };
                        in_flight.insert(out, lane.all_reduce(values, shape));
                        self.release(arena, &mut env, &mem.release);
                        continue;
                    }
                    let table = match op {
                        Op::Gather { axis: 0 } if !resident.tables.is_empty() => {
                            resident.tables.get(&g.value(reads[0]).name)
                        }
                        _ => None,
                    };
                    let buf = match table {
                        Some(t) => quant_lookup(out_buf, t, args[1]),
                        None => kernels::eval(
                            op,
                            &args,
                            &step.library_operands(g),
                            v.ty.dtype,
                            &shape,
                            out_buf,
                        ),
                    }
                    .map_err(|message| RunError::Eval {
                        value: out,
                        name: v.name.clone(),
                        message,
                    })?;
                    (buf, given)
                }
                Step::MatMul { lhs, rhs, init, .. } => {
                    // The additive epilogue first, then the product accumulates into it.
                    let (start, given, out_buf) = match init {
                        Some(k) => {
                            let buf = overwritten.unwrap_or_else(|| dest().any(n));
                            let given = buffers::storage_of(&buf);
                            (
                                Some(pointwise(k, &inputs(&reads[2..]), buf)),
                                given,
                                Out::fresh(),
                            )
                        }
                        None => {
                            let out_buf = dest();
                            (None, buffers::given(&out_buf), out_buf)
                        }
                    };
                    let (a, b) = (live(&reads[0]), live(&reads[1]));
                    let quantised = match resident.quantised.is_empty() {
                        true => None,
                        false => resident.quantised.get(&g.value(rhs.value).name),
                    };
                    let product = match quantised {
                        Some(w) => quant_product(
                            out_buf,
                            a,
                            lhs.transposed,
                            (w, resident.rows_independent),
                            start,
                        ),
                        None => kernels::matmul(
                            out_buf,
                            a,
                            lhs.transposed,
                            b,
                            rhs.transposed,
                            &shape,
                            start,
                        ),
                    };
                    (product, given)
                }
            };
            arena.account(given, &buf, escaping);
            debug_assert_eq!(buf.len(), n);
            env[out.index()] = Some(Val::new(buf, shape));
            self.release(arena, &mut env, &mem.release);
        }
        for (id, flight) in in_flight.drain() {
            env[id.index()] = Some(landed(id, flight)?);
        }
        if lane.is_some() {
            *self.last_comm.lock().expect("no run panicked holding it") = comm.get();
        }
        let kept = |id: ValueId| env[id.index()].clone().expect("kept to the end");
        let outputs = g
            .outputs
            .iter()
            .map(|&o| to_tensor(g.ty(o).dtype, &kept(o)))
            .collect();
        let mut updates: Vec<(String, (DType, Val))> = g
            .updates
            .iter()
            .map(|&(t, v)| (g.value(t).name.clone(), (g.ty(t).dtype, kept(v))))
            .collect();
        let mut host_updates = Vec::new();
        if updates_to == UpdatesTo::Host {
            for (name, (dtype, v)) in updates.drain(..) {
                host_updates.push((name, to_tensor(dtype, &v)));
            }
        }
        // Escaping values converted to host tensors leave their buffers to the next run.
        let handed: Vec<ValueId> = g
            .outputs
            .iter()
            .chain(g.updates.iter().map(|(_, v)| v))
            .copied()
            .collect();
        for o in handed {
            if let Some(val) = env[o.index()].take() {
                let root = plan.roots[o.index()];
                if !plan.escaping.contains(&root) {
                    continue; // an argument: the caller's
                }
                if let Ok(buf) = Arc::try_unwrap(val.data) {
                    arena.keep_spare(root, buf);
                }
            }
        }
        Ok((outputs, Updates(updates), host_updates))
    }

    /// Drops the values a step releases; slot-backed buffers go back to their slots.
    fn release(&self, arena: &mut Arena, env: &mut [Option<Val>], release: &[ValueId]) {
        for &r in release {
            let Some(val) = env[r.index()].take() else {
                continue; // overwritten in place
            };
            if let Some(s) = arena.plan.slot_of[r.index()] {
                // Views were released first, so the buffer is unshared (else a fresh
                // one will be allocated, and counted).
                if let Ok(buf) = Arc::try_unwrap(val.data) {
                    arena.give_back(s, buf);
                }
            }
        }
    }
}

/// Parameters and optimiser state held in the CPU backend's `f32` buffers across the
/// steps of a training loop, by name.
///
/// The buffers that updates replace are kept as spares and hold the next step's updates
/// of the same names ("in-place" updates one step apart): a step never writes over the
/// state it reads, so a step that is not applied (a non-finite loss) changes nothing.
///
/// Weights of matrix products may be held quantised instead ([`Resident::quantise`]).
#[derive(Debug, Default)]
pub struct Resident {
    values: HashMap<String, (DType, Val)>,
    spares: Mutex<HashMap<String, Buf>>,
    quantised: HashMap<String, Arc<QuantMatrix>>,
    tables: HashMap<String, Arc<QuantMatrix>>,
    /// Products with quantised weights compute each row of activations on its own,
    /// whatever the number of rows ([`Resident::set_rows_independent`]).
    rows_independent: bool,
}

impl Clone for Resident {
    /// The same values (shared); spares are not cloned.
    fn clone(&self) -> Resident {
        Resident {
            values: self.values.clone(),
            spares: Mutex::default(),
            quantised: self.quantised.clone(),
            tables: self.tables.clone(),
            rows_independent: self.rows_independent,
        }
    }
}

/// How a [`Resident`] quantised matrix is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantUse {
    /// As the right operand `[k, n]` of matrix products.
    Weight,
    /// As a lookup table `[n, k]` of the stored rows.
    Table,
}

/// The updates of one [`CpuProgram::run_resident`], still in the backend's buffers.
#[derive(Debug)]
pub struct Updates(Vec<(String, (DType, Val))>);

impl Resident {
    /// Takes `tensors` (parameters and state of `program`'s graph, checked against
    /// their declared types) into the backend.
    pub fn new(
        program: &CpuProgram,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Resident, RunError> {
        let mut values = HashMap::new();
        for (name, t) in tensors {
            program.check_held(name, t.dtype, &t.shape)?;
            values.insert(name.clone(), (t.dtype, to_val(t)));
        }
        Ok(Resident {
            values,
            spares: Mutex::default(),
            quantised: HashMap::new(),
            tables: HashMap::new(),
            rows_independent: false,
        })
    }

    /// Takes `f32` parameters `(name, shape, values)` of `program`'s graph into the
    /// backend without a detour through `f64` tensors (a pretrained model's weights).
    pub fn from_f32(
        program: &CpuProgram,
        weights: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Resident, RunError> {
        let mut held = Resident::default();
        for (name, shape, data) in weights {
            held.insert_f32(program, name, shape, data)?;
        }
        Ok(held)
    }

    /// Holds the `f32` values of parameter (or state) `name` of `program`'s graph.
    pub fn insert_f32(
        &mut self,
        program: &CpuProgram,
        name: String,
        shape: Vec<usize>,
        data: Vec<f32>,
    ) -> Result<(), RunError> {
        program.check_held(&name, DType::F32, &shape)?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(RunError::Unknown(format!(
                "{name} (its values do not fill {shape:?})"
            )));
        }
        self.values
            .insert(name, (DType::F32, Val::new(Buf::F32(data), shape)));
        Ok(())
    }

    /// Holds parameter `name` of `programs` as the quantised `matrix` instead of `f32`
    /// values, as `usage` says: a product's weight `[k, n]` (every program must read it
    /// only as the right operand of matrix products, as stored; [`quant::matmul`]
    /// computes them), or a lookup table `[n, k]` of the matrix's stored rows (every
    /// program must only gather its rows). Otherwise nothing is held and the reason is
    /// returned.
    pub(crate) fn quantise(
        &mut self,
        programs: &[&CpuProgram],
        name: &str,
        matrix: Arc<QuantMatrix>,
        usage: QuantUse,
    ) -> Result<(), String> {
        let (k, n) = matrix.dims();
        let shape = match usage {
            QuantUse::Weight => [k, n],
            QuantUse::Table => [n, k],
        };
        for program in programs {
            match usage {
                QuantUse::Weight => program.read_only_as_weight(name, shape)?,
                QuantUse::Table => program.read_only_as_table(name, shape)?,
            }
        }
        // The f32 value is never read: an empty buffer keeps the declared shape.
        let placeholder = Val::new(Buf::F32(Vec::new()), shape.to_vec());
        self.values
            .insert(name.to_string(), (DType::F32, placeholder));
        let held = match usage {
            QuantUse::Weight => &mut self.quantised,
            QuantUse::Table => &mut self.tables,
        };
        held.insert(name.to_string(), matrix);
        Ok(())
    }

    /// With `on`, products with quantised weights round every row of activations to 8
    /// bits, however many rows there are, so each row's result does not depend on the
    /// others (batched decoding: a sequence's tokens do not depend on its batch).
    /// Otherwise many rows (a prompt) are multiplied by dequantised tiles instead.
    pub fn set_rows_independent(&mut self, on: bool) {
        self.rows_independent = on;
    }

    /// Holds `f32` values of shape `shape` for input `name` (data that stays in the
    /// backend between runs, such as a KV cache); checked against the graph at each run.
    pub fn set_input(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        self.values.insert(
            name.to_string(),
            (DType::F32, Val::new(Buf::F32(data), shape)),
        );
    }

    /// Removes held input `name` and returns its values (without a copy when nothing
    /// else shares them).
    pub fn take_input(&mut self, name: &str) -> Option<Vec<f32>> {
        let (_, v) = self.values.remove(name)?;
        let buf = Arc::try_unwrap(v.data).unwrap_or_else(|shared| (*shared).clone());
        match buf {
            Buf::F32(data) => Some(data),
            _ => None,
        }
    }

    /// Bytes of the held values (quantised weights at their block size).
    pub fn size_bytes(&self) -> usize {
        let plain: usize = self.values.values().map(|(_, v)| v.buf().len() * 4).sum();
        // A matrix shared by a product and a lookup (a tied head) counts once.
        let mut seen = std::collections::HashSet::new();
        let blocks = self.quantised.values().chain(self.tables.values());
        plain
            + blocks
                .filter(|q| seen.insert(Arc::as_ptr(q)))
                .map(|q| q.size_bytes())
                .sum::<usize>()
    }

    /// Makes the updates the new values (no copy); the buffers they replace, where
    /// nothing else holds them, become spares for the next updates.
    pub fn apply(&mut self, updates: Updates) {
        let spares = self.spares.get_mut().expect("no run panicked holding it");
        for (name, value) in updates.0 {
            if let Some((_, old)) = self.values.insert(name.clone(), value) {
                if let Ok(buf) = Arc::try_unwrap(old.data) {
                    spares.insert(name, buf);
                }
            }
        }
    }

    /// The spare buffer for the next update of `name`, if any.
    fn take_spare(&self, name: &str) -> Option<Buf> {
        self.spares
            .lock()
            .expect("no run panicked holding it")
            .remove(name)
    }

    /// The held values as host tensors (for checkpoints).
    pub fn to_tensors(&self) -> HashMap<String, Tensor> {
        self.values
            .iter()
            .map(|(name, (dtype, v))| (name.clone(), to_tensor(*dtype, v)))
            .collect()
    }
}

/// The rows `ids` of a quantised lookup table, as `f32`.
fn quant_lookup(out: Out, table: &QuantMatrix, ids: &Val) -> Result<Buf, String> {
    let rows = kernels::indices(ids, table.dims().1, 0)?;
    let mut values = out.f32_overwritten(0);
    for &r in rows {
        table.append_row(r as usize, &mut values);
    }
    Ok(Buf::F32(values))
}

/// `op(a) · w` for a quantised weight `w [k, n]`, written into `out` or added to
/// `start`; `a` is `[..., m, k]` (or its transpose), and batches share `w`. With
/// `rows_independent`, every row is computed on its own ([`quant::matmul`]).
fn quant_product(
    out: Out,
    a: &Val,
    transposed: bool,
    (w, rows_independent): (&QuantMatrix, bool),
    start: Option<Buf>,
) -> Buf {
    let (k, n) = w.dims();
    let rows = a.f32().len() / k;
    let copied;
    let lhs: &[f32] = if transposed {
        // `[..., k, m]` read as `[..., m, k]`: made contiguous once.
        let r = a.shape.len();
        let m = a.shape[r - 1];
        let batch = rows / m;
        let src = a.f32();
        copied = (0..batch)
            .flat_map(|b| (0..m).flat_map(move |i| (0..k).map(move |j| src[b * m * k + j * m + i])))
            .collect::<Vec<f32>>();
        &copied
    } else {
        a.f32()
    };
    let (mut result, accumulate) = match start {
        Some(Buf::F32(v)) => (v, true),
        _ => (out.f32_overwritten(rows * n), false),
    };
    quant::matmul(lhs, rows, w, &mut result, accumulate, rows_independent);
    Buf::F32(result)
}

/// Compiles a pointwise kernel to native code.
fn compile_kernel(k: &PointwiseKernel) -> Result<JitKernel, Unsupported> {
    cranelift::compile(k).map_err(|e| Unsupported {
        value: k.name.clone(),
        reason: e.to_string(),
    })
}

fn to_val(t: &Tensor) -> Val {
    let buf = match &t.data {
        Data::Float(v) => Buf::F32(v.iter().map(|&x| x as f32).collect()),
        Data::Int(v) => Buf::Int(v.clone()),
        Data::Bool(v) => Buf::Bool(v.clone()),
    };
    Val::new(buf, t.shape.clone())
}

fn to_tensor(dtype: DType, v: &Val) -> Tensor {
    let data = match v.buf() {
        Buf::F32(x) => Data::Float(x.iter().map(|&a| f64::from(a)).collect()),
        Buf::Int(x) => Data::Int(x.clone()),
        Buf::Bool(x) => Data::Bool(x.clone()),
    };
    Tensor {
        dtype,
        shape: v.shape.clone(),
        data,
    }
}
