//! Optimising a large graph window by window, so that compile time grows linearly with
//! the model.
//!
//! One e-graph over a whole deep training step (tens of thousands of classes) outgrows
//! the caches, and every phase (rule search, rebuild, extraction, conversion back) then
//! slows per node as the model deepens. Cut instead into consecutive windows of at most
//! [`Options::window`] ops in the graph's own order, each optimised by one bounded
//! e-graph; the results are spliced back together in the same order.
//!
//! What a window sees: values defined before it are opaque inputs, except constants
//! (ops without operands), which are copied into every window that reads them so that
//! rules matching on them (`x * 1`, a scale folded into a product) still fire. What
//! later windows or the graph's results read is the window's outputs, so it stays
//! materialised. A window is optimised in a canonical form ([`Window`]), so windows of
//! equal form (a deep model's repeated layers) share one optimisation. Equal ops are
//! merged across windows when they are spliced, as one e-graph merges them. Rewrites
//! that would span a cut are given up; cuts avoid splitting local computations, so few
//! do (the soundness test compares the cost with one e-graph over the whole graph).

use super::{cheaper, optimize_whole, CostModel, OptimizeError, Options, Phases, Report, Rules};
use crate::ir::{verify, Builder, Def, Graph, Op, Value, ValueId};
use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// Optimises `graph` window by window (see the module documentation).
pub(super) fn optimize_in_windows(
    graph: &Graph,
    model: &dyn CostModel,
    options: &Options,
    rules: &Rules,
) -> Result<(Graph, Report), OptimizeError> {
    let start = Instant::now();
    let ops: Vec<ValueId> = graph
        .ids()
        .filter(|&v| matches!(graph.value(v).def, Def::Node { .. }))
        .collect();
    let windows = cut(graph, &ops, options.window);
    let mut window_of = vec![None; graph.values.len()];
    for (i, window) in windows.iter().enumerate() {
        for v in *window {
            window_of[v.index()] = Some(i);
        }
    }
    let live_out = read_after_own_window(graph, &window_of);

    let mut out = Builder::new(&graph.name);
    out.reserve_names(graph.values.iter().map(|v| &v.name));
    // The value each of `graph`'s values became in `out`.
    let mut now: Vec<Option<ValueId>> = vec![None; graph.values.len()];
    for v in graph.ids() {
        let value = graph.value(v);
        now[v.index()] = match &value.def {
            Def::Input => Some(out.input(&value.name, value.ty.clone())?),
            Def::Param(init) => Some(out.param(&value.name, value.ty.clone(), init.clone())?),
            Def::State(init) => Some(out.state(&value.name, value.ty.clone(), init.clone())?),
            Def::Node { .. } => None,
        };
    }

    let mut merged: Option<Report> = None;
    let mut reused = 0;
    let mut existing = Existing::default();
    let mut optimised_by_form = Reusable::default();
    let mut optimised_windows: Vec<Graph> = Vec::new();
    for window in &windows {
        let canonical = Window::new(graph, window, &window_of, &live_out)?;
        let form = structure_hash(&canonical.graph);
        let known = optimised_by_form.get(&form).and_then(|same_hash| {
            same_hash
                .iter()
                .find(|(c, _)| options.reuse_windows && *c == canonical.graph)
                .map(|&(_, i)| i)
        });
        let index = match known {
            Some(i) => {
                reused += 1;
                i
            }
            None => {
                let (optimised, report) = optimize_whole(&canonical.graph, model, options, rules)?;
                merged = Some(match merged {
                    None => report,
                    Some(total) => add_reports(total, report),
                });
                optimised_windows.push(optimised);
                let i = optimised_windows.len() - 1;
                let entry = optimised_by_form.entry(form).or_default();
                entry.push((canonical.graph.clone(), i));
                i
            }
        };
        let optimised = &optimised_windows[index];
        splice(
            graph,
            optimised,
            &canonical,
            &mut existing,
            &mut now,
            &mut out,
        )?;
    }

    for &o in &graph.outputs {
        let mut id = now[o.index()]
            .ok_or_else(|| OptimizeError::Lost("an output was not spliced".into()))?;
        let name = &graph.value(o).name;
        if out.is_output(id) {
            // Two outputs became one value; outputs stay distinct, so copy it.
            let ty = out.ty(id).clone();
            id = out.node(None, Op::Reshape, &[id], Some(ty))?;
        }
        // Callers find results by name (`loss`, `present.0.k`), also when the output
        // became a value the optimiser made or one merged with an earlier value.
        if out.graph().value(id).name != *name {
            out.rename(id, name);
        }
        out.output(id)?;
    }
    for &(target, value) in &graph.updates {
        let (Some(target), Some(value)) = (now[target.index()], now[value.index()]) else {
            return Err(OptimizeError::Lost("an update was not spliced".into()));
        };
        out.update(target, value)?;
    }
    // A window's result that later windows no longer read is dead.
    let candidate = out.finish().without_unused_ops();
    verify(&candidate)?;

    let phase_start = Instant::now();
    let (result, before, after) = cheaper(graph, candidate, model);
    let mut report =
        merged.ok_or_else(|| OptimizeError::Lost("a windowed graph without ops".into()))?;
    report.phases.cost += phase_start.elapsed();
    report.before = before;
    report.after = after;
    report.windows = windows.len();
    report.windows_reused = reused;
    report.elapsed = start.elapsed();
    Ok((result, report))
}

/// How many ops before a candidate cut tell it apart from look-alikes.
const CONTEXT: usize = 128;

/// How far (in ops) a value's last use may be from its definition for the value to
/// count as part of a local computation that a cut should not split.
const LOCAL: usize = 64;

/// Cuts `ops` (in the graph's order) into windows of at most `size` ops. Each window
/// ends, between half the size and the size, where the fewest local computations
/// straddle the cut ([`LOCAL`]), so that a cut does not split a pattern the rules
/// recognise whole (a softmax, a cross-entropy and its gradient). Ties go to the op whose
/// [`local_shape`]s of it and the [`CONTEXT`] ops before it hash smallest, then to the
/// first: in a run of repeated layers the cut so falls at the same op of a layer every
/// time (once half a window holds a whole layer), the windows come out equal, and their
/// optimisation is reused.
fn cut<'a>(graph: &Graph, ops: &'a [ValueId], size: usize) -> Vec<&'a [ValueId]> {
    let size = size.max(2);
    let straddling = local_values_straddling(graph, ops);
    let shapes: Vec<u64> = ops.iter().map(|&v| local_shape(graph, v)).collect();
    // An op's shape with the shapes of the ops before it: repeated sub-blocks of a layer
    // (the updates of its four norm parameters) look alike op by op, not in context.
    let context = |i: usize| {
        let mut h = rustc_hash::FxHasher::default();
        shapes[i.saturating_sub(CONTEXT)..=i].hash(&mut h);
        h.finish()
    };
    let mut windows = Vec::new();
    let mut from = 0;
    while ops.len() - from > size {
        let range = from + size / 2 - 1..from + size;
        let end = range
            .min_by_key(|&i| (straddling[i], context(i)))
            .expect("the range is not empty");
        windows.push(&ops[from..=end]);
        from = end + 1;
    }
    windows.push(&ops[from..]);
    windows
}

/// A hash of `v`'s op, type and operands as seen from `v`: an op nearby by its distance,
/// anything else by its type. Equal at the same op of every repetition of a block.
fn local_shape(graph: &Graph, v: ValueId) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    let value = graph.value(v);
    value.ty.hash(&mut h);
    if let Def::Node { op, operands } = &value.def {
        op.name().hash(&mut h);
        for &o in operands {
            let distance = v.index() - o.index();
            if distance <= LOCAL && matches!(graph.value(o).def, Def::Node { .. }) {
                distance.hash(&mut h);
            } else {
                graph.ty(o).hash(&mut h);
            }
        }
    }
    h.finish()
}

/// For each position `p` of `ops`: how many values defined at or before `p` and last
/// read after it are read within [`LOCAL`] ops of their definition.
fn local_values_straddling(graph: &Graph, ops: &[ValueId]) -> Vec<u32> {
    let mut position = vec![usize::MAX; graph.values.len()];
    for (i, v) in ops.iter().enumerate() {
        position[v.index()] = i;
    }
    let mut last_use = vec![0; ops.len()];
    for (i, &v) in ops.iter().enumerate() {
        if let Def::Node { operands, .. } = &graph.value(v).def {
            for o in operands {
                if let Some(at) = last_use.get_mut(position[o.index()]) {
                    *at = i;
                }
            }
        }
    }
    let mut change = vec![0i32; ops.len() + 1];
    for (i, &last) in last_use.iter().enumerate() {
        if last > i && last - i <= LOCAL {
            change[i] += 1;
            change[last] -= 1;
        }
    }
    let mut open = 0i32;
    change[..ops.len()]
        .iter()
        .map(|c| {
            open += c;
            open as u32
        })
        .collect()
}

/// The op values that something outside their own window reads: a later window's op,
/// an output or an update.
fn read_after_own_window(graph: &Graph, window_of: &[Option<usize>]) -> FxHashSet<ValueId> {
    let mut live: FxHashSet<ValueId> = graph
        .outputs
        .iter()
        .chain(graph.updates.iter().map(|(_, v)| v))
        .copied()
        .filter(|v| window_of[v.index()].is_some())
        .collect();
    for v in graph.ids() {
        if let Def::Node { operands, .. } = &graph.value(v).def {
            for &o in operands {
                let elsewhere =
                    window_of[o.index()].is_some_and(|w| Some(w) != window_of[v.index()]);
                // A constant read elsewhere is copied there, not passed on.
                if elsewhere && !is_constant(graph, o) {
                    live.insert(o);
                }
            }
        }
    }
    live
}

/// Whether `v` is an op without operands (a constant), copied into each window.
fn is_constant(graph: &Graph, v: ValueId) -> bool {
    matches!(&graph.value(v).def, Def::Node { operands, .. } if operands.is_empty())
}

/// One window as a graph of its own, in a canonical form: inputs `%i0, %i1, ...` in
/// order of first use, copied constants `%c0, ...`, the window's ops `%v0, %v1, ...` in
/// order, and its results as outputs. Windows whose canonical graphs are equal compute
/// the same function of their inputs.
struct Window<'a> {
    graph: Graph,
    /// The values from before the window that input `%iK` stands for.
    boundary: Vec<ValueId>,
    /// The window's ops; `%vK` is `ops[K]`.
    ops: &'a [ValueId],
    /// The window's values read after it, in the order of the window's outputs.
    results: Vec<ValueId>,
}

impl<'a> Window<'a> {
    fn new(
        graph: &Graph,
        ops: &'a [ValueId],
        window_of: &[Option<usize>],
        live_out: &FxHashSet<ValueId>,
    ) -> Result<Window<'a>, OptimizeError> {
        let here = window_of[ops[0].index()];
        let mut boundary = Vec::new();
        let mut constants = Vec::new();
        let mut seen = FxHashSet::default();
        for &v in ops {
            if let Def::Node { operands, .. } = &graph.value(v).def {
                for &o in operands {
                    if window_of[o.index()] != here && seen.insert(o) {
                        if is_constant(graph, o) {
                            constants.push(o);
                        } else {
                            boundary.push(o);
                        }
                    }
                }
            }
        }
        // Built directly: the ops and types come from a verified graph.
        let mut values = Vec::with_capacity(boundary.len() + constants.len() + ops.len());
        let mut local: FxHashMap<ValueId, ValueId> = FxHashMap::default();
        fn add(
            values: &mut Vec<Value>,
            local: &mut FxHashMap<ValueId, ValueId>,
            original: ValueId,
            value: Value,
        ) -> ValueId {
            let id = ValueId(values.len() as u32);
            local.insert(original, id);
            values.push(value);
            id
        }
        for (k, &o) in boundary.iter().enumerate() {
            let ty = graph.ty(o).clone();
            let value = Value {
                name: format!("i{k}"),
                ty,
                def: Def::Input,
            };
            add(&mut values, &mut local, o, value);
        }
        for (k, &o) in constants.iter().enumerate() {
            let value = Value {
                name: format!("c{k}"),
                ..graph.value(o).clone()
            };
            add(&mut values, &mut local, o, value);
        }
        let mut results = Vec::new();
        let mut outputs = Vec::new();
        for (k, &v) in ops.iter().enumerate() {
            let value = graph.value(v);
            let Def::Node { op, operands } = &value.def else {
                unreachable!("windows hold op values only")
            };
            let def = Def::Node {
                op: op.clone(),
                operands: operands.iter().map(|o| local[o]).collect(),
            };
            let ty = value.ty.clone();
            let id = add(
                &mut values,
                &mut local,
                v,
                Value {
                    name: format!("v{k}"),
                    ty,
                    def,
                },
            );
            if live_out.contains(&v) {
                results.push(v);
                outputs.push(id);
            }
        }
        let graph = Graph {
            name: "window".into(),
            values,
            outputs,
            updates: Vec::new(),
        };
        Ok(Window {
            graph,
            boundary,
            ops,
            results,
        })
    }

    /// The graph's value that value `name` of the canonical window stands for.
    fn original(&self, name: &str) -> Option<ValueId> {
        let (list, index) = match name.split_at(1) {
            ("i", k) => (&self.boundary[..], k),
            ("v", k) => (self.ops, k),
            _ => return None,
        };
        list.get(index.parse::<usize>().ok()?).copied()
    }
}

/// Optimised windows by the hash of their canonical form: each canonical window with the
/// index of its optimised form.
type Reusable = FxHashMap<u64, Vec<(Graph, usize)>>;

/// A hash of a canonical window's structure: ops, types, operands and outputs (names are
/// canonical, attributes are left to the equality check).
fn structure_hash(graph: &Graph) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    for value in &graph.values {
        value.ty.hash(&mut h);
        if let Def::Node { op, operands } = &value.def {
            op.name().hash(&mut h);
            operands.hash(&mut h);
        }
    }
    graph.outputs.hash(&mut h);
    h.finish()
}

/// Every op spliced so far, by the hash of its op name, type and operands: one e-graph
/// merges equal values (a broadcast constant, `beta^t` of every parameter's update), so a
/// windowed run does too, across windows.
type Existing = FxHashMap<u64, Vec<ValueId>>;

/// The op spliced before that computes `op` of `operands` with type `ty`, if any.
fn find_existing(
    out: &Builder,
    existing: &Existing,
    key: u64,
    op: &Op,
    operands: &[ValueId],
    ty: &crate::ir::TensorType,
) -> Option<ValueId> {
    existing.get(&key)?.iter().copied().find(|&c| {
        let value = out.graph().value(c);
        value.ty == *ty
            && matches!(&value.def, Def::Node { op: o, operands: a } if o == op && a == operands)
    })
}

/// Appends the ops of `optimised` (the optimised canonical form of `window`) to `out`,
/// reading the window's boundary values where it reads its inputs, and records what the
/// window's results became. An op equal to one spliced before is that one. The graph's
/// own values keep their names; values the optimiser made get fresh ones.
fn splice(
    graph: &Graph,
    optimised: &Graph,
    window: &Window,
    existing: &mut Existing,
    now: &mut [Option<ValueId>],
    out: &mut Builder,
) -> Result<(), OptimizeError> {
    let mut mapped: Vec<Option<ValueId>> = vec![None; optimised.values.len()];
    for v in optimised.ids() {
        let value = optimised.value(v);
        mapped[v.index()] = Some(match &value.def {
            Def::Input => {
                let original = window
                    .original(&value.name)
                    .ok_or_else(|| OptimizeError::Lost("an unknown window input".into()))?;
                now[original.index()]
                    .ok_or_else(|| OptimizeError::Lost("a window read an unspliced value".into()))?
            }
            Def::Param(_) | Def::State(_) => unreachable!("windows have inputs only"),
            Def::Node { op, operands } => {
                let operands: Vec<ValueId> = operands
                    .iter()
                    .map(|o| mapped[o.index()].expect("operands precede their users"))
                    .collect();
                let mut h = rustc_hash::FxHasher::default();
                (op.name(), &value.ty, &operands).hash(&mut h);
                let key = h.finish();
                match find_existing(out, existing, key, op, &operands, &value.ty) {
                    Some(id) => id,
                    None => {
                        let name = window
                            .original(&value.name)
                            .map(|o| graph.value(o).name.as_str())
                            .filter(|n| out.is_reserved_and_free(n));
                        let ty = value.ty.clone();
                        let id = out.node_of_known_type(name, op.clone(), &operands, ty)?;
                        existing.entry(key).or_default().push(id);
                        id
                    }
                }
            }
        });
    }
    for (&original, &o) in window.results.iter().zip(&optimised.outputs) {
        now[original.index()] = mapped[o.index()];
    }
    Ok(())
}

/// One report for the windows of a run: rules and phases summed, the e-graph sizes
/// summed, the latest stop reason.
fn add_reports(mut total: Report, next: Report) -> Report {
    for (rule, n) in next.rules_fired {
        *total.rules_fired.entry(rule).or_insert(0) += n;
    }
    total.iterations = total.iterations.max(next.iterations);
    total.stop_reason = next.stop_reason;
    total.egraph_nodes += next.egraph_nodes;
    total.egraph_classes += next.egraph_classes;
    let (a, b) = (&mut total.phases, next.phases);
    let Phases {
        load,
        search,
        apply,
        rebuild,
        extract,
        convert_back,
        cost,
    } = b;
    a.load += load;
    a.search += search;
    a.apply += apply;
    a.rebuild += rebuild;
    a.extract += extract;
    a.convert_back += convert_back;
    a.cost += cost;
    total
}
