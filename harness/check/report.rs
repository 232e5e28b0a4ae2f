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

/// The last line of `recorder-boot-N.jsonl`: what the recorder saw of one boot, as a
/// whole. Guest times are seconds on the guest's monotonic clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecorderSummary {
    /// When the relay said hello (guest uptime).
    pub relay_uptime_s: Option<f64>,
    /// When PID 1 entered userspace (`UserspaceTimestampMonotonic`).
    pub userspace_s: Option<f64>,
    /// When the first reply to `ListJobs` arrived: the queue known whole from then.
    pub queue_known_guest_s: Option<f64>,
    /// Events kept.
    pub events: usize,
    /// Bytes taken in.
    pub bytes: u64,
    /// Messages skipped as malformed.
    pub malformed_skipped: u64,
    /// When and why the stream ended, if it did before the boot's end.
    pub ended: Option<RecorderEnded>,
}

/// When (guest seconds) and why a recorder's stream ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecorderEnded {
    /// Guest seconds.
    pub guest_s: f64,
    /// Why, in words.
    pub why: String,
}

impl RecorderSummary {
    /// Seconds from PID 1 entering userspace to the relay's hello: when observation began.
    pub fn observation_start_s(&self) -> Option<f64> {
        Some(self.relay_uptime_s? - self.userspace_s?)
    }

    /// The summary line of a `recorder-boot-N.jsonl` text (its last line), if it has one.
    pub fn of_file(text: &str) -> Option<RecorderSummary> {
        #[derive(Deserialize)]
        struct Line {
            summary: RecorderSummary,
        }
        serde_json::from_str::<Line>(text.lines().last()?)
            .ok()
            .map(|l| l.summary)
    }

    /// This summary as the file's last line.
    pub fn line(&self) -> String {
        serde_json::json!({ "summary": self }).to_string()
    }
}
