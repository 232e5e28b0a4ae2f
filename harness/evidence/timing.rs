//! Repetitions and boot timing: the figures `--repeat N` and `coldboot compare` read.
//!
//! A unit's time to active is when PID 1 logged its start job done, on the guest's own
//! monotonic clock (from the kernel's start). It is free of the harness's polling and of
//! SSH, so two runs on different hosts or loads compare what the guest did. Pure: works
//! on a loaded [`Bundle`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::load::{Bundle, PairEvidence};
use crate::scenario::plan::base_id;

/// Median and tail of a set of samples (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// How many samples.
    pub n: usize,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank: with fewer than 20 samples, the worst).
    pub p95: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stats {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        s.sort_by(f64::total_cmp);
        Some(Stats {
            n: s.len(),
            p50: nearest_rank(&s, 50.0),
            p95: nearest_rank(&s, 95.0),
            min: s[0],
            max: s[s.len() - 1],
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty samples: the smallest sample with at
/// least `p` % of the samples at or below it. Always one of the samples, never an
/// interpolation, so a figure in a report is a time some boot really took.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One pair of the plan with all its repetitions (one run when `--repeat` was not given).
#[derive(Debug, Clone, Serialize)]
pub struct Repeated {
    /// The pair's id without `/rep-K`.
    pub id: String,
    /// The focus unit of its scenario, if it names one.
    pub focus_unit: Option<String>,
    /// Per repetition, in order: its verdict word and whether it was as planned.
    pub runs: Vec<RunVerdict>,
    /// Whether the repetitions disagree: a flaky result, whatever each one said.
    pub flaky: bool,
    /// `"PHASE UNIT"` → time to active (seconds) over the repetitions where the unit's
    /// start job finished in the first boot of that phase.
    pub units: BTreeMap<String, Stats>,
}

/// The verdict of one repetition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RunVerdict {
    /// The run folder.
    pub folder: String,
    /// `pass`, `fail`, `reproduced` or `error`.
    pub verdict: String,
    /// Whether it was the verdict the plan expects.
    pub as_planned: bool,
}

impl Repeated {
    /// Whether every repetition was as planned.
    pub fn all_as_planned(&self) -> bool {
        self.runs.iter().all(|r| r.as_planned)
    }
}

/// The key of a unit's timing: the phase whose first boot it started in, and the unit.
pub fn unit_key(phase: &str, unit: &str) -> String {
    format!("{phase} {unit}")
}

/// Group the bundle's pairs by pair id (repetitions together), in plan order.
pub fn repeated(bundle: &Bundle) -> Vec<Repeated> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&PairEvidence>> = BTreeMap::new();
    for p in &bundle.pairs {
        let id = base_id(&p.report.id, p.report.repetition).to_string();
        if !groups.contains_key(&id) {
            order.push(id.clone());
        }
        groups.entry(id).or_default().push(p);
    }
    order
        .into_iter()
        .map(|id| {
            let mut runs = groups.remove(&id).unwrap_or_default();
            runs.sort_by_key(|p| p.report.repetition.unwrap_or(0));
            let verdicts: Vec<RunVerdict> = runs
                .iter()
                .map(|p| RunVerdict {
                    folder: p.folder.clone(),
                    verdict: p.report.verdict.word().to_string(),
                    as_planned: p.report.matches_plan,
                })
                .collect();
            let flaky = verdicts
                .windows(2)
                .any(|w| (&w[0].verdict, w[0].as_planned) != (&w[1].verdict, w[1].as_planned));
            let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for p in &runs {
                for (key, secs) in times_to_active(p) {
                    samples.entry(key).or_default().push(secs);
                }
            }
            Repeated {
                focus_unit: runs.first().and_then(|p| p.report.focus_unit.clone()),
                id,
                runs: verdicts,
                flaky,
                units: samples
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, Stats::of(&v)?)))
                    .collect(),
            }
        })
        .collect()
}

/// Per `"PHASE UNIT"`, seconds from the kernel's start to the unit's start job done, in
/// the first boot of each phase of one run.
pub fn times_to_active(pair: &PairEvidence) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut phases_seen = Vec::new();
    for boot in &pair.report.boots {
        if phases_seen.contains(&&boot.phase) {
            continue;
        }
        phases_seen.push(&boot.phase);
        let Some(started) = pair.started_us.get(&boot.index) else {
            continue;
        };
        for (unit, us) in started {
            out.insert(unit_key(&boot.phase, unit), *us as f64 / 1e6);
        }
    }
    out
}

/// Pair ids the plan lists that the bundle has no run folder for. A shard's own bundle
/// lacks the other shards' pairs by design, so only a whole run or a merge lists them.
pub fn not_run(bundle: &Bundle) -> Vec<String> {
    let Some(plan) = bundle.invocation.as_ref().and_then(|i| i.plan.as_ref()) else {
        return Vec::new();
    };
    if plan.shard.is_some() {
        return Vec::new();
    }
    plan.pairs
        .iter()
        .filter(|id| !bundle.pairs.iter().any(|p| &p.report.id == *id))
        .cloned()
        .collect()
}

/// How many units each repeated pair's table shows besides its focus unit: the slowest.
const SLOWEST_SHOWN: usize = 8;

/// report.md's section on repetitions (only when a pair ran more than once) and on pairs
/// that were planned but not run. Empty when there is nothing to say.
pub fn markdown(bundle: &Bundle) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let missing = not_run(bundle);
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "\n## Not run\n\n{} pair(s) of the plan have no run folder in this bundle (a shard \
             that was not merged, or a run that stopped early). They are not checked, and \
             count as neither pass nor fail:\n",
            missing.len()
        );
        for id in &missing {
            let _ = writeln!(s, "- `{id}`");
        }
    }
    let groups: Vec<Repeated> = repeated(bundle)
        .into_iter()
        .filter(|g| g.runs.len() > 1)
        .collect();
    if groups.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n## Repetitions\n\nEach pair below was cold-booted more than once. A time to active \
         is when PID 1 logged the unit's start job done, on the guest's monotonic clock \
         (from the kernel's start), in the first boot of the phase; p50 and p95 are nearest \
         rank, so each is a time some boot really took.\n"
    );
    for g in &groups {
        let words: Vec<String> = g
            .runs
            .iter()
            .map(|r| {
                format!(
                    "{}{}",
                    r.verdict,
                    if r.as_planned {
                        ""
                    } else {
                        " (not as planned)"
                    }
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "### `{}` × {}{}\n\nVerdicts, in order: {}.\n",
            g.id,
            g.runs.len(),
            if g.flaky {
                " — FLAKY: the verdicts differ"
            } else {
                ""
            },
            words.join(", ")
        );
        let mut rows: Vec<(&String, &Stats)> = g.units.iter().collect();
        rows.sort_by(|a, b| b.1.p50.total_cmp(&a.1.p50).then(a.0.cmp(b.0)));
        let focus: Vec<(&String, &Stats)> = rows
            .iter()
            .filter(|(k, _)| {
                g.focus_unit
                    .as_ref()
                    .is_some_and(|u| k.ends_with(&format!(" {u}")))
            })
            .copied()
            .collect();
        let mut shown = focus.clone();
        shown.extend(
            rows.iter()
                .filter(|r| !focus.contains(r))
                .take(SLOWEST_SHOWN)
                .copied(),
        );
        let _ = writeln!(
            s,
            "| phase, unit | n | p50 | p95 | min | max |\n|---|---|---|---|---|---|"
        );
        for (k, st) in shown {
            let _ = writeln!(
                s,
                "| `{k}` | {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s |",
                st.n, st.p50, st.p95, st.min, st.max
            );
        }
        let _ = writeln!(
            s,
            "\n*{} units in all in report.json; shown: the focus unit and the {} slowest.*\n",
            g.units.len(),
            SLOWEST_SHOWN
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_is_a_sample() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(nearest_rank(&s, 50.0), 3.0);
        assert_eq!(nearest_rank(&s, 95.0), 5.0);
        assert_eq!(nearest_rank(&[7.0], 95.0), 7.0);
        let st = Stats::of(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
        assert_eq!(
            (st.n, st.p50, st.p95, st.min, st.max),
            (4, 2.0, 4.0, 1.0, 4.0)
        );
        assert!(Stats::of(&[]).is_none());
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Stats::of(&twenty).expect("samples").p95, 19.0);
    }
}
