//! Reading a bundle back from disk: every run folder's `verdict.json` and the files the
//! reports quote. This is the only file I/O the renderers depend on, so `coldboot run`
//! and `coldboot report DIR` render from exactly the same data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::check::PairReport;
use crate::check::Verdict;
use crate::error::usage;
use crate::guest::systemd::journal::{last_monotonic_us, start_jobs_done};
use crate::guest::systemd::{UnitState, parse_show};
use crate::scenario::Expected;

use super::bundle;

/// Everything the reports need from one bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The pairs: plan order where `order.json` says it, then by folder name.
    pub pairs: Vec<PairEvidence>,
    /// `run.json`, if written: the command line and the machine the run came from.
    pub invocation: Option<Invocation>,
}

/// How a bundle was made (`run.json` at its top).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Invocation {
    /// The command line, as typed.
    pub command: String,
    /// CPU cores the harness could use.
    pub cores: usize,
    /// `uname -sr`-like kernel and release of the host.
    pub host: String,
    /// The harness version that wrote the bundle (empty in bundles from before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub harness_version: String,
    /// What the run was asked to run, so shards of one plan can be merged and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRecord>,
    /// The host's 1-minute load average when the run started: under TCG the guest's
    /// clock runs at the host's pace, so a loaded host makes every boot slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_avg: Option<f64>,
    /// The report's milestone sections, from the plans (empty: one per milestone).
    #[serde(default)]
    pub sections: Vec<crate::scenario::Section>,
}

/// The plan behind a bundle, as `run.json` records it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PlanRecord {
    /// The plan's name (`m1+m2` for several plans, `adhoc` for scenario files).
    pub name: String,
    /// Every pair id of the whole plan, in plan order, repetitions included, before
    /// `--shard` chose this run's part.
    pub pairs: Vec<String>,
    /// `I/N` when this bundle is one shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// `--repeat N` (1 when not given).
    #[serde(default = "one")]
    pub repeat: u32,
}

fn one() -> u32 {
    1
}

/// One run folder, read back.
#[derive(Debug, Clone)]
pub struct PairEvidence {
    /// The run folder's name inside the bundle (links are relative to the bundle).
    pub folder: String,
    /// The verdict, with every path made relative to the bundle.
    pub report: PairReport,
    /// Whether the run finished (its `verdict.json` exists).
    pub complete: bool,
    /// `vm.json`, if written.
    pub vm: Option<VmInfo>,
    /// `units-PHASE.txt` file name → the units it lists.
    pub units: BTreeMap<String, Vec<UnitState>>,
    /// Boot index → the last monotonic timestamp (µs) in `journal-boot-N.json`: how far
    /// the harness saw into that boot.
    pub journal_end_us: BTreeMap<u32, u64>,
    /// Boot index → unit → when its start job finished (µs on the guest's monotonic
    /// clock), from `journal-boot-N.json`.
    pub started_us: BTreeMap<u32, BTreeMap<String, u64>>,
    /// Boot index → the wait cycle the watcher confirmed in that boot
    /// (`waitfor-boot-N.json`), if it confirmed one.
    pub wait_cycles: BTreeMap<u32, WaitCycleRecord>,
    /// Boot index → the harness's probes of each gate beside the gated unit's journal
    /// lines (from `waitfor-boot-N.json` and `journal-boot-N.json`).
    pub gate_timelines: BTreeMap<u32, Vec<super::gate_timeline::GateTimeline>>,
    /// `identity.json`, if written: the target's identity and base image checksums.
    pub identity: Option<serde_json::Value>,
    /// Every file name in the run folder, to link only to what exists.
    pub files: BTreeSet<String>,
    /// `redactions.json`, if written: file name → secrets replaced in it.
    pub redactions: Option<BTreeMap<String, usize>>,
}

/// What the reports use from `waitfor-boot-N.json`'s confirmed cycle.
#[derive(Debug, Clone, Deserialize)]
pub struct WaitCycleRecord {
    /// The path in words.
    pub message: String,
    /// Whether the formation time came from the guest's own timestamps.
    #[serde(default)]
    pub formed_from_guest: bool,
    /// Units waiting on the cycle.
    #[serde(default)]
    pub blocked: Vec<String>,
}

/// What the reports use from `vm.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VmInfo {
    /// The accelerator (`kvm`, `tcg`).
    pub accel: String,
    /// Why that accelerator.
    #[serde(default)]
    pub accel_reason: String,
    /// The harness version that ran the pair.
    #[serde(default)]
    pub harness_version: String,
    /// The QEMU command line (for the guest's virtual CPUs).
    #[serde(default)]
    pub qemu_argv: Vec<String>,
}

impl VmInfo {
    /// The guest's virtual CPUs (`-smp`), when our own QEMU command line says.
    pub fn vcpus(&self) -> Option<&str> {
        let at = self.qemu_argv.iter().position(|a| a == "-smp")?;
        self.qemu_argv.get(at + 1).map(String::as_str)
    }
}

impl PairEvidence {
    /// A link target for `file` in this run folder, relative to the bundle.
    pub fn link(&self, file: &str) -> String {
        format!("{}/{}", self.folder, file)
    }

    /// Units of the phase `phase` (by `units-PHASE.txt`), if recorded.
    pub fn phase_units(&self, phase: &str) -> Option<(&str, &[UnitState])> {
        let name = units_file(phase);
        self.units
            .get_key_value(&name)
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

pub use bundle::units_file;

/// Read every run folder of `dir`. A folder counts as a run folder when it holds
/// `verdict.json`, `timeline.jsonl` or `vm.json`; one without `verdict.json` is an
/// incomplete run and gets an `error` verdict saying so.
pub fn load_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| usage(format!("cannot read the bundle {}: {e}", dir.display())))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| usage(format!("cannot list {}: {e}", dir.display())))?;
        let path = entry.path();
        let is_run = bundle::RUN_FOLDER_MARKERS
            .iter()
            .any(|f| path.join(f).is_file());
        if path.is_dir()
            && is_run
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            folders.push(name.to_string());
        }
    }
    let order = read_order(dir)?;
    sort_folders(&mut folders, &order);
    let pairs = folders
        .iter()
        .map(|f| load_pair(&dir.join(f), f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let invocation = match std::fs::read(dir.join(bundle::RUN)) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            usage(format!(
                "{}: not a run record: {e}",
                dir.join(bundle::RUN).display()
            ))
        })?),
        Err(_) => None,
    };
    Ok(Bundle { pairs, invocation })
}

/// Plan order first (folders listed in `order`), then the rest by name.
pub fn sort_folders(folders: &mut [String], order: &[String]) {
    folders.sort_by_key(|f| {
        (
            order.iter().position(|o| o == f).unwrap_or(usize::MAX),
            f.clone(),
        )
    });
}

fn read_order(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join(bundle::ORDER);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "{}: expected a JSON list of run folder names: {e}",
                path.display()
            ))
        }),
        Err(_) => Ok(Vec::new()),
    }
}

fn load_pair(dir: &Path, folder: &str) -> anyhow::Result<PairEvidence> {
    let files: BTreeSet<String> = std::fs::read_dir(dir)
        .map_err(|e| usage(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    let verdict_path = dir.join(bundle::VERDICT);
    let (report, complete) = if files.contains(bundle::VERDICT) {
        let text = read(&verdict_path)?;
        let mut report: PairReport = serde_json::from_str(&text).map_err(|e| {
            usage(format!(
                "{}: not a verdict file: {e}",
                verdict_path.display()
            ))
        })?;
        relativize(&mut report, folder);
        (report, true)
    } else {
        (incomplete_report(folder), false)
    };

    let vm = match files.contains(bundle::VM) {
        true => {
            let path = dir.join(bundle::VM);
            Some(
                serde_json::from_str(&read(&path)?)
                    .map_err(|e| usage(format!("{}: not a vm.json: {e}", path.display())))?,
            )
        }
        false => None,
    };
    let identity = match files.contains(bundle::IDENTITY) {
        true => {
            let path = dir.join(bundle::IDENTITY);
            Some(
                serde_json::from_str(&read(&path)?)
                    .map_err(|e| usage(format!("{}: not JSON: {e}", path.display())))?,
            )
        }
        false => None,
    };
    let mut units = BTreeMap::new();
    let mut journal_end_us = BTreeMap::new();
    let mut started_us = BTreeMap::new();
    let mut wait_cycles = BTreeMap::new();
    let mut journals = BTreeMap::new();
    let mut gate_probes: BTreeMap<u32, Vec<crate::check::ProbeRecord>> = BTreeMap::new();
    for name in &files {
        if bundle::is_units_file(name) {
            let path = dir.join(name);
            let parsed = parse_show(&read(&path)?)
                .map_err(|e| usage(format!("{}: {e:#}", path.display())))?;
            units.insert(name.clone(), parsed);
        } else if let Some(n) = name
            .strip_prefix("journal-boot-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            let journal = read(&dir.join(name))?;
            journal_end_us.insert(n, last_monotonic_us(&journal));
            started_us.insert(n, start_jobs_done(&journal));
            journals.insert(n, journal);
        } else if let Some(n) = name
            .strip_prefix("waitfor-boot-")
            .and_then(|r| r.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            #[derive(Deserialize)]
            struct File {
                confirmed: Option<WaitCycleRecord>,
                #[serde(default)]
                gate_probes: Vec<crate::check::ProbeRecord>,
            }
            let path = dir.join(name);
            let file: File = serde_json::from_str(&read(&path)?)
                .map_err(|e| usage(format!("{}: not a wait-for record: {e}", path.display())))?;
            if let Some(c) = file.confirmed {
                wait_cycles.insert(n, c);
            }
            gate_probes.insert(n, file.gate_probes);
        }
    }
    let gate_timelines = gate_probes
        .iter()
        .map(|(n, probes)| {
            let journal = journals.get(n).map_or("", String::as_str);
            (*n, super::gate_timeline::build(probes, journal))
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();
    Ok(PairEvidence {
        folder: folder.to_string(),
        report,
        complete,
        vm,
        units,
        journal_end_us,
        started_us,
        wait_cycles,
        gate_timelines,
        redactions: files
            .contains(super::redact::REDACTIONS)
            .then(|| super::redact::read_counts(dir)),
        identity,
        files,
    })
}

fn read(path: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Make the report's paths relative to the bundle: the runner wrote them relative to
/// its working directory (or absolute), which a re-render elsewhere must not depend on.
pub fn relativize(report: &mut PairReport, folder: &str) {
    let old = std::mem::replace(&mut report.run_dir, PathBuf::from(folder));
    let fix = |p: &mut PathBuf| *p = under_folder(p, &old, folder);
    for o in &mut report.outcomes {
        if let Some(e) = o.evidence.as_mut() {
            fix(e);
        }
    }
    if let Verdict::Fail {
        evidence: Some(e), ..
    } = &mut report.verdict
    {
        fix(e);
    }
}

fn under_folder(path: &Path, old_run_dir: &Path, folder: &str) -> PathBuf {
    if let Ok(rest) = path.strip_prefix(old_run_dir) {
        return Path::new(folder).join(rest);
    }
    match path.file_name() {
        Some(name) => Path::new(folder).join(name),
        None => path.to_path_buf(),
    }
}

/// Give a pair recorded before report.json schema 3 what later pairs record: each
/// outcome's kind (by its id in `scenario`, the scenario file as it was when the pair
/// ran), the focus unit and the report hints. An outcome gets its kind only when the
/// kind's sentence is the one recorded, word for word, so that the parameters are the
/// ones that ran. Returns how many outcomes got their kind.
pub fn upgrade_report(report: &mut PairReport, scenario: &crate::scenario::Scenario) -> usize {
    let mut upgraded = 0;
    for o in report.outcomes.iter_mut().filter(|o| o.kind.is_none()) {
        if let Some(e) = scenario.expectation(&o.id)
            && e.kind.describe() == o.expected
        {
            o.kind = Some(e.kind.clone());
            upgraded += 1;
        }
    }
    if report.focus_unit.is_none() {
        report.focus_unit = scenario.focus_unit.as_ref().map(|u| u.as_str().to_string());
    }
    if report.report == Default::default() {
        report.report = scenario.report.clone();
    }
    if report.milestones.is_empty() {
        report.milestones = scenario.milestones.clone();
    }
    upgraded
}

/// The report of a run folder without `verdict.json`: the run was interrupted.
fn incomplete_report(folder: &str) -> PairReport {
    let (target_name, scenario) = folder.split_once("__").unwrap_or(("", folder));
    let (scenario, repetition) = match scenario.rsplit_once("__rep-") {
        Some((s, k)) if k.parse::<u32>().is_ok() => (s, k.parse().ok()),
        _ => (scenario, None),
    };
    let id = match repetition {
        Some(k) => format!("{target_name}/{scenario}/rep-{k}"),
        None => format!("{target_name}/{scenario}"),
    };
    PairReport {
        id,
        repetition,
        target_name: target_name.to_string(),
        target: String::new(),
        scenario: scenario.to_string(),
        scenario_path: PathBuf::new(),
        milestones: Vec::new(),
        focus_unit: None,
        report: Default::default(),
        started_unix: 0.0,
        expected: Expected::Pass,
        verdict: Verdict::Error {
            class: crate::error::ErrorClass::Infrastructure,
            message: format!(
                "the run did not finish: {folder}/{} is missing",
                bundle::VERDICT
            ),
        },
        matches_plan: false,
        outcomes: Vec::new(),
        probes: Vec::new(),
        boots: Vec::new(),
        duration_secs: 0.0,
        run_dir: PathBuf::from(folder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_order_then_names() {
        let mut f: Vec<String> = ["b__x", "a__y", "before__z", "after__z"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_folders(&mut f, &["before__z".into(), "b__x".into()]);
        assert_eq!(f, ["before__z", "b__x", "a__y", "after__z"]);
    }

    #[test]
    fn paths_move_under_the_folder() {
        let old = Path::new("evidence/x/before__a");
        assert_eq!(
            under_folder(
                Path::new("evidence/x/before__a/units-p.txt"),
                old,
                "before__a"
            ),
            Path::new("before__a/units-p.txt")
        );
        assert_eq!(
            under_folder(Path::new("/elsewhere/units-p.txt"), old, "before__a"),
            Path::new("before__a/units-p.txt")
        );
    }
}
