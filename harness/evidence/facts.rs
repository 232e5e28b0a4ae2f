//! Facts the renderers share, computed from a loaded bundle: counts, the focus unit's
//! timing, the grid of targets by scenarios, and the run's dates. Pure functions.

use serde::Serialize;

use super::load::{Bundle, PairEvidence};
use crate::check::{ExpectationOutcome, Verdict};
use crate::scenario::{ExpectationKind, Milestone, OrderExpectation, Section};

/// How many pairs ended in each verdict, and how many as the plan expected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All pairs.
    pub total: usize,
    /// `pass` verdicts.
    pub pass: usize,
    /// `fail` verdicts.
    pub fail: usize,
    /// `reproduced` verdicts.
    pub reproduced: usize,
    /// `error` verdicts.
    pub error: usize,
    /// Pairs whose verdict is the one the plan expects.
    pub as_planned: usize,
    /// Pairs whose verdict is not.
    pub not_as_planned: usize,
    /// Run folders without `verdict.json`.
    pub incomplete: usize,
}

/// Count the verdicts of a bundle.
pub fn counts(bundle: &Bundle) -> Counts {
    let mut c = Counts::default();
    for p in &bundle.pairs {
        c.total += 1;
        match p.report.verdict {
            Verdict::Pass => c.pass += 1,
            Verdict::Fail { .. } => c.fail += 1,
            Verdict::Reproduced { .. } => c.reproduced += 1,
            Verdict::Error { .. } => c.error += 1,
        }
        if p.report.matches_plan {
            c.as_planned += 1;
        } else {
            c.not_as_planned += 1;
        }
        if !p.complete {
            c.incomplete += 1;
        }
    }
    c
}

/// The first `unit:` expectation on the scenario's focus unit, read from the outcomes'
/// recorded kinds.
pub fn focus_outcome(pair: &PairEvidence) -> Option<&ExpectationOutcome> {
    let focus = pair.report.focus_unit.as_deref()?;
    pair.report
        .outcomes
        .iter()
        .find(|o| matches!(&o.kind, Some(ExpectationKind::Unit(u)) if u.unit.as_str() == focus))
}

/// The first outcome of an `order:` expectation, with its anchor and units.
pub fn order_outcome(pair: &PairEvidence) -> Option<(&ExpectationOutcome, &OrderExpectation)> {
    pair.report.outcomes.iter().find_map(|o| {
        if let Some(ExpectationKind::Order(order)) = &o.kind {
            Some((o, order))
        } else {
            None
        }
    })
}

/// The outcome of the pair's `wait_cycle:` expectation, if it has one.
pub fn wait_cycle_outcome(pair: &PairEvidence) -> Option<&ExpectationOutcome> {
    pair.report
        .outcomes
        .iter()
        .find(|o| matches!(o.kind, Some(ExpectationKind::WaitCycle(_))))
}

/// When the focus unit's expectation was settled, counted from the start of QEMU for
/// the boot it was checked on.
#[derive(Debug, Clone, PartialEq)]
pub struct Awaited<'a> {
    /// The outcome.
    pub outcome: &'a ExpectationOutcome,
    /// Seconds from QEMU start: the guest's time of the change when it held, else
    /// when the harness decided.
    pub secs: Option<f64>,
}

/// The focus unit's outcome and its time to the awaited state.
pub fn awaited(pair: &PairEvidence) -> Option<Awaited<'_>> {
    let outcome = focus_outcome(pair)?;
    let at = if outcome.held {
        outcome.changed_at.or(outcome.decided_at)
    } else {
        outcome.decided_at
    };
    let qemu_start = boot_start_for(pair, outcome);
    let secs = at.map(|d| (d.as_secs_f64() - qemu_start).max(0.0));
    Some(Awaited { outcome, secs })
}

/// Seconds from the pair's start to QEMU start, for the boot whose phase wrote the
/// outcome's evidence file (the first boot when unknown).
fn boot_start_for(pair: &PairEvidence, outcome: &ExpectationOutcome) -> f64 {
    let file = outcome
        .evidence
        .as_ref()
        .and_then(|e| e.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let boots = &pair.report.boots;
    boots
        .iter()
        .find(|b| super::load::units_file(&b.phase) == file)
        .or(boots.first())
        .map(|b| b.at_secs)
        .unwrap_or(0.0)
}

/// Names in order of first appearance.
pub fn first_seen<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// Target names in the bundle's order.
pub fn targets(bundle: &Bundle) -> Vec<&str> {
    first_seen(bundle.pairs.iter().map(|p| p.report.target_name.as_str()))
}

/// Scenario names in the bundle's order.
pub fn scenarios(bundle: &Bundle) -> Vec<&str> {
    first_seen(bundle.pairs.iter().map(|p| p.report.scenario.as_str()))
}

/// The pair for (target, scenario), if it ran.
pub fn pair<'a>(bundle: &'a Bundle, target: &str, scenario: &str) -> Option<&'a PairEvidence> {
    bundle
        .pairs
        .iter()
        .find(|p| p.report.target_name == target && p.report.scenario == scenario)
}

/// Pairs whose scenario belongs to `m`.
pub fn milestone<'a>(bundle: &'a Bundle, m: &Milestone) -> Vec<&'a PairEvidence> {
    bundle
        .pairs
        .iter()
        .filter(|p| p.report.milestones.contains(m))
        .collect()
}

/// The report's milestone sections: those the plans recorded in `run.json`, else one
/// per milestone of the pairs, in order of first appearance, titled with its name.
pub fn sections(bundle: &Bundle) -> Vec<Section> {
    if let Some(inv) = &bundle.invocation
        && !inv.sections.is_empty()
    {
        return inv.sections.clone();
    }
    let mut out: Vec<Section> = Vec::new();
    for m in bundle.pairs.iter().flat_map(|p| p.report.milestones.iter()) {
        if !out.iter().any(|s| &s.milestone == m) {
            out.push(Section::default_for(m));
        }
    }
    out
}

/// When the earliest pair started (Unix seconds), if any pair recorded it.
pub fn started_unix(bundle: &Bundle) -> Option<f64> {
    bundle
        .pairs
        .iter()
        .filter(|p| p.report.started_unix > 0.0)
        .map(|p| p.report.started_unix)
        .reduce(f64::min)
}

/// When the last pair finished (Unix seconds): the report's own date, taken from the
/// data so that re-rendering gives the same bytes.
pub fn finished_unix(bundle: &Bundle) -> Option<f64> {
    bundle
        .pairs
        .iter()
        .filter(|p| p.report.started_unix > 0.0)
        .map(|p| p.report.started_unix + p.report.duration_secs)
        .reduce(f64::max)
}

/// The harness version that ran the pairs (from `vm.json`), or this binary's.
pub fn harness_version(bundle: &Bundle) -> String {
    bundle
        .pairs
        .iter()
        .filter_map(|p| p.vm.as_ref())
        .map(|v| v.harness_version.clone())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

/// The accelerator the pairs ran on (from `vm.json`), if recorded.
pub fn accelerator(bundle: &Bundle) -> Option<&str> {
    bundle
        .pairs
        .iter()
        .find_map(|p| p.vm.as_ref())
        .map(|v| v.accel.as_str())
}

/// The guests' virtual CPUs, as the first pair's QEMU command line gives them.
pub fn vcpus(bundle: &Bundle) -> Option<&str> {
    bundle
        .pairs
        .iter()
        .find_map(|p| p.vm.as_ref())
        .and_then(|v| v.vcpus())
}

/// `2026-01-31T12:34:56Z` for a Unix time.
pub fn rfc3339(unix: f64) -> String {
    let s = super::utc_stamp(unix.max(0.0) as u64);
    // YYYYMMDDTHHMMSSZ → YYYY-MM-DDTHH:MM:SSZ
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_844_066.7), "2026-11-28T05:34:26Z");
    }

    #[test]
    fn first_seen_keeps_order() {
        assert_eq!(
            first_seen(["b", "a", "b", "c"].into_iter()),
            vec!["b", "a", "c"]
        );
    }
}
