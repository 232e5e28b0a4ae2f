//! `report.json`: the machine-readable report. Its shape is described by
//! `schemas/report.schema.json`; bump [`super::SCHEMA_VERSION`] on any incompatible change.

use serde::Serialize;

use super::facts::{self, Counts};
use super::load::{Bundle, PairEvidence};
use crate::check::PairReport;

#[derive(Serialize)]
struct ReportJson<'a> {
    schema_version: u32,
    harness_version: String,
    /// When the last pair finished; from the data, so a re-render is identical.
    generated_at: Option<String>,
    started_at: Option<String>,
    accelerator: Option<&'a str>,
    counts: Counts,
    pairs: Vec<PairJson<'a>>,
    /// Pairs run more than once (`--repeat`): verdicts per repetition, flakiness, and each
    /// unit's time to active (p50, p95).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    repetitions: Vec<super::timing::Repeated>,
    /// Pair ids the plan lists that no run folder has (not checked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_run: Vec<String>,
}

#[derive(Serialize)]
struct PairJson<'a> {
    #[serde(flatten)]
    report: &'a PairReport,
    /// The verdict's word, repeated flat for consumers that do not want the tagged form.
    verdict_word: &'static str,
    complete: bool,
    /// Seconds from QEMU start to the focus unit's awaited state (or the decision).
    time_to_awaited_secs: Option<f64>,
    /// Files in the run folder, relative to the bundle.
    files: Vec<String>,
    /// File name → secrets replaced in it (`redactions.json`; absent in bundles from
    /// before redaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    redactions: Option<&'a std::collections::BTreeMap<String, usize>>,
}

/// Render `report.json` (pretty, with a final newline).
pub fn render(bundle: &Bundle) -> anyhow::Result<String> {
    let report = ReportJson {
        schema_version: super::SCHEMA_VERSION,
        harness_version: facts::harness_version(bundle),
        generated_at: facts::finished_unix(bundle).map(facts::rfc3339),
        started_at: facts::started_unix(bundle).map(facts::rfc3339),
        accelerator: facts::accelerator(bundle),
        counts: facts::counts(bundle),
        pairs: bundle.pairs.iter().map(pair).collect(),
        repetitions: super::timing::repeated(bundle)
            .into_iter()
            .filter(|g| g.runs.len() > 1)
            .collect(),
        not_run: super::timing::not_run(bundle),
    };
    let mut text = serde_json::to_string_pretty(&report)?;
    text.push('\n');
    Ok(text)
}

fn pair(p: &PairEvidence) -> PairJson<'_> {
    PairJson {
        report: &p.report,
        verdict_word: p.report.verdict.word(),
        complete: p.complete,
        time_to_awaited_secs: facts::awaited(p).and_then(|a| a.secs).map(round_ms),
        files: p.files.iter().map(|f| p.link(f)).collect(),
        redactions: p.redactions.as_ref(),
    }
}

/// Seconds to the millisecond, so the JSON does not carry float noise.
fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
