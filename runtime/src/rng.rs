//! Counter-based random numbers: element `i` of a stream depends only on the seed and
//! `i`, so any backend (or thread, or GPU block) reproduces it without shared state.

/// SplitMix64's finaliser: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for counter `i` of stream `seed`.
pub fn bits(seed: u64, i: u64) -> u64 {
    mix(mix(seed) ^ i)
}

/// A uniform number in `[0, 1)` with 53 random bits.
pub fn uniform01(seed: u64, i: u64) -> f64 {
    (bits(seed, i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal number (Box–Muller on counters `2i` and `2i + 1`).
pub fn normal01(seed: u64, i: u64) -> f64 {
    let u1 = 1.0 - uniform01(seed, 2 * i); // in (0, 1]: log is finite
    let u2 = uniform01(seed, 2 * i + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A stream seed for a named thing (a parameter) under a run's seed: FNV-1a of the name,
/// mixed with the seed.
pub fn seed_for(run_seed: u64, name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    mix(run_seed ^ h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_numbers_have_the_right_moments() {
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|i| normal01(7, i)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }

    #[test]
    fn streams_differ_by_seed_and_name() {
        assert_ne!(uniform01(1, 0), uniform01(2, 0));
        assert_ne!(seed_for(0, "w1"), seed_for(0, "w2"));
        assert_eq!(seed_for(3, "w1"), seed_for(3, "w1"));
    }
}
