//! The e-graph optimiser: rewrites a graph into a cheaper equivalent one.
//!
//! The graph is loaded into an e-graph ([`lang`], [`analysis`], [`convert`]), sound
//! rewrite rules grouped by topic ([`rules`]) grow it within iteration, node and time
//! limits, and a DAG-aware extractor ([`extract`]) picks the cheapest program under the
//! target's cost model ([`cost`]). The result keeps the graph's interface (inputs,
//! parameters, state, outputs and updates, by name) and the names of surviving values;
//! [`Report`] says which rules fired and what the estimated cost was before and after.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod rules;
mod window;

pub use analysis::{Facts, TensorAnalysis, TensorGraph};
pub use cost::{graph_cost, CostModel, GraphCost, RooflineTarget, Work};
pub use lang::{OpKey, TensorNode};

use crate::ir::{BuildError, Graph, VerifyError};
use egg::{BackoffScheduler, Runner, StopReason};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// Limits and switches of one optimisation run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most rewrite iterations.
    pub iter_limit: usize,
    /// Most e-nodes; growth stops at this size.
    pub node_limit: usize,
    /// Most time spent rewriting (extraction comes on top and is fast).
    pub time_limit: Duration,
    /// Also use rules that hold only for finite values (`x - x = 0`, `x * 0 = 0`).
    pub assume_finite: bool,
    /// Most ops per window: a graph of more than three times this many ops is optimised in
    /// consecutive windows of at most this many, so that compile time grows linearly
    /// with depth ([`window`]); a smaller one in one e-graph (0: always in one).
    pub window: usize,
    /// Optimise a window once and reuse the result for every window of equal form (the
    /// repeated layers of a deep model); off, every window is optimised on its own.
    pub reuse_windows: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            iter_limit: 8,
            node_limit: 100_000,
            time_limit: Duration::from_millis(1000),
            assume_finite: false,
            window: 4096,
            reuse_windows: true,
        }
    }
}

/// What an optimisation run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// How often each rule changed the e-graph (rules that never did are left out).
    pub rules_fired: BTreeMap<String, usize>,
    /// The estimated cost of the input graph.
    pub before: GraphCost,
    /// The estimated cost of the result.
    pub after: GraphCost,
    /// Rewrite iterations run.
    pub iterations: usize,
    /// Why rewriting stopped.
    pub stop_reason: String,
    /// E-graph size at the end: nodes and classes.
    pub egraph_nodes: usize,
    /// Number of e-classes at the end.
    pub egraph_classes: usize,
    /// Into how many windows the graph was cut (1: optimised whole).
    pub windows: usize,
    /// How many windows reused the optimisation of an equal one instead of their own
    /// e-graph (the e-graph figures above cover the others).
    pub windows_reused: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Where that time went.
    pub phases: Phases,
}

/// Wall time of each phase of one optimisation run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Phases {
    /// Loading the graph into the e-graph.
    pub load: Duration,
    /// Rule search (egg's search phase, all iterations).
    pub search: Duration,
    /// Applying matches (egg's apply phase).
    pub apply: Duration,
    /// Restoring the e-graph's invariants after each iteration (egg's rebuild).
    pub rebuild: Duration,
    /// Choosing one node per class.
    pub extract: Duration,
    /// Converting the extraction back into a graph.
    pub convert_back: Duration,
    /// Costing the input and the candidate graph.
    pub cost: Duration,
}

impl fmt::Display for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "load {:.1} ms, search {:.1} ms, apply {:.1} ms, rebuild {:.1} ms, extract {:.1} ms, convert back {:.1} ms, cost {:.1} ms",
            ms(self.load),
            ms(self.search),
            ms(self.apply),
            ms(self.rebuild),
            ms(self.extract),
            ms(self.convert_back),
            ms(self.cost)
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rules fired:")?;
        if self.rules_fired.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (rule, n) in &self.rules_fired {
            writeln!(f, "  {rule}: {n}")?;
        }
        writeln!(f, "cost before: {}", self.before)?;
        writeln!(f, "cost after:  {}", self.after)?;
        writeln!(
            f,
            "e-graph: {} iterations, stopped by {}, {} nodes in {} classes{}, {:.1} ms",
            self.iterations,
            self.stop_reason,
            self.egraph_nodes,
            self.egraph_classes,
            match self.windows {
                1 => String::new(),
                n => format!(" over {n} windows ({} reused)", self.windows_reused),
            },
            self.elapsed.as_secs_f64() * 1e3
        )?;
        writeln!(f, "phases: {}", self.phases)
    }
}

fn describe(reason: Option<&StopReason>) -> String {
    match reason {
        Some(StopReason::Saturated) => "saturation".into(),
        Some(StopReason::IterationLimit(n)) => format!("the iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("the node limit ({n})"),
        Some(StopReason::TimeLimit(s)) => format!("the time limit ({:.0} ms)", s * 1e3),
        Some(StopReason::Other(s)) => s.clone(),
        None => "nothing".into(),
    }
}

/// Why the optimiser failed. Rewrites keep graphs valid, so each of these is a bug in
/// a rule or in extraction, not a fault of the input graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimizeError {
    /// The optimiser lost track of a value while rebuilding the graph.
    #[error("internal: {0}")]
    Lost(String),
    /// A value of the rebuilt graph was rejected.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The rebuilt graph does not verify.
    #[error("the optimised graph does not verify: {0}")]
    Unverified(#[from] VerifyError),
}

/// Optimises `graph` (which must verify) for the target described by `model`. The
/// result never costs more than the input under `model`: when extraction finds
/// nothing cheaper, the input is returned unchanged. A graph of more than
/// three times [`Options::window`] ops is optimised window by window.
pub fn optimize(
    graph: &Graph,
    model: &dyn CostModel,
    options: &Options,
) -> Result<(Graph, Report), OptimizeError> {
    // Built once: the composite rule caches its templates, which windows share.
    let rules = rules::all_rules(options.assume_finite);
    // Cutting a graph of three windows or fewer costs more than it saves: at most one
    // window repeats (measured: a 16-layer GPT step, 8.6k ops, compiled 15% slower cut).
    if options.window > 0 && graph.node_count() > options.window.saturating_mul(3) {
        window::optimize_in_windows(graph, model, options, &rules)
    } else {
        optimize_whole(graph, model, options, &rules)
    }
}

/// `candidate` if it costs no more than `graph` under `model`, else `graph`; with the
/// costs of `graph` and of the result.
fn cheaper(
    graph: &Graph,
    candidate: Graph,
    model: &dyn CostModel,
) -> (Graph, GraphCost, GraphCost) {
    let before = graph_cost(graph, model);
    let candidate_cost = graph_cost(&candidate, model);
    if candidate_cost.seconds <= before.seconds {
        (candidate, before, candidate_cost)
    } else {
        (graph.clone(), before, before)
    }
}

/// The rewrite rules of one optimisation run.
type Rules = [egg::Rewrite<TensorNode, TensorAnalysis>];

/// Optimises `graph` in one e-graph.
fn optimize_whole(
    graph: &Graph,
    model: &dyn CostModel,
    options: &Options,
    rules: &Rules,
) -> Result<(Graph, Report), OptimizeError> {
    let start = Instant::now();
    let mut phases = Phases::default();
    let mut egraph = TensorGraph::default();
    let classes = convert::add_graph(&mut egraph, graph);
    phases.load = start.elapsed();
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_iter_limit(options.iter_limit)
        .with_node_limit(options.node_limit)
        .with_time_limit(options.time_limit)
        .with_scheduler(BackoffScheduler::default())
        .run(rules);
    let mut rules_fired = BTreeMap::new();
    for it in &runner.iterations {
        for (rule, n) in &it.applied {
            if *n > 0 {
                *rules_fired.entry(rule.to_string()).or_insert(0) += n;
            }
        }
        phases.search += Duration::from_secs_f64(it.search_time);
        phases.apply += Duration::from_secs_f64(it.apply_time);
        phases.rebuild += Duration::from_secs_f64(it.rebuild_time);
    }
    let egraph = &runner.egraph;
    let phase_start = Instant::now();
    let roots = convert::roots(egraph, graph, &classes);
    let extraction = extract::extract(egraph, &roots, model);
    phases.extract = phase_start.elapsed();
    let phase_start = Instant::now();
    let candidate = convert::to_graph(egraph, graph, &classes, &extraction)?;
    phases.convert_back = phase_start.elapsed();
    let phase_start = Instant::now();
    let (result, before, after) = cheaper(graph, candidate, model);
    phases.cost = phase_start.elapsed();
    let report = Report {
        rules_fired,
        before,
        after,
        iterations: runner.iterations.len(),
        stop_reason: describe(runner.stop_reason.as_ref()),
        egraph_nodes: egraph.total_number_of_nodes(),
        egraph_classes: egraph.number_of_classes(),
        windows: 1,
        windows_reused: 0,
        elapsed: start.elapsed(),
        phases,
    };
    Ok((result, report))
}
