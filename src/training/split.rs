//! The train/test split: shuffled with a seeded SplitMix64 (deterministic for a given
//! `random_seed`), optionally stratified. The test set gets `ceil(test_size · n)` rows, as
//! scikit-learn's `train_test_split`; stratified, each class gets its share (largest
//! remainders first) and keeps at least one training row.

use std::collections::BTreeMap;

/// SplitMix64: small, fast, and enough for shuffling.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// `(train, test)` row indices, each sorted. `strata` (one key per row) stratifies.
pub fn split(
    rows: usize,
    test_size: Option<f64>,
    strata: Option<&[String]>,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let Some(test_size) = test_size else {
        return ((0..rows).collect(), Vec::new());
    };
    let n_test = ((test_size * rows as f64).ceil() as usize).min(rows);
    let mut rng = SplitMix64::new(seed);
    let mut test = Vec::with_capacity(n_test);
    let mut train = Vec::with_capacity(rows - n_test);
    match strata {
        None => {
            let mut order: Vec<usize> = (0..rows).collect();
            rng.shuffle(&mut order);
            let (a, b) = order.split_at(n_test);
            test.extend_from_slice(a);
            train.extend_from_slice(b);
        }
        Some(keys) => {
            let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate().take(rows) {
                groups.entry(key.as_str()).or_default().push(i);
            }
            // Each group's exact share, then the remainder to the largest fractions.
            let shares: Vec<f64> = groups
                .values()
                .map(|g| n_test as f64 * g.len() as f64 / rows as f64)
                .collect();
            let mut counts: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
            let mut order: Vec<usize> = (0..shares.len()).collect();
            order.sort_by(|&a, &b| {
                let fa = shares.get(a).map_or(0.0, |s| s - s.floor());
                let fb = shares.get(b).map_or(0.0, |s| s - s.floor());
                fb.total_cmp(&fa).then(a.cmp(&b))
            });
            let mut left = n_test.saturating_sub(counts.iter().sum());
            for &g in order.iter().cycle().take(order.len() * 2) {
                if left == 0 {
                    break;
                }
                let size = groups.values().nth(g).map_or(0, Vec::len);
                if let Some(c) = counts.get_mut(g) {
                    if *c + 1 < size {
                        *c += 1;
                        left -= 1;
                    }
                }
            }
            for (group, count) in groups.into_values().zip(counts) {
                let mut group = group;
                rng.shuffle(&mut group);
                let count = count.min(group.len().saturating_sub(1));
                let (a, b) = group.split_at(count);
                test.extend_from_slice(a);
                train.extend_from_slice(b);
            }
        }
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_sized() {
        let (train, test) = split(10, Some(0.25), None, 7);
        assert_eq!((train.len(), test.len()), (7, 3));
        assert_eq!(
            split(10, Some(0.25), None, 7),
            (train.clone(), test.clone())
        );
        assert_ne!(split(10, Some(0.25), None, 8).1, test);
        assert_eq!(split(4, None, None, 0), (vec![0, 1, 2, 3], vec![]));
    }

    #[test]
    fn stratified_keeps_proportions() {
        let keys: Vec<String> = (0..100)
            .map(|i| if i < 80 { "a" } else { "b" }.to_owned())
            .collect();
        let (train, test) = split(100, Some(0.2), Some(&keys), 1);
        assert_eq!(test.len(), 20);
        assert_eq!(test.iter().filter(|&&i| i >= 80).count(), 4);
        assert_eq!(train.len(), 80);
    }
}
