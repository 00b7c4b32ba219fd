//! The compilation pipeline from a model graph to the graph a backend schedules; one
//! definition shared by `run`, `train`, `compile`, `bench` and `dump-ir`, so what a dump
//! shows is what runs.
//!
//! The forward graph is optimised *before* autodiff: the e-graph recognises composites
//! (attention, softmax, layer_norm, ...) in hand-written forward code, and autodiff
//! then emits their fused gradients (`attention_grad_q`, `softmax_grad`, ...) instead
//! of differentiating the decomposition primitive by primitive. The training step is
//! optimised once more for what autodiff and the optimiser update add (scalar
//! folding, transposes of products).

use crate::autodiff::optimizer::{replica_training_step, training_step, Optimizer};
use crate::autodiff::{differentiate, find_loss, AutodiffError};
use crate::ir::Graph;
use crate::optimize::{optimize, CostModel, OptimizeError, Options, Report};
use crate::passes::decompose_except;
use std::time::{Duration, Instant};

/// What a model is compiled into.
#[derive(Clone, Debug, PartialEq)]
pub enum Goal {
    /// The forward graph.
    Run,
    /// The forward outputs and the gradient of the loss with respect to every
    /// parameter (`d.PARAM`), with no update.
    Gradients,
    /// One training step with this optimiser.
    Train(Optimizer),
    /// One data-parallel rank's training step: gradients are averaged over `replicas`
    /// ranks by `all_reduce` before the update.
    TrainReplica {
        /// The optimiser.
        optimizer: Optimizer,
        /// The data-parallel ranks (at least 2).
        replicas: usize,
    },
}

impl Goal {
    /// The graph computing this goal from the (optimised) forward graph.
    fn build(&self, forward: &Graph) -> Result<Graph, AutodiffError> {
        match self {
            Goal::Run => Ok(forward.clone()),
            Goal::Gradients => {
                let loss = find_loss(forward)?;
                let params: Vec<_> = forward.params().collect();
                Ok(differentiate(forward, loss, &params)?.graph)
            }
            Goal::Train(opt) => training_step(forward, opt),
            Goal::TrainReplica {
                optimizer,
                replicas,
            } => replica_training_step(forward, optimizer, *replicas),
        }
    }
}

/// Why the pipeline failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    /// The model cannot be differentiated (no loss, no parameters, ...).
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    /// The optimiser's result could not be rebuilt into a graph (an internal error).
    #[error("optimisation failed: {0}")]
    Optimize(#[from] OptimizeError),
}

/// The graph a backend runs, and what the optimiser did on the way.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The graph to schedule.
    pub graph: Graph,
    /// One report per optimiser run (forward, then training step); empty when the
    /// optimiser is off.
    pub reports: Vec<Report>,
    /// How long each stage took, so that a compile-time regression shows where it is.
    pub times: StageTimes,
}

/// Wall time of each stage of [`prepare`]; stages that did not run stay zero.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Rewriting composites into primitives before the first e-graph run.
    pub decompose: Duration,
    /// The e-graph optimiser on the forward graph.
    pub forward_egraph: Duration,
    /// Building the goal's graph: autodiff and the optimiser update.
    pub autodiff: Duration,
    /// The e-graph optimiser on the training step (or gradient graph).
    pub step_egraph: Duration,
}

/// Runs `stage`, adding its wall time to `total`.
fn timed<T>(total: &mut Duration, stage: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = stage();
    *total += start.elapsed();
    result
}

/// Runs the pipeline on `forward` (which must verify). With `options: None` the
/// e-graph optimiser is skipped (`--no-optimize`): autodiff works on the graph as
/// written.
pub fn prepare(
    forward: &Graph,
    goal: &Goal,
    model: &dyn CostModel,
    options: Option<&Options>,
) -> Result<Prepared, PipelineError> {
    let mut times = StageTimes::default();
    let Some(options) = options else {
        return Ok(Prepared {
            graph: timed(&mut times.autodiff, || goal.build(forward))?,
            reports: Vec::new(),
            times,
        });
    };
    let fail = PipelineError::Optimize;
    let decomposed = timed(&mut times.decompose, || {
        decompose_except(forward, &|c, _| c.stays_whole())
    });
    let (optimised, first) = timed(&mut times.forward_egraph, || {
        optimize(&decomposed, model, options)
    })
    .map_err(fail)?;
    if *goal == Goal::Run {
        return Ok(Prepared {
            graph: optimised,
            reports: vec![first],
            times,
        });
    }
    let step = timed(&mut times.autodiff, || goal.build(&optimised))?;
    let (graph, second) =
        timed(&mut times.step_egraph, || optimize(&step, model, options)).map_err(fail)?;
    Ok(Prepared {
        graph,
        reports: vec![first, second],
        times,
    })
}
