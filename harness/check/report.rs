//! The schema of `verdict.json`: what one (target, scenario) pair produced. The runner
//! writes it and the renderers read it back, so it lives below both (`run` and
//! `evidence` import it; it imports neither).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ExpectationOutcome, Verdict};
use crate::scenario::{Expected, Milestone, ReportHints};

/// What one pair produced: written as `verdict.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairReport {
    /// `target/scenario`, with `/rep-K` under `--repeat`.
    pub id: String,
    /// Which repetition this was under `--repeat N` (1-based); absent when run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition: Option<u32>,
    /// The plan's name for the target.
    pub target_name: String,
    /// The target string.
    pub target: String,
    /// The scenario's name.
    pub scenario: String,
    /// The scenario file.
    pub scenario_path: PathBuf,
    /// The scenario's milestones, so reports can group pairs without the scenario file.
    #[serde(default)]
    pub milestones: Vec<Milestone>,
    /// The unit the scenario follows most closely; reports time the run by it.
    #[serde(default)]
    pub focus_unit: Option<String>,
    /// How reports present the pair (the scenario's `report:`).
    #[serde(default)]
    pub report: ReportHints,
    /// When the pair started, in seconds since the Unix epoch (reports date themselves
    /// from this, so a re-render gives the same bytes).
    #[serde(default)]
    pub started_unix: f64,
    /// What the plan expected.
    pub expected: Expected,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the verdict is what the plan expected.
    pub matches_plan: bool,
    /// Every expectation evaluated, in order.
    pub outcomes: Vec<ExpectationOutcome>,
    /// Every probe the harness made.
    pub probes: Vec<ProbeRecord>,
    /// Per boot: seconds from QEMU start to SSH.
    pub boots: Vec<BootRecord>,
    /// Wall time of the whole pair, in seconds.
    pub duration_secs: f64,
    /// The run folder.
    pub run_dir: PathBuf,
}

/// One boot within a pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootRecord {
    /// 1 for the first boot.
    pub index: u32,
    /// The phase that started it.
    pub phase: String,
    /// Seconds from QEMU start to SSH.
    pub to_ssh_secs: f64,
    /// Seconds from the pair's start to QEMU start.
    pub at_secs: f64,
}

/// One probe made by the harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
    /// guest or host.
    pub from: String,
    /// For a probe of a declared health gate, the gated unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_of: Option<String>,
    /// The URL as written in the scenario.
    pub url: String,
    /// The HTTP status, if one came back.
    pub status: Option<u16>,
    /// The start of the body, or the error.
    pub excerpt: String,
    /// For a gate probe, when it was sent and answered on the guest's monotonic clock
    /// (µs): what the gate-honesty checks judge on, and the report draws beside the
    /// gate's journal lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_us: Option<(u64, u64)>,
}
