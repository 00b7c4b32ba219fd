//! Choosing the next token from logits: greedy, or drawn at a temperature after the
//! usual filters (repetition penalty, top-k, top-p, min-p), from a counter-based random
//! stream, so that a seed gives the same tokens on every run.

use crate::rng;

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 picks the most likely token; above 0, logits are divided by it.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least `p` (1: all).
    pub top_p: f64,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f64,
    /// Divide positive logits (multiply negative ones) of tokens already in the
    /// sequence by this (1: off), as llama.cpp and Hugging Face do.
    pub repetition_penalty: f64,
    /// The random stream's seed.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A sampling setting out of range (the message starts with the setting's name).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `temperature` is negative or not finite.
    #[error("temperature must be a finite number >= 0, found {0}")]
    Temperature(f64),
    /// `top_p` is outside (0, 1].
    #[error("top-p must lie in (0, 1], found {0}")]
    TopP(f64),
    /// `min_p` is outside [0, 1].
    #[error("min-p must lie in [0, 1], found {0}")]
    MinP(f64),
    /// `repetition_penalty` is not a finite number > 0.
    #[error("the repetition penalty must be a finite number > 0, found {0}")]
    RepetitionPenalty(f64),
}

impl Sampling {
    /// Checks that every setting is in range, naming the first that is not.
    pub fn check(&self) -> Result<(), SamplingError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::MinP(self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(SamplingError::RepetitionPenalty(self.repetition_penalty));
        }
        Ok(())
    }
}

/// Draws tokens with one [`Sampling`]; the `n`-th draw uses the stream's `n`-th number.
#[derive(Clone, Debug)]
pub struct Sampler {
    settings: Sampling,
    draws: u64,
}

impl Sampler {
    /// A sampler at the start of its stream.
    pub fn new(settings: Sampling) -> Sampler {
        Sampler { settings, draws: 0 }
    }

    /// The next token after a sequence holding `history`, from `logits`.
    pub fn pick(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let s = &self.settings;
        let u = rng::uniform01(s.seed, self.draws);
        self.draws += 1;
        let mut scores: Vec<f64> = logits.iter().map(|&x| f64::from(x)).collect();
        if s.repetition_penalty != 1.0 {
            for &t in history {
                if let Some(x) = scores.get_mut(t as usize) {
                    *x = if *x > 0.0 {
                        *x / s.repetition_penalty
                    } else {
                        *x * s.repetition_penalty
                    };
                }
            }
        }
        let best = argmax(&scores);
        if s.temperature == 0.0 {
            return best as u32;
        }
        let top = scores[best];
        let weight = |i: usize| ((scores[i] - top) / s.temperature).exp();
        // Candidates in id order. Tokens below e^-40 of the best weigh nothing at f64
        // precision beside it, and min-p drops tokens below its share of the best.
        let floor = top - 40.0 * s.temperature;
        let mut order: Vec<usize> = (0..scores.len())
            .filter(|&i| scores[i].is_finite() && scores[i] >= floor && weight(i) >= s.min_p)
            .collect();
        // Top-k and top-p need the most likely first (ties by id, so the order is
        // reproducible); plain temperature sampling does not sort at all.
        let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
        if s.top_k > 0 && s.top_k < order.len() {
            order.select_nth_unstable_by(s.top_k - 1, by_score);
            order.truncate(s.top_k);
            order.sort_unstable();
        }
        if s.top_p < 1.0 {
            order.sort_by(by_score);
            let total: f64 = order.iter().map(|&i| weight(i)).sum();
            let mut mass = 0.0;
            let keep = order
                .iter()
                .position(|&i| {
                    mass += weight(i) / total;
                    mass >= s.top_p
                })
                .map_or(order.len(), |i| i + 1);
            order.truncate(keep);
        }
        let weights: Vec<f64> = order.iter().map(|&i| weight(i)).collect();
        let mut target = u * weights.iter().sum::<f64>();
        for (w, &i) in weights.iter().zip(&order) {
            target -= w;
            if target <= 0.0 {
                return i as u32;
            }
        }
        order.last().map_or(best, |&i| i) as u32
    }
}

fn argmax(x: &[f64]) -> usize {
    (0..x.len())
        .max_by(|&a, &b| x[a].total_cmp(&x[b]).then(b.cmp(&a)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(settings: Sampling, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(settings);
        (0..n).map(|_| s.pick(logits, &[])).collect()
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        assert_eq!(
            draws(Sampling::default(), &[1.0, 3.0, 3.0, -1.0], 1),
            vec![1]
        );
    }

    #[test]
    fn a_seed_repeats_and_filters_hold() {
        let logits = [2.0, 1.9, 1.8, -5.0, 0.5];
        let warm = Sampling {
            temperature: 1.0,
            seed: 7,
            ..Sampling::default()
        };
        assert_eq!(
            draws(warm.clone(), &logits, 50),
            draws(warm.clone(), &logits, 50)
        );
        let top2 = draws(
            Sampling {
                top_k: 2,
                ..warm.clone()
            },
            &logits,
            200,
        );
        assert!(top2.iter().all(|&t| t <= 1) && top2.contains(&0) && top2.contains(&1));
        // p(0) ≈ 0.37, so 0.3 keeps only the first token.
        assert!(draws(
            Sampling {
                top_p: 0.3,
                ..warm.clone()
            },
            &logits,
            50
        )
        .iter()
        .all(|&t| t == 0));
        // min_p 0.5 keeps tokens within ln 2 of the best: 0, 1 and 2.
        let near = draws(Sampling { min_p: 0.5, ..warm }, &logits, 300);
        assert!(near.iter().all(|&t| t <= 2) && near.contains(&2));
    }

    #[test]
    fn repetition_penalty_moves_greedy_off_a_repeated_token() {
        let mut s = Sampler::new(Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        });
        assert_eq!(s.pick(&[3.0, 2.0], &[0]), 1);
    }
}
