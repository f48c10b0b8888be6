//! Backend selection: (weighted) round robin, weighted least connections,
//! Maglev consistent hashing, and feedback-driven weights.

use crate::config::Algorithm;

/// What a selector needs to know about each backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Effective weight; 0 = takes no new flows (drained or unhealthy).
    pub weight: u32,
    pub active: u64,
}

/// Chooses backends for new flows of one service.
#[derive(Debug, Clone)]
pub struct Selector {
    algorithm: Algorithm,
    /// Smooth weighted round robin state (nginx's algorithm).
    current: Vec<i64>,
    maglev: Vec<u32>,
    /// Weights the Maglev table was built for.
    maglev_weights: Vec<u32>,
}

/// Smallest prime ≥ n.
pub fn next_prime(n: usize) -> usize {
    let is_prime = |k: usize| {
        k >= 2
            && (2..)
                .take_while(|d| d * d <= k)
                .all(|d| !k.is_multiple_of(d))
    };
    (n.max(2)..).find(|&k| is_prime(k)).unwrap_or(n)
}

fn fnv(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// Builds a Maglev lookup table (Eisenbud et al., NSDI '16): each backend
/// walks its own permutation of the slots, claiming free ones in turn; a
/// backend of weight w takes w turns per round. `names` identify backends
/// stably (their address), so tables built on different managers agree.
pub fn maglev_table(names: &[Vec<u8>], weights: &[u32]) -> Vec<u32> {
    let live: Vec<usize> = (0..names.len())
        .filter(|&i| weights.get(i).copied().unwrap_or(0) > 0)
        .collect();
    let m = next_prime((100 * names.len()).max(101));
    let mut table = vec![u32::MAX; m];
    if live.is_empty() {
        return table;
    }
    let perm: Vec<(usize, usize)> = live
        .iter()
        .map(|&i| {
            (
                (fnv(&names[i], 1) % m as u64) as usize,
                (fnv(&names[i], 2) % (m as u64 - 1)) as usize + 1,
            )
        })
        .collect();
    let mut next = vec![0usize; live.len()];
    let mut filled = 0;
    'outer: loop {
        for (j, &i) in live.iter().enumerate() {
            for _ in 0..weights[i] {
                let (offset, skip) = perm[j];
                let mut c = (offset + next[j] * skip) % m;
                while table[c] != u32::MAX {
                    next[j] += 1;
                    c = (offset + next[j] * skip) % m;
                }
                table[c] = i as u32;
                next[j] += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
    }
    table
}

impl Selector {
    pub fn new(algorithm: Algorithm) -> Self {
        Selector {
            algorithm,
            current: Vec::new(),
            maglev: Vec::new(),
            maglev_weights: Vec::new(),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether the same flow key always maps to the same backend (so a
    /// backup manager can adopt flows it never saw).
    pub fn is_consistent(&self) -> bool {
        self.algorithm == Algorithm::Maglev
    }

    /// Picks a backend index for a flow whose key hashes to `flow_hash`.
    pub fn pick(
        &mut self,
        backends: &[Candidate],
        names: &[Vec<u8>],
        flow_hash: u64,
    ) -> Option<usize> {
        if backends.iter().all(|b| b.weight == 0) {
            return None;
        }
        match self.algorithm {
            Algorithm::RoundRobin => {
                let flat: Vec<Candidate> = backends
                    .iter()
                    .map(|b| Candidate {
                        weight: b.weight.min(1),
                        ..*b
                    })
                    .collect();
                self.smooth_wrr(&flat)
            }
            Algorithm::WeightedRoundRobin | Algorithm::Feedback => self.smooth_wrr(backends),
            Algorithm::LeastConnections => {
                // Minimise active/weight, compared without division.
                (0..backends.len())
                    .filter(|&i| backends[i].weight > 0)
                    .min_by(|&a, &b| {
                        let (x, y) = (&backends[a], &backends[b]);
                        (x.active as u128 * y.weight as u128)
                            .cmp(&(y.active as u128 * x.weight as u128))
                            .then(a.cmp(&b))
                    })
            }
            Algorithm::Maglev => {
                let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
                if weights != self.maglev_weights {
                    self.maglev = maglev_table(names, &weights);
                    self.maglev_weights = weights;
                }
                let slot = (flow_hash % self.maglev.len().max(1) as u64) as usize;
                self.maglev
                    .get(slot)
                    .copied()
                    .filter(|&i| i != u32::MAX)
                    .map(|i| i as usize)
            }
        }
    }

    fn smooth_wrr(&mut self, backends: &[Candidate]) -> Option<usize> {
        if self.current.len() != backends.len() {
            self.current = vec![0; backends.len()];
        }
        let total: i64 = backends.iter().map(|b| b.weight as i64).sum();
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if b.weight == 0 {
                continue;
            }
            self.current[i] += b.weight as i64;
            if best.is_none_or(|j| self.current[i] > self.current[j]) {
                best = Some(i);
            }
        }
        let i = best?;
        self.current[i] -= total;
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::{maglev_table, next_prime, Algorithm, Candidate, Selector};

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("198.51.100.{i}:80").into_bytes())
            .collect()
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let mut s = Selector::new(Algorithm::WeightedRoundRobin);
        let b = [
            Candidate {
                weight: 5,
                active: 0,
            },
            Candidate {
                weight: 1,
                active: 0,
            },
            Candidate {
                weight: 1,
                active: 0,
            },
        ];
        let mut counts = [0; 3];
        for _ in 0..70 {
            counts[s.pick(&b, &names(3), 0).unwrap()] += 1;
        }
        assert_eq!(counts, [50, 10, 10]);
        // Smooth: the heavy backend is not picked 5 times in a row.
        let seq: Vec<usize> = (0..7).map(|_| s.pick(&b, &names(3), 0).unwrap()).collect();
        assert!(
            seq.windows(5).all(|w| !w.iter().all(|&x| x == 0)),
            "{seq:?}"
        );
    }

    #[test]
    fn round_robin_ignores_weights_but_not_drain() {
        let mut s = Selector::new(Algorithm::RoundRobin);
        let b = [
            Candidate {
                weight: 9,
                active: 0,
            },
            Candidate {
                weight: 0,
                active: 0,
            },
            Candidate {
                weight: 1,
                active: 0,
            },
        ];
        let picks: Vec<usize> = (0..4).map(|_| s.pick(&b, &names(3), 0).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
        assert!(!picks.contains(&1));
    }

    #[test]
    fn least_connections_by_weight() {
        let mut s = Selector::new(Algorithm::LeastConnections);
        let b = [
            Candidate {
                weight: 1,
                active: 10,
            },
            Candidate {
                weight: 4,
                active: 20,
            },
            Candidate {
                weight: 1,
                active: 6,
            },
        ];
        assert_eq!(s.pick(&b, &names(3), 0), Some(1));
    }

    #[test]
    fn maglev_is_prime_sized_balanced_and_stable() {
        let t = maglev_table(&names(3), &[1, 1, 1]);
        assert_eq!(t.len(), next_prime(300));
        let mut counts = [0usize; 3];
        for &i in &t {
            counts[i as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| c.abs_diff(t.len() / 3) <= 2),
            "{counts:?}"
        );
        // Removing backend 1 moves only its own slots.
        let t2 = maglev_table(&names(3), &[1, 0, 1]);
        let moved = t
            .iter()
            .zip(&t2)
            .filter(|(a, b)| a != b && **a != 1)
            .count();
        assert!(moved < t.len() / 10, "moved {moved}");
        // Another manager computes the same table.
        assert_eq!(t, maglev_table(&names(3), &[1, 1, 1]));
    }

    #[test]
    fn all_drained_picks_none() {
        let mut s = Selector::new(Algorithm::Maglev);
        assert_eq!(
            s.pick(
                &[Candidate {
                    weight: 0,
                    active: 0
                }],
                &names(1),
                7
            ),
            None
        );
    }
}
