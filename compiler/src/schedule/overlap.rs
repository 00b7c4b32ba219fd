//! Communication overlapped with compute: every step that depends on the result of a
//! collective (`all_reduce`) moves after every step that does not, keeping the order
//! within each group. A data-parallel training step then issues each gradient's
//! all-reduce as soon as the gradient exists and runs the rest of the backward pass
//! while it travels; the optimiser updates, which need the sums, come last.
//!
//! The order stays topological: a step outside the deferred group reads no deferred
//! value (if it did, it would depend on a collective and be deferred itself).

use super::Step;
use crate::ir::ops::Op;
use crate::ir::Graph;

/// `steps` with the steps downstream of a collective moved to the end.
pub fn defer_collective_consumers(g: &Graph, steps: Vec<Step>) -> Vec<Step> {
    let mut downstream = vec![false; g.values.len()];
    let is_collective = |v| matches!(g.op(v), Some(Op::AllReduce));
    let mut now = Vec::with_capacity(steps.len());
    let mut later = Vec::new();
    for step in steps {
        let deferred = step
            .reads(g)
            .iter()
            .any(|&r| downstream[r.index()] || is_collective(r));
        if deferred {
            downstream[step.output().index()] = true;
            later.push(step);
        } else {
            now.push(step);
        }
    }
    now.extend(later);
    now
}

#[cfg(test)]
mod tests {
    use crate::autodiff::optimizer::{replica_training_step, Optimizer};
    use crate::ir::ops::Op;
    use crate::ir::text;
    use crate::schedule::schedule_with;

    #[test]
    fn a_replica_step_sums_gradients_before_the_rest_of_the_backward_pass_needs_them() {
        let g = text::parse(
            "graph @mlp {
  input %x: f32[B, 8]
  input %labels: i32[B]
  param %w1: f32[8, 16] = uniform(-0.3, 0.3)
  param %w2: f32[16, 16] = uniform(-0.3, 0.3)
  param %w3: f32[16, 4] = uniform(-0.3, 0.3)
  %h1 = matmul %x, %w1
  %a1 = tanh %h1
  %h2 = matmul %a1, %w2
  %a2 = tanh %h2
  %logits = matmul %a2, %w3
  %loss = cross_entropy %logits, %labels
  output %loss
}",
        )
        .unwrap()
        .graph;
        let step = replica_training_step(&g, &Optimizer::adamw(), 2).unwrap();
        let s = schedule_with(&step, true);
        let collective = |v| matches!(s.graph.op(v), Some(Op::AllReduce));
        let collectives: Vec<usize> = (0..s.steps.len())
            .filter(|&i| collective(s.steps[i].output()))
            .collect();
        assert_eq!(collectives.len(), 3, "one sum per parameter");
        // The first step that needs a sum comes after every step that does not, and
        // the sum of the last layer's gradient is issued before the first layer's
        // gradient is computed.
        let first_consumer = (0..s.steps.len())
            .find(|&i| s.steps[i].reads(&s.graph).into_iter().any(collective))
            .unwrap();
        assert!(collectives.iter().all(|&c| c < first_consumer));
        let mut downstream = vec![false; s.graph.values.len()];
        for (i, st) in s.steps.iter().enumerate() {
            let d = st
                .reads(&s.graph)
                .iter()
                .any(|&r| downstream[r.index()] || collective(r));
            downstream[st.output().index()] = d;
            assert_eq!(d, i >= first_consumer, "step {i} is out of its group");
        }
        assert!(
            (collectives[0] + 1..first_consumer).any(|i| !collective(s.steps[i].output())),
            "backward compute runs while the first sum travels"
        );
    }
}
