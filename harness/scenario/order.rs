//! The order pairs start in, when several run at once.
//!
//! The runner hands the next pair to whichever slot frees first (list scheduling), so
//! the order decides the plan's wall time: a long pair started last runs alone at the
//! end. Longest first (LPT) is the usual answer and is within 4/3 of the best, but on a
//! plan of a few long pairs and several short ones it leaves one slot idle for the
//! length of a short pair. With a cost for each pair, a plan of up to [`EXACT_UP_TO`]
//! pairs is ordered by trying every order on the same simulation, and keeping the one
//! that ends first; a larger one is ordered longest first. Pure: costs in, order out.

/// Plans of up to this many pairs are ordered exactly (8! = 40,320 orders, a few ms).
pub const EXACT_UP_TO: usize = 8;

/// When the last of `costs`, started in `order` on `slots` slots (each next one on the
/// slot that frees first), would end.
pub fn makespan(costs: &[f64], order: &[usize], slots: usize) -> f64 {
    let mut free = vec![0.0_f64; slots.max(1)];
    for &i in order {
        let first = free
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("at least one slot");
        *first += costs[i];
    }
    free.into_iter().fold(0.0, f64::max)
}

/// Each pair's median cost over the samples (the upper one of an even count).
pub fn medians(samples: &[Vec<f64>]) -> Vec<f64> {
    let n = samples.first().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let mut c: Vec<f64> = samples.iter().map(|s| s[i]).collect();
            c.sort_by(f64::total_cmp);
            c[c.len() / 2]
        })
        .collect()
}

/// The order to start pairs in on `slots` slots: indices into each sample of costs (one
/// sample per past run, each a cost for every pair; at least one sample). Longest first
/// by the median cost, ties in the given order; then, for a plan small enough, the
/// order whose mean end over the samples is clearly sooner, if one is. Judging an order
/// on every past run rather than on one estimate keeps an order that wins only on one
/// run's noise from being picked.
pub fn order(samples: &[Vec<f64>], slots: usize) -> Vec<usize> {
    let median = medians(samples);
    let n = median.len();
    let mut lpt: Vec<usize> = (0..n).collect();
    lpt.sort_by(|&a, &b| median[b].total_cmp(&median[a]));
    if slots <= 1 || n <= slots || n > EXACT_UP_TO {
        return lpt;
    }
    let mean_end = |order: &[usize]| {
        samples
            .iter()
            .map(|s| makespan(s, order, slots))
            .sum::<f64>()
            / samples.len() as f64
    };
    let mut best = lpt.clone();
    let mut best_end = mean_end(&lpt);
    let mut perm = lpt.clone();
    // Heap's algorithm, iteratively: every order of `lpt`, each once.
    let mut c = vec![0usize; n];
    let mut k = 0;
    while k < n {
        if c[k] < k {
            if k % 2 == 0 {
                perm.swap(0, k);
            } else {
                perm.swap(c[k], k);
            }
            // Only a clearly sooner end beats longest first: a tenth of a second is noise.
            let end = mean_end(&perm);
            if end < best_end - 0.1 {
                best_end = end;
                best.clone_from(&perm);
            }
            c[k] += 1;
            k = 0;
        } else {
            c[k] = 0;
            k += 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds each pair of the reference plan took in `coldboot bench` runs (sessions
    /// 10 and 11, `--jobs 2`, from each run's report.json), in the plan's order:
    /// broken-traefik, broken-traefik-silent, clean-cold-boot, consumers-order,
    /// dashboard-held-back, after/old-gate-cold-boot, before/old-gate-cold-boot.
    const RUNS: [[f64; 7]; 6] = [
        [127.0, 123.0, 70.0, 45.0, 37.0, 38.0, 49.0],
        [127.0, 128.0, 69.0, 45.0, 35.0, 38.0, 46.0],
        [125.5, 124.6, 70.1, 44.4, 37.3, 38.6, 35.2],
        [126.4, 126.4, 68.8, 42.7, 37.4, 37.7, 47.9],
        [130.2, 128.3, 72.9, 48.9, 40.2, 41.2, 41.1],
        [120.0, 123.0, 68.0, 43.0, 35.0, 35.0, 44.0],
    ];

    fn lpt(costs: &[f64]) -> Vec<usize> {
        let mut v: Vec<usize> = (0..costs.len()).collect();
        v.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
        v
    }

    #[test]
    fn longest_first_leaves_a_slot_idle_on_the_reference_plan() {
        let run = RUNS[3].to_vec();
        let lpt_end = makespan(&run, &lpt(&run), 2);
        let best = order(std::slice::from_ref(&run), 2);
        let best_end = makespan(&run, &best, 2);
        let half: f64 = run.iter().sum::<f64>() / 2.0;
        // Both long pairs start together; a short pair then runs alone at the end.
        assert!((lpt_end - 254.4).abs() < 0.05, "{lpt_end}");
        assert!(best_end < 245.0, "{best_end} with {best:?}");
        assert!(best_end >= half);
    }

    #[test]
    fn an_order_chosen_on_past_runs_beats_longest_first_on_the_next() {
        // Leave each run out, order on the others, play the order on the one left out.
        let (mut ours, mut theirs) = (0.0, 0.0);
        for (k, next) in RUNS.iter().enumerate() {
            let past: Vec<Vec<f64>> = RUNS
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(_, r)| r.to_vec())
                .collect();
            let next = next.to_vec();
            let chosen = order(&past, 2);
            ours += makespan(&next, &chosen, 2);
            theirs += makespan(&next, &lpt(&medians(&past)), 2);
        }
        assert!(
            ours < theirs - 5.0,
            "ours {ours:.1} s, longest first {theirs:.1} s"
        );
    }

    #[test]
    fn every_index_once() {
        let o = order(&[RUNS[0].to_vec(), RUNS[1].to_vec()], 2);
        let mut sorted = o.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..7).collect::<Vec<_>>());
        assert_eq!(order(&[vec![]], 2), Vec::<usize>::new());
        assert_eq!(order(&[], 2), Vec::<usize>::new());
        assert_eq!(order(&[vec![3.0, 1.0, 2.0]], 1), vec![0, 2, 1]);
        assert_eq!(order(&[vec![1.0, 2.0]], 4), vec![1, 0]);
    }

    #[test]
    fn larger_plans_are_ordered_longest_first() {
        let costs: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(order(&[costs], 3), (0..10).rev().collect::<Vec<_>>());
    }

    #[test]
    fn ties_keep_longest_first() {
        assert_eq!(order(&[vec![10.0; 6]], 2), (0..6).collect::<Vec<_>>());
    }
}
