//! Memory planning: every buffer a step writes gets a *slot*, a buffer the backend keeps
//! and reuses across steps and runs, by liveness.
//!
//! - A value lives from the step that writes it to the last step that reads it. A
//!   reshape or a loopback exchange *aliases* its operand (no buffer of its own) and
//!   extends the life of the buffer it views to its own last read.
//! - Values whose lives do not overlap share a slot of their dtype; a slot is as large as
//!   its largest value (largest values placed first, each in the first slot free for
//!   its whole life).
//! - *In place*: a pointwise step (or the additive epilogue of a matrix product) writes
//!   into the slot of an operand whose life ends at this step when it reads that operand
//!   only at the index it writes (same type, identity axis map, no other view of the
//!   buffer read by the step, and not an operand of the product).
//! - *Escaping* values (outputs and update values, and any buffer one of them aliases)
//!   leave the run, so they have no slot: the backend gives them a buffer of their own
//!   (recycled from the previous run's escaped buffer once the caller lets it go).
//!
//! The CPU backend allocates exactly from this plan (`runtime/src/cpu/buffers.rs`), and
//! `smelt dump-ir --stage scheduled` prints it.

use super::first_fit::FirstFit;
use super::{Schedule, Step};
use crate::ir::{Bindings, DType, Def, DimError, Graph, Op, ValueId};
use crate::kernel::{Expr, PointwiseKernel};
use std::fmt::Write;

/// Where the value a step writes lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// In slot `n` of [`MemoryPlan::slots`].
    Slot(usize),
    /// A view of another buffer (this root value's): no buffer of its own.
    Alias(ValueId),
    /// Leaves the run (an output or an update, or aliased by one): a buffer of its own.
    Escapes,
}

/// What one step does with memory.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMemory {
    /// The value the step writes.
    pub value: ValueId,
    /// Where it lives.
    pub output: Home,
    /// The operand whose buffer the step overwrites (its life ends here; the output takes
    /// over its slot).
    pub in_place: Option<ValueId>,
    /// Values no later step needs, dropped after this step: views and arguments first,
    /// then slot-backed values, which give their buffer back to their slot.
    pub release: Vec<ValueId>,
}

/// One value held by a slot.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    /// The value.
    pub value: ValueId,
    /// The step writing it.
    pub first: usize,
    /// The last step needing its buffer (its own reads and those of its aliases).
    pub last: usize,
    /// The operand it overwrote in place, if any.
    pub in_place_of: Option<ValueId>,
}

/// A reusable buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    /// The element type of every value it holds.
    pub dtype: DType,
    /// Elements: the largest value's.
    pub elems: u64,
    /// The values it holds, in step order (lives disjoint, or handed over in place).
    pub tenants: Vec<Tenant>,
}

impl Slot {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        bytes_of(self.elems, self.dtype)
    }
}

/// The memory plan of a schedule for one set of shape bindings.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Per step, in schedule order.
    pub steps: Vec<StepMemory>,
    /// The slots.
    pub slots: Vec<Slot>,
    /// Elements of every value (unbound symbols count as 1), by value index.
    pub elems: Vec<u64>,
    /// The buffer each value views (itself unless it is an alias), by value index.
    pub roots: Vec<ValueId>,
    /// The slot of each slot-backed value, by value index.
    pub slot_of: Vec<Option<usize>>,
    /// The values that escape (outputs and updates, and buffers they alias), in step order.
    pub escaping: Vec<ValueId>,
    /// Bytes of inputs, parameters and state (not planned: the caller owns them).
    pub argument_bytes: u64,
    /// Bytes of every slot-backed value, as if none were reused.
    pub unshared_bytes: u64,
}

/// Bytes of `elems` elements of `dtype`, saturating like [`elems`].
fn bytes_of(elems: u64, dtype: DType) -> u64 {
    elems.saturating_mul(dtype.size_bytes() as u64)
}

fn elems(g: &Graph, v: ValueId, b: &Bindings) -> u64 {
    g.ty(v)
        .dims()
        .iter()
        // A dimension with unbound symbols counts each symbol as 1 (a verified type's
        // coefficients multiply without overflow); bindings too large to size any value
        // saturate, and the runtime refuses them (`Shape::eval`) before allocating.
        .map(|d| match d.eval(b) {
            Ok(n) => n,
            Err(DimError::Unbound(_)) => d.coeff(),
            Err(DimError::Overflow(_)) => u64::MAX,
        })
        .fold(1u64, u64::saturating_mul)
}

/// The buffer a step's output views, when the step moves no data: a reshape (row-major
/// data stays put) or a loopback exchange (one rank: the identity).
pub fn aliased_operand(g: &Graph, step: &Step) -> Option<ValueId> {
    let Step::Library(v) = step else { return None };
    match &g.value(*v).def {
        Def::Node {
            op: Op::Reshape | Op::AllToAll { .. },
            operands,
        } => Some(operands[0]),
        _ => None,
    }
}

/// Liveness facts the plan is built from.
struct Lives {
    /// The buffer each value views (itself unless it is an alias).
    root: Vec<ValueId>,
    /// The step writing each value.
    def: Vec<Option<usize>>,
    /// Each value's own last read.
    last_read: Vec<Option<usize>>,
    /// Per root: the last step needing its buffer (through any alias).
    end: Vec<usize>,
    /// Per root: whether the buffer leaves the run.
    escapes: Vec<bool>,
    /// Per value: whether it is itself an output or an update (a table, not a search
    /// of the outputs and updates per value, which is quadratic in depth).
    escapes_itself: Vec<bool>,
}

impl Lives {
    fn new(s: &Schedule) -> Lives {
        let g = &s.graph;
        let n = g.values.len();
        let mut root: Vec<ValueId> = g.ids().collect();
        let mut def = vec![None; n];
        let mut last_read = vec![None; n];
        for (i, step) in s.steps.iter().enumerate() {
            for r in step.reads(g) {
                last_read[r.index()] = Some(i);
            }
            let out = step.output();
            def[out.index()] = Some(i);
            if let Some(src) = aliased_operand(g, step) {
                root[out.index()] = root[src.index()];
            }
        }
        let mut end = vec![0; n];
        for v in g.ids() {
            let own = def[v.index()].max(last_read[v.index()]).unwrap_or(0);
            let r = root[v.index()].index();
            end[r] = end[r].max(own);
        }
        let mut escapes = vec![false; n];
        let mut escapes_itself = vec![false; n];
        for &o in g.outputs.iter().chain(g.updates.iter().map(|(_, v)| v)) {
            escapes[root[o.index()].index()] = true;
            escapes_itself[o.index()] = true;
        }
        Lives {
            root,
            def,
            last_read,
            end,
            escapes,
            escapes_itself,
        }
    }

    fn root(&self, v: ValueId) -> ValueId {
        self.root[v.index()]
    }

    /// A buffer that a step writes and that stays inside the run.
    fn slot_backed(&self, v: ValueId) -> bool {
        self.root(v) == v && self.def[v.index()].is_some() && !self.escapes[v.index()]
    }

    /// The step after which `v` is dropped, if any: a slot-backed buffer when nothing
    /// needs it any more, a view or an argument after its own last read; never for a
    /// buffer that escapes or a value that is itself an output or update.
    fn release_step(&self, v: ValueId) -> Option<usize> {
        if self.escapes_itself[v.index()] || (self.root(v) == v && self.escapes[v.index()]) {
            None
        } else if self.slot_backed(v) {
            Some(self.end[v.index()])
        } else {
            self.last_read[v.index()].or(self.def[v.index()])
        }
    }
}

/// True if every load of input `j` in `k` reads the element at the index written.
fn reads_at_output_index(k: &PointwiseKernel, j: usize) -> bool {
    let identity: Vec<Option<usize>> = (0..k.rank).map(Some).collect();
    let mut loads = k.exprs.iter().filter_map(|(e, _)| match e {
        Expr::Load { input, axes } if *input == j => Some(axes),
        _ => None,
    });
    let mut any = false;
    loads.all(|axes| {
        any = true;
        *axes == identity
    }) && any
}

impl MemoryPlan {
    /// Plans `s` with symbolic dimensions bound by `bindings` (unbound: 1).
    pub fn new(s: &Schedule, bindings: &Bindings) -> MemoryPlan {
        let g = &s.graph;
        let lives = Lives::new(s);
        let elems: Vec<u64> = g.ids().map(|v| elems(g, v, bindings)).collect();
        let mut release: Vec<Vec<ValueId>> = vec![Vec::new(); s.steps.len()];
        for v in g.ids() {
            if let Some(i) = lives.release_step(v) {
                release[i].push(v);
            }
        }
        // Homes and in-place operands first (they depend on liveness only), with the
        // chains of values that hand one buffer on in place.
        let mut steps = Vec::with_capacity(s.steps.len());
        let mut escaping = Vec::new();
        let mut chain_of: Vec<Option<usize>> = vec![None; g.values.len()];
        let mut chains: Vec<Vec<ValueId>> = Vec::new();
        for (i, step) in s.steps.iter().enumerate() {
            let out = step.output();
            let mut in_place = None;
            let output = if lives.root(out) != out {
                Home::Alias(lives.root(out))
            } else if !lives.slot_backed(out) {
                escaping.push(out);
                Home::Escapes
            } else {
                in_place = in_place_operand(g, &lives, step, i);
                let chain = match in_place {
                    Some(x) => chain_of[lives.root(x).index()].expect("slot-backed"),
                    None => {
                        chains.push(Vec::new());
                        chains.len() - 1
                    }
                };
                chains[chain].push(out);
                chain_of[out.index()] = Some(chain);
                Home::Slot(usize::MAX) // numbered below
            };
            steps.push(StepMemory {
                value: out,
                output,
                in_place,
                release: std::mem::take(&mut release[i]),
            });
        }
        // Then slots: chains largest first, each into the first slot of its dtype whose
        // chains' lives it does not overlap, so the first (largest) sizes the slot.
        let span = |c: &[ValueId]| {
            let first = lives.def[c[0].index()].expect("written by a step");
            (first, lives.end[c[c.len() - 1].index()])
        };
        let chain_bytes = |c: &[ValueId]| bytes_of(elems[c[0].index()], g.ty(c[0]).dtype);
        let mut order: Vec<usize> = (0..chains.len()).collect();
        order.sort_by_key(|&c| {
            (
                std::cmp::Reverse(chain_bytes(&chains[c])),
                span(&chains[c]).0,
            )
        });
        let mut slots: Vec<Slot> = Vec::new();
        let mut first_fit = FirstFit::new(chains.len());
        let mut slot_of: Vec<Option<usize>> = vec![None; g.values.len()];
        for c in order {
            let chain = &chains[c];
            let (dtype, (first, last)) = (g.ty(chain[0]).dtype, span(chain));
            let slot = first_fit.find(dtype, first, last).unwrap_or_else(|| {
                slots.push(Slot {
                    dtype,
                    elems: 0,
                    tenants: Vec::new(),
                });
                first_fit.add_slot(dtype)
            });
            first_fit.occupy(slot, first, last);
            for &v in chain {
                let first = lives.def[v.index()].expect("written by a step");
                slots[slot].elems = slots[slot].elems.max(elems[v.index()]);
                slots[slot].tenants.push(Tenant {
                    value: v,
                    first,
                    last: lives.end[v.index()],
                    in_place_of: steps[first].in_place,
                });
                slot_of[v.index()] = Some(slot);
                steps[first].output = Home::Slot(slot);
            }
        }
        for slot in &mut slots {
            slot.tenants.sort_by_key(|t| t.first);
        }
        for step in &mut steps {
            // Views drop before the buffers they view, so those come back unshared.
            step.release.sort_by_key(|v| slot_of[v.index()].is_some());
        }
        let argument_bytes = g
            .ids()
            .filter(|&v| !matches!(g.value(v).def, Def::Node { .. }))
            .map(|v| bytes_of(elems[v.index()], g.ty(v).dtype))
            .fold(0, u64::saturating_add);
        let unshared_bytes = slots
            .iter()
            .flat_map(|s| s.tenants.iter().map(move |t| (s.dtype, t.value)))
            .map(|(dt, v)| bytes_of(elems[v.index()], dt))
            .fold(0, u64::saturating_add);
        MemoryPlan {
            steps,
            slots,
            elems,
            roots: lives.root,
            slot_of,
            escaping,
            argument_bytes,
            unshared_bytes,
        }
    }

    /// Bytes of all slots: the peak of planned (non-escaping) memory.
    pub fn peak_bytes(&self) -> u64 {
        self.slots
            .iter()
            .map(Slot::bytes)
            .fold(0, u64::saturating_add)
    }

    /// The most bytes of slot-backed values alive at one step (a value overwritten in
    /// place and its successor count once): the lower bound slots could reach.
    pub fn live_peak_bytes(&self) -> u64 {
        // Bytes arriving and leaving per step, summed in step order: linear in the
        // plan (adding each life step by step was quadratic in depth).
        let mut change = vec![0i128; self.steps.len() + 2];
        for slot in &self.slots {
            for t in &slot.tenants {
                let from = t.first + usize::from(t.in_place_of.is_some());
                if from <= t.last {
                    let bytes = i128::from(bytes_of(self.elems[t.value.index()], slot.dtype));
                    change[from] += bytes;
                    change[t.last + 1] -= bytes;
                }
            }
        }
        let mut live = 0i128;
        let mut peak = 0i128;
        for c in change {
            live += c;
            peak = peak.max(live);
        }
        u64::try_from(peak).unwrap_or(u64::MAX)
    }

    /// The plan in text: a summary line, then each slot with its values and live steps,
    /// the aliases, and the escaping values.
    pub fn to_text(&self, g: &Graph) -> String {
        let name = |v: ValueId| format!("%{}", g.value(v).name);
        let tenants: usize = self.slots.iter().map(|s| s.tenants.len()).sum();
        let in_place = self.steps.iter().filter(|s| s.in_place.is_some()).count();
        let escaping_bytes: u64 = self
            .escaping
            .iter()
            .map(|&v| bytes_of(self.elems[v.index()], g.ty(v).dtype))
            .fold(0, u64::saturating_add);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  # memory: peak {} in {} slots (live at once: at most {}) for {tenants} buffers ({in_place} in place; {} without reuse); escaping {}; inputs, params and state {}",
            human(self.peak_bytes()),
            self.slots.len(),
            human(self.live_peak_bytes()),
            human(self.unshared_bytes),
            human(escaping_bytes),
            human(self.argument_bytes)
        );
        for (i, slot) in self.slots.iter().enumerate() {
            let held: Vec<String> = slot
                .tenants
                .iter()
                .map(|t| {
                    let over = t
                        .in_place_of
                        .map(|x| format!(" in place of {}", name(x)))
                        .unwrap_or_default();
                    format!("{} {}..{}{over}", name(t.value), t.first, t.last)
                })
                .collect();
            let _ = writeln!(
                s,
                "  slot {i}: {}[{}] ({}), live steps: {}",
                slot.dtype,
                slot.elems,
                human(slot.bytes()),
                held.join(", ")
            );
        }
        let aliases: Vec<String> = self
            .steps
            .iter()
            .filter_map(|m| match m.output {
                Home::Alias(root) => Some(format!("{} views {}", name(m.value), name(root))),
                _ => None,
            })
            .collect();
        if !aliases.is_empty() {
            let _ = writeln!(s, "  aliases: {}", aliases.join(", "));
        }
        if !self.escaping.is_empty() {
            let names: Vec<String> = self.escaping.iter().map(|&v| name(v)).collect();
            let _ = writeln!(s, "  escaping (not slot-backed): {}", names.join(", "));
        }
        s
    }
}

/// Bytes in the largest binary unit that keeps a whole number before the point.
fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.2} KiB", b as f64 / 1024.0),
        b if b < 1 << 30 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
    }
}

/// The operand step `i` may overwrite: see the module comment.
fn in_place_operand(g: &Graph, lives: &Lives, step: &Step, i: usize) -> Option<ValueId> {
    let (k, product_reads) = match step {
        Step::Pointwise(k) => (k, Vec::new()),
        Step::MatMul {
            init: Some(k),
            lhs,
            rhs,
            ..
        } => (&**k, vec![lives.root(lhs.value), lives.root(rhs.value)]),
        _ => return None,
    };
    let out_ty = g.ty(step.output());
    k.inputs.iter().enumerate().find_map(|(j, &x)| {
        let r = lives.root(x);
        let only_view = k
            .inputs
            .iter()
            .enumerate()
            .all(|(j2, &y)| j2 == j || lives.root(y) != r);
        (lives.slot_backed(r)
            && lives.end[r.index()] == i
            && g.ty(x) == out_ty
            && only_view
            && !product_reads.contains(&r)
            && reads_at_output_index(k, j))
        .then_some(x)
    })
}
