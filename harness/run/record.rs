//! What a pair leaves in its run folder while it runs: the harness's timeline, the
//! QEMU command line, each boot's journal, and unit states at the end of each phase.
//!
//! Files are written whole (temp file, then rename) so an interrupted run never leaves
//! half a file; collection failures are logged, never fatal, since evidence of a broken
//! guest is partial by nature.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::evidence::bundle;
use std::time::Instant;

use serde::Serialize;

use crate::guest::Guest;
use crate::guest::systemd;
use crate::scenario::{ExpectationKind, Scenario};

use crate::target::BootSpec;
use crate::vm::Vm;

pub use crate::evidence::bundle::{file_safe, write_atomic, write_json};
pub use crate::unix::now as unix_now;

/// The harness's own timeline of a pair: one JSON object a line, appended as it goes.
pub struct Timeline {
    path: PathBuf,
    origin: Instant,
}

#[derive(Serialize)]
struct TimelineEvent<'a> {
    t_secs: f64,
    event: &'a str,
    detail: &'a str,
}

impl Timeline {
    /// A timeline at `run_dir/timeline.jsonl`, timed from `origin`.
    pub fn new(run_dir: &Path, origin: Instant) -> Timeline {
        let _ = std::fs::create_dir_all(run_dir);
        Timeline {
            path: run_dir.join(bundle::TIMELINE),
            origin,
        }
    }

    /// Append one event. Appending a line is atomic enough: a torn last line is visible.
    pub fn event(&mut self, event: &str, detail: &str) {
        self.event_at(Instant::now(), event, detail);
    }

    /// Append one event that happened at `at` (lines are then not in time order).
    pub fn event_at(&mut self, at: Instant, event: &str, detail: &str) {
        let line = TimelineEvent {
            t_secs: at.saturating_duration_since(self.origin).as_secs_f64(),
            event,
            detail,
        };
        tracing::debug!("{event}: {detail}");
        let result = serde_json::to_string(&line)
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(f, "{s}")?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!("cannot append to {}: {e:#}", self.path.display());
        }
    }
}

#[derive(Serialize)]
struct VmRecord<'a> {
    qemu_argv: Vec<String>,
    accel: &'a str,
    accel_reason: &'a str,
    harness_version: &'a str,
    overlay: &'a Path,
}

/// `vm.json`: the QEMU command line (key redacted), accelerator and harness version.
pub fn vm_evidence(vm: &Vm, run_dir: &Path) -> anyhow::Result<()> {
    let accel = vm.accel().accel.to_string();
    write_json(
        &run_dir.join(bundle::VM),
        &VmRecord {
            qemu_argv: vm.qemu_argv(),
            accel: &accel,
            accel_reason: &vm.accel().reason,
            harness_version: env!("CARGO_PKG_VERSION"),
            overlay: vm.overlay_path(),
        },
    )
}

/// The base image's SHA-256, read off the disk now (not from the build's record).
/// A NixOS runner has no base image (it makes a fresh disk; store paths are immutable).
pub async fn base_checksum(disk: Option<PathBuf>) -> Result<String, String> {
    let Some(disk) = disk else {
        return Err("no base image: the NixOS runner makes a fresh disk for each run".into());
    };
    tokio::task::spawn_blocking(move || crate::target::cache::sha256_file(&disk))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
}

#[derive(Serialize)]
struct IdentityRecord<'a> {
    target: &'a crate::target::TargetIdentity,
    base_image: Option<&'a Path>,
    base_sha256_before: Option<&'a str>,
    base_sha256_after: Option<&'a str>,
    base_unchanged: Option<bool>,
    checksum_error: Option<&'a str>,
}

/// `identity.json`: what the target is, and the base image's checksum before the pair
/// and (once every VM is gone) after it, which shows the run did not write to it.
pub fn identity_evidence(
    run_dir: &Path,
    spec: &BootSpec,
    before: &Result<String, String>,
    after: Option<&Result<String, String>>,
) {
    let after_ok = after.and_then(|a| a.as_ref().ok());
    let error = before
        .as_ref()
        .err()
        .or_else(|| after.and_then(|a| a.as_ref().err()));
    let record = IdentityRecord {
        target: &spec.identity,
        base_image: spec.base_disk(),
        base_sha256_before: before.as_ref().ok().map(String::as_str),
        base_sha256_after: after_ok.map(String::as_str),
        base_unchanged: match (before, after_ok) {
            (Ok(b), Some(a)) => Some(b == a),
            _ => None,
        },
        checksum_error: error.map(String::as_str),
    };
    if let Err(e) = write_json(&run_dir.join(bundle::IDENTITY), &record) {
        tracing::warn!("cannot write identity.json: {e:#}");
    }
}

/// The focus unit's critical chain and `systemd-analyze plot`: what the boot's start-up
/// looked like. Both can be read as soon as the start-up has finished, while the
/// expectations are still awaited (see `run::pair`).
pub struct BootAnalysis {
    /// `systemd-analyze critical-chain` of the focus unit (empty without one).
    pub chain: anyhow::Result<String>,
    /// `systemd-analyze plot`.
    pub plot: anyhow::Result<String>,
}

/// Read the [`BootAnalysis`] of the guest's current boot.
pub async fn boot_analysis(guest: &Guest, focus: Option<&str>) -> BootAnalysis {
    let started = std::time::Instant::now();
    let chain = match focus {
        Some(unit) => systemd::critical_chain(guest, unit).await,
        None => Ok(String::new()),
    };
    let plot = systemd::plot(guest).await;
    tracing::debug!(
        "evidence: critical chain and plot took {:.2}s",
        started.elapsed().as_secs_f64()
    );
    BootAnalysis { chain, plot }
}

/// `journal-boot-N.json`: the whole journal of the boot, as `journalctl -o json` lines;
/// `critical-chain-boot-N.txt` for the focus unit, and `plot-boot-N.svg`, from
/// `analysis` when it was read already, else read now on `guest` while `journal_guest`
/// reads the journal.
pub async fn boot_evidence(
    journal_guest: &Guest,
    guest: &Guest,
    run_dir: &Path,
    boot_index: u32,
    focus: Option<&str>,
    analysis: Option<BootAnalysis>,
) {
    let analysis = async {
        match analysis {
            Some(a) => a,
            None => boot_analysis(guest, focus).await,
        }
    };
    let journal = async {
        let started = std::time::Instant::now();
        let journal = capped_journal(journal_guest).await;
        tracing::debug!(
            "evidence: journal took {:.2}s",
            started.elapsed().as_secs_f64()
        );
        journal
    };
    let (journal, analysis) = tokio::join!(journal, analysis);
    for (file, text) in [
        (bundle::journal_file(boot_index), journal),
        (bundle::critical_chain_file(boot_index), analysis.chain),
        (bundle::plot_file(boot_index), analysis.plot),
    ] {
        match text {
            Ok(text) if !text.is_empty() => {
                if let Err(e) = write_atomic(&run_dir.join(&file), text.as_bytes()) {
                    tracing::warn!("cannot write {file}: {e:#}");
                }
            }
            Ok(_) => tracing::debug!("nothing to write to {file}"),
            Err(e) => tracing::warn!("cannot collect {file}: {e:#}"),
        }
    }
}

/// The boot's journal as JSON lines, cut at [`super::cap::JOURNAL_CAP`] (marked).
async fn capped_journal(guest: &Guest) -> anyhow::Result<String> {
    let cap = super::cap::JOURNAL_CAP;
    let mut text = guest.exec(&super::cap::journal_command(cap)).await?.stdout;
    if super::cap::cut_json_lines(&mut text, cap) {
        tracing::warn!("the boot's journal passed the evidence cap of {cap} bytes; cut");
    }
    Ok(text)
}

/// `waitfor-boot-N.json` and `.dot`: what the wait-cycle watcher saw in the boot.
pub fn waitfor_evidence(run_dir: &Path, boot_index: u32, json: &serde_json::Value, dot: &str) {
    if let Err(e) = write_json(&run_dir.join(bundle::waitfor_json(boot_index)), json) {
        tracing::warn!("cannot write the wait-for graph: {e:#}");
    }
    if let Err(e) = write_atomic(
        &run_dir.join(bundle::waitfor_dot(boot_index)),
        dot.as_bytes(),
    ) {
        tracing::warn!("cannot write the wait-for graph: {e:#}");
    }
}

/// `units-PHASE.txt`: state, Result and monotonic timestamps of every service and the
/// units the scenario names, at the end of a phase.
pub async fn phase_evidence(guest: &Guest, run_dir: &Path, phase: &str, scenario: &Scenario) {
    let mut named: Vec<String> = scenario
        .focus_unit
        .iter()
        .map(|u| u.as_str().to_string())
        .collect();
    for e in scenario.expectations() {
        match &e.kind {
            ExpectationKind::Unit(u) => named.push(u.unit.as_str().to_string()),
            ExpectationKind::Order(o) => {
                named.push(o.after.as_str().to_string());
                named.extend(o.units.iter().map(|u| u.as_str().to_string()));
            }
            _ => {}
        }
    }
    let cmd = format!(
        "{} $(systemctl list-units --all --plain --no-legend --type=service | awk '{{print $1}}')",
        systemd::show_command(&named)
    );
    let path = run_dir.join(bundle::units_file(phase));
    let t = std::time::Instant::now();
    let shown = guest.exec(&cmd).await;
    tracing::debug!(
        "evidence: unit states took {:.2}s",
        t.elapsed().as_secs_f64()
    );
    match shown {
        Ok(out) => {
            if let Err(e) = write_atomic(&path, out.stdout.as_bytes()) {
                tracing::warn!("cannot write {}: {e:#}", path.display());
            }
        }
        Err(e) => tracing::warn!("cannot read unit states after phase {phase}: {e:#}"),
    }
}
