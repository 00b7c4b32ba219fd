//! The buffers of a run, allocated exactly as the schedule's memory plan says
//! (`compiler::schedule::memory`): each step's output is its slot's buffer (or, in
//! place, the buffer of the operand it overwrites), and a value's buffer goes back to
//! its slot when the plan releases it. The slots persist across runs with the same
//! shape bindings, so a loop stops allocating (and page-faulting) its temporaries.
//! Escaping buffers (outputs, updates) are the caller's; those handed back (outputs
//! once converted, the state an update replaced) serve the next run.

use super::Buf;
use smelt_compiler::ir::{Bindings, DType, ValueId};
use smelt_compiler::schedule::MemoryPlan;
use std::collections::HashMap;
use std::sync::Arc;

/// The buffer a kernel writes its output into, taken by value: kernels take a typed
/// vector from it (cleared, its capacity kept) and return it filled.
pub(crate) struct Out(Buf);

impl Out {
    /// No buffer: the kernel allocates (scratch that is not a planned value).
    pub fn fresh() -> Out {
        Out(Buf::F32(Vec::new()))
    }

    /// An empty `f32` vector with room for `n`.
    pub fn f32(self, n: usize) -> Vec<f32> {
        match self.0 {
            Buf::F32(v) => cleared(v, n),
            _ => Vec::with_capacity(n),
        }
    }

    /// `n` copies of `x` (for kernels that accumulate into their output).
    pub fn f32_filled(self, n: usize, x: f32) -> Vec<f32> {
        let mut v = self.f32(n);
        v.resize(n, x);
        v
    }

    /// `n` elements of unspecified value (stale ones from the buffer's last use, zeros
    /// beyond), for kernels that overwrite every element without reading it: no fill
    /// where the buffer already has elements.
    pub fn f32_overwritten(self, n: usize) -> Vec<f32> {
        let mut v = match self.0 {
            Buf::F32(v) => v,
            _ => Vec::with_capacity(n),
        };
        v.truncate(n);
        v.resize(n, 0.0);
        v
    }

    /// An empty integer vector with room for `n`.
    pub fn int(self, n: usize) -> Vec<i64> {
        match self.0 {
            Buf::Int(v) => cleared(v, n),
            _ => Vec::with_capacity(n),
        }
    }

    /// An empty boolean vector with room for `n`.
    pub fn bool(self, n: usize) -> Vec<bool> {
        match self.0 {
            Buf::Bool(v) => cleared(v, n),
            _ => Vec::with_capacity(n),
        }
    }

    /// The buffer itself, emptied, with room for `n` (kernels of every dtype).
    pub fn any(self, n: usize) -> Buf {
        match self.0 {
            Buf::F32(v) => Buf::F32(cleared(v, n)),
            Buf::Int(v) => Buf::Int(cleared(v, n)),
            Buf::Bool(v) => Buf::Bool(cleared(v, n)),
        }
    }
}

fn cleared<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    v.clear();
    v.reserve(n);
    v
}

/// An empty buffer holding `dtype` with room for `n` elements.
pub(crate) fn empty(dtype: DType, n: usize) -> Buf {
    if dtype.is_float() {
        Buf::F32(Vec::with_capacity(n))
    } else if dtype.is_int() {
        Buf::Int(Vec::with_capacity(n))
    } else {
        Buf::Bool(Vec::with_capacity(n))
    }
}

/// The address and capacity of a buffer's storage (to tell a recycled buffer from one
/// a kernel allocated).
fn storage(b: &Buf) -> (usize, usize) {
    match b {
        Buf::F32(v) => (v.as_ptr() as usize, v.capacity() * 4),
        Buf::Int(v) => (v.as_ptr() as usize, v.capacity() * 8),
        Buf::Bool(v) => (v.as_ptr() as usize, v.capacity()),
    }
}

/// What a run allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Bytes of step buffers allocated fresh for values that stay inside the run (slots
    /// filled for the first time, or a kernel that did not write into its slot).
    pub temporary_bytes: u64,
    /// Bytes allocated fresh for escaping values (outputs and updates).
    pub escaping_bytes: u64,
}

/// A schedule's memory plan for one set of bindings, with the buffers that persist
/// between its runs.
#[derive(Debug)]
pub(crate) struct Arena {
    pub bindings: Bindings,
    pub plan: Arc<MemoryPlan>,
    /// Per slot: its buffer while no value holds it.
    slots: Vec<Option<Buf>>,
    /// Escaped buffers handed back, by the value they will hold next.
    spares: HashMap<ValueId, Buf>,
    /// This run's allocations.
    pub stats: AllocStats,
}

impl Arena {
    pub fn new(bindings: Bindings, plan: MemoryPlan) -> Arena {
        Arena {
            slots: vec![None; plan.slots.len()],
            bindings,
            plan: Arc::new(plan),
            spares: HashMap::new(),
            stats: AllocStats::default(),
        }
    }

    /// The buffer of slot `s` for a value it is about to hold.
    pub fn take_slot(&mut self, s: usize) -> Out {
        let buf = self.slots[s].take().unwrap_or_else(|| {
            let slot = &self.plan.slots[s];
            let buf = empty(slot.dtype, slot.elems as usize);
            self.stats.temporary_bytes += storage(&buf).1 as u64;
            buf
        });
        Out(buf)
    }

    /// A buffer for an escaping value: a spare handed back, or a fresh one.
    pub fn take_escaping(&mut self, v: ValueId, dtype: DType, n: usize, spare: Option<Buf>) -> Out {
        let buf = spare
            .or_else(|| self.spares.remove(&v))
            .filter(|b| std::mem::discriminant(b) == std::mem::discriminant(&empty(dtype, 0)))
            .unwrap_or_else(|| {
                let buf = empty(dtype, n);
                self.stats.escaping_bytes += storage(&buf).1 as u64;
                buf
            });
        Out(buf)
    }

    /// Counts a step's result that is not the buffer it was given (a kernel that
    /// allocated its own, or grew the one it got).
    pub fn account(&mut self, given: (usize, usize), got: &Buf, escaping: bool) {
        let got = storage(got);
        if got != given {
            let bytes = got.1 as u64;
            if escaping {
                self.stats.escaping_bytes += bytes;
            } else {
                self.stats.temporary_bytes += bytes;
            }
        }
    }

    /// Gives slot `s` its buffer back.
    pub fn give_back(&mut self, s: usize, buf: Buf) {
        debug_assert!(
            self.slots[s].is_none(),
            "the plan gives a slot one value at a time"
        );
        self.slots[s] = Some(buf);
    }

    /// Keeps an escaped buffer the caller is done with for value `v` of the next run.
    pub fn keep_spare(&mut self, v: ValueId, buf: Buf) {
        self.spares.insert(v, buf);
    }
}

/// The storage of an [`Out`] before a kernel fills it.
pub(crate) fn given(out: &Out) -> (usize, usize) {
    storage(&out.0)
}

/// The storage of a buffer, for [`Arena::account`].
pub(crate) fn storage_of(b: &Buf) -> (usize, usize) {
    storage(b)
}
