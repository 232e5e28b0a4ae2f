//! What a pair's phases share: the pair's context (the same for all of them) and its
//! state (what they add to), with the small rules every phase applies. Below the pair,
//! its phases, their actions and their boots, so each imports it and none another's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::check::{BootRecord, ExpectationOutcome, ProbeRecord};
use crate::scenario::{Expectation, ExpectationKind, Expected, RunPair};
use crate::targets::BootSpec;
use crate::vm::AccelChoice;

use super::expect;
use super::record;

/// Everything one pair needs that is shared with other pairs.
pub struct PairContext {
    /// The pair.
    pub pair: RunPair,
    /// Its target, prepared.
    pub spec: Arc<BootSpec>,
    /// What its folder's files must not show (the plan's and the target's patterns;
    /// the pair adds its keys).
    pub redactor: crate::evidence::redact::Redactor,
    /// The accelerator for every VM of the run.
    pub accel: AccelChoice,
    /// Virtual CPUs for each VM, and why (see [`crate::vm::config::vcpus`]).
    pub vcpus: (u32, String),
    /// This pair's folder in the evidence bundle.
    pub run_dir: PathBuf,
    /// Keep overlays afterwards.
    pub keep: bool,
    /// How long to wait for SSH after each boot.
    pub ssh_timeout: Duration,
    /// Run the naive baseline poller beside the runner (`run::baseline`).
    pub baseline_poll: bool,
    /// Where the progress line goes.
    pub status: Arc<dyn Fn(&str) + Send + Sync>,
}

/// What a pair's phases add to as they run.
pub(super) struct PairState {
    pub(super) outcomes: Vec<ExpectationOutcome>,
    pub(super) probes: Vec<ProbeRecord>,
    pub(super) boots: Vec<BootRecord>,
    pub(super) timeline: record::Timeline,
}

pub(super) fn outcome(
    exp: &Expectation,
    a: &expect::Awaited,
    origin: Instant,
    run_dir: &Path,
    phase: &str,
    boot_index: u32,
) -> ExpectationOutcome {
    let mut o = ExpectationOutcome::of(exp, a.eval.clone());
    o.changed_at = a.changed.map(|c| c.saturating_duration_since(origin));
    o.decided_at = Some(a.decided.saturating_duration_since(origin));
    o.evidence = Some(run_dir.join(crate::evidence::bundle::evidence_file(
        exp.kind.spec().evidence(),
        phase,
        boot_index,
    )));
    o
}

/// How long a cycle must last to count: the scenario's first `wait_cycle: ... persist:`,
/// or the default.
pub(super) fn persist_of(scenario: &crate::scenario::Scenario) -> Duration {
    scenario
        .expectations()
        .find_map(|e| {
            if let ExpectationKind::WaitCycle(w) = &e.kind {
                Some(w.persist.0)
            } else {
                None
            }
        })
        .unwrap_or(crate::scenario::DEFAULT_PERSIST)
}

/// Whether a failing run must still go on: a reproduction needs every listed id evaluated.
pub(super) fn needs_more(expected: &Expected, outcomes: &[ExpectationOutcome]) -> bool {
    match expected {
        Expected::Pass => false,
        Expected::Reproduced(r) => r
            .failing
            .iter()
            .any(|id| !outcomes.iter().any(|o| &o.id == id)),
    }
}
