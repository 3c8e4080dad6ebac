//! Seeded randomness: each component draws from its own ChaCha8 stream, seeded from
//! (root seed, component name), so adding a component never shifts another's draws.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// A component's own random stream.
#[derive(Debug, Clone)]
pub struct ComponentRng(ChaCha8Rng);

impl ComponentRng {
    pub fn new(root_seed: u64, component: &str) -> ComponentRng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in component.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ComponentRng(ChaCha8Rng::seed_from_u64(root_seed ^ h.rotate_left(17)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// An exponentially distributed non-negative value with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        // 1 - unit() is in (0, 1], so ln never sees zero.
        -mean * (1.0 - self.unit()).ln()
    }

    /// Uniform integer in [0, n); n must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_name_give_same_stream() {
        let mut a = ComponentRng::new(7, "link/a");
        let mut b = ComponentRng::new(7, "link/a");
        let mut c = ComponentRng::new(7, "link/b");
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut r = ComponentRng::new(1, "x");
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(4.0)).sum::<f64>() / n as f64;
        assert!((mean - 4.0).abs() < 0.05, "{mean}");
    }
}
