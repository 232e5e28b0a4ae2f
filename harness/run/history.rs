//! How long each pair took in past runs on this host, kept in the cache root, so that the
//! next run can order its pairs by what they really cost ([`crate::scenario::order`]).
//!
//! A hint, never an input to a verdict: a missing, unreadable or foreign file reads as no
//! history (said in the log), and a failure to write it is a warning. A pair is known by
//! its id, its target string and a digest of its scenario, so an edited scenario or a
//! changed target starts again from the scenario's own estimate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::check::{PairReport, Verdict};
use crate::scenario::RunPair;

/// The file, in the cache root.
pub const FILE: &str = "pair-durations.json";
/// Durations kept per pair: the last few runs, so one slow run does not decide alone.
const KEEP: usize = 5;
/// Pairs kept in all; the least recently run go first.
const MAX_PAIRS: usize = 500;
const VERSION: u32 = 1;

/// The durations of past runs, by pair.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    version: u32,
    pairs: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// Seconds, oldest first, at most [`KEEP`].
    secs: Vec<f64>,
    /// When it last ran (Unix seconds), to drop the stalest pairs first.
    at: f64,
}

/// What a pair is known by: its base id (without `/rep-K`), its target and its scenario.
pub fn key(pair: &RunPair) -> String {
    let scenario = serde_json::to_vec(&pair.scenario).unwrap_or_default();
    let digest = hex::encode(&Sha256::digest(&scenario)[..8]);
    format!("{} {} {digest}", pair.base_id(), pair.target)
}

/// Where the history lives under `cache_root`.
pub fn path(cache_root: &Path) -> PathBuf {
    cache_root.join(FILE)
}

impl History {
    /// The history at `path`; empty (with a line in the log saying why) when there is
    /// none or it cannot be read.
    pub fn load(path: &Path) -> History {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return History::default(),
            Err(e) => {
                tracing::info!("no pair durations from {}: {e}", path.display());
                return History::default();
            }
        };
        match serde_json::from_str::<History>(&text) {
            Ok(h) if h.version == VERSION => h,
            Ok(h) => {
                tracing::info!(
                    "no pair durations from {}: version {}, not {VERSION}",
                    path.display(),
                    h.version
                );
                History::default()
            }
            Err(e) => {
                tracing::info!("no pair durations from {}: {e}", path.display());
                History::default()
            }
        }
    }

    /// One sample of costs per past run, each with a cost (seconds) for every pair in
    /// `keys`' order, and how many of the pairs were known. A pair never run before costs
    /// its `estimate` in every sample; one run fewer times than another repeats its own.
    pub fn samples(&self, keys: &[String], estimate: &[f64]) -> (Vec<Vec<f64>>, usize) {
        let known: Vec<Option<&Vec<f64>>> = keys
            .iter()
            .map(|k| self.pairs.get(k).map(|e| &e.secs).filter(|s| !s.is_empty()))
            .collect();
        let runs = known.iter().flatten().map(|s| s.len()).max().unwrap_or(1);
        let samples = (0..runs)
            .map(|j| {
                known
                    .iter()
                    .zip(estimate)
                    .map(|(secs, est)| secs.map_or(*est, |s| s[j % s.len()]))
                    .collect()
            })
            .collect();
        (samples, known.iter().flatten().count())
    }

    /// Add what the pairs of this run took. A pair that ended in an infrastructure error
    /// says nothing about what it costs, and is left out.
    pub fn record(&mut self, runs: &[(String, &PairReport)], now_unix: f64) {
        self.version = VERSION;
        for (key, report) in runs {
            if matches!(report.verdict, Verdict::Error { .. }) || !report.duration_secs.is_finite()
            {
                continue;
            }
            let entry = self.pairs.entry(key.clone()).or_insert(Entry {
                secs: Vec::new(),
                at: now_unix,
            });
            entry.secs.push(report.duration_secs);
            if entry.secs.len() > KEEP {
                entry.secs.remove(0);
            }
            entry.at = now_unix;
        }
        while self.pairs.len() > MAX_PAIRS {
            let stalest = self
                .pairs
                .iter()
                .min_by(|a, b| a.1.at.total_cmp(&b.1.at))
                .map(|(k, _)| k.clone());
            match stalest {
                Some(k) => self.pairs.remove(&k),
                None => break,
            };
        }
    }

    /// Write the history to `path` (a new file renamed into place, so a reader never sees
    /// half of one).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, self)?;
        tmp.persist(path)?;
        Ok(())
    }
}

/// `items` (pairs, by their `keys`), each with its index, in the order they should start
/// on `slots` slots: by their durations in past runs where known, else by their
/// `estimates` (seconds). Says on stderr which, when there is an order to choose.
pub fn start_order<T>(
    items: Vec<T>,
    keys: &[String],
    estimates: &[f64],
    history: &History,
    slots: usize,
) -> Vec<(usize, T)> {
    let (samples, known) = history.samples(keys, estimates);
    let order = crate::scenario::order::order(&samples, slots);
    if items.len() > slots {
        let by = match known {
            0 => "by their scenarios' estimates (no past runs here)".to_string(),
            k if k == items.len() => format!(
                "by their durations in past runs here (up to {} each)",
                samples.len()
            ),
            k => format!(
                "{k} by their durations in past runs here (up to {} each), the rest by their scenarios' estimates",
                samples.len()
            ),
        };
        eprintln!(
            "start order of {} pairs, {slots} at a time: {by}",
            items.len()
        );
    }
    let mut left: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|i| left[i].take().map(|item| (i, item)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(entries: &[(&str, &[f64])]) -> History {
        History {
            version: VERSION,
            pairs: entries
                .iter()
                .map(|(k, s)| {
                    (
                        (*k).to_string(),
                        Entry {
                            secs: s.to_vec(),
                            at: 0.0,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn samples_take_each_run_and_the_estimate_for_a_pair_never_run() {
        let h = history(&[("a", &[10.0, 12.0, 11.0]), ("b", &[30.0])]);
        let keys = ["a".to_string(), "b".to_string(), "c".to_string()];
        let (samples, known) = h.samples(&keys, &[1.0, 2.0, 40.0]);
        assert_eq!(known, 2);
        assert_eq!(
            samples,
            vec![
                vec![10.0, 30.0, 40.0],
                vec![12.0, 30.0, 40.0],
                vec![11.0, 30.0, 40.0]
            ]
        );
        let (samples, known) = History::default().samples(&keys, &[1.0, 2.0, 3.0]);
        assert_eq!((samples, known), (vec![vec![1.0, 2.0, 3.0]], 0));
    }

    /// A pair's verdict from a real run (the nightly fixture's clean cold boot).
    fn recorded_report() -> PairReport {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nightly/shard-1/after__clean-cold-boot__rep-1/verdict.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn record_keeps_the_last_runs_and_leaves_out_infrastructure_errors() {
        let mut h = History::default();
        let mut r = recorded_report();
        for secs in 1..=7 {
            r.duration_secs = f64::from(secs);
            h.record(&[("a".to_string(), &r)], f64::from(secs));
        }
        assert_eq!(h.pairs["a"].secs, vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        r.verdict = Verdict::Error {
            message: "QEMU exited".into(),
            class: Default::default(),
        };
        h.record(&[("a".to_string(), &r), ("b".to_string(), &r)], 8.0);
        assert_eq!(h.pairs["a"].secs.len(), 5);
        assert!(!h.pairs.contains_key("b"));
    }

    #[test]
    fn start_order_keeps_each_item_once_with_its_index() {
        let h = history(&[("long", &[100.0]), ("mid", &[60.0])]);
        let keys: Vec<String> = ["short", "long", "mid"].map(String::from).to_vec();
        let order = start_order(vec!['s', 'l', 'm'], &keys, &[10.0, 1.0, 1.0], &h, 2);
        assert_eq!(order, vec![(1, 'l'), (2, 'm'), (0, 's')]);
    }

    #[test]
    fn a_foreign_or_broken_file_reads_as_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        assert!(History::load(&p).pairs.is_empty());
        std::fs::write(&p, "{not json").unwrap();
        assert!(History::load(&p).pairs.is_empty());
        std::fs::write(&p, r#"{"version":99,"pairs":{}}"#).unwrap();
        assert!(History::load(&p).pairs.is_empty());
        let h = history(&[("a", &[1.0])]);
        h.save(&p).unwrap();
        assert_eq!(History::load(&p).pairs["a"].secs, vec![1.0]);
    }
}
