//! What a pair leaves in its run folder while it runs: the harness's timeline, the
//! QEMU command line, each boot's journal, and unit states at the end of each phase.
//!
//! Files are written whole (temp file, then rename) so an interrupted run never leaves
//! half a file; collection failures are logged, never fatal, since evidence of a broken
//! guest is partial by nature.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::check::timeline::RunEvent;
use crate::evidence::bundle;
use std::time::Instant;

use serde::Serialize;

use crate::guest::Guest;
use crate::guest::systemd;
use crate::run::units_read::UnitsRead;

use crate::targets::BootSpec;
use crate::vm::Vm;

pub use crate::evidence::bundle::{file_safe, write_atomic, write_json};
pub use crate::unix::now as unix_now;

/// Where a pair's progress line goes.
pub type Status = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The harness's own timeline of a pair: one JSON object a line, appended as it goes
/// (see [`crate::check::timeline`]); each event also goes to the pair's progress line.
pub struct Timeline {
    path: PathBuf,
    origin: Instant,
    status: Option<Status>,
}

impl Timeline {
    /// A timeline at `run_dir/timeline.jsonl`, timed from `origin`, showing each event on
    /// `status` too.
    pub fn new(run_dir: &Path, origin: Instant, status: Option<Status>) -> Timeline {
        let _ = std::fs::create_dir_all(run_dir);
        Timeline {
            path: run_dir.join(bundle::TIMELINE),
            origin,
            status,
        }
    }

    /// Append one event. Appending a line is atomic enough: a torn last line is visible.
    pub fn event(&mut self, event: RunEvent, detail: &str) {
        self.event_at(Instant::now(), event, detail);
    }

    /// Append one event that happened at `at` (lines are then not in time order).
    pub fn event_at(&mut self, at: Instant, event: RunEvent, detail: &str) {
        let line = crate::check::timeline::Line {
            t_secs: at.saturating_duration_since(self.origin).as_secs_f64(),
            event: event.name(),
            detail,
        };
        tracing::debug!("{}: {detail}", event.name());
        if let Some(status) = &self.status {
            let first = detail.lines().next().unwrap_or_default();
            status(&format!(
                "{}: {}",
                event.name(),
                crate::run::probe::excerpt(first)
            ));
        }
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
    vcpus_reason: &'a str,
    harness_version: &'a str,
    overlay: &'a Path,
}

/// `vm.json`: the QEMU command line (key redacted), accelerator, why the guest has the
/// virtual CPUs it has, and harness version.
pub fn vm_evidence(vm: &Vm, run_dir: &Path) -> anyhow::Result<()> {
    let accel = vm.accel().accel.to_string();
    write_json(
        &run_dir.join(bundle::VM),
        &VmRecord {
            qemu_argv: vm.qemu_argv(),
            accel: &accel,
            accel_reason: &vm.accel().reason,
            vcpus_reason: vm.smp_reason(),
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
    tokio::task::spawn_blocking(move || crate::targets::cache::sha256_file(&disk))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| format!("{e:#}")))
}

#[derive(Serialize)]
struct IdentityRecord<'a> {
    target: &'a crate::targets::TargetIdentity,
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

/// `systemd-analyze critical-chain` of the focus unit (empty without one), read in the
/// guest: only when the chain cannot be drawn from the read of every unit.
pub async fn focus_chain(guest: &Guest, focus: Option<&str>) -> anyhow::Result<String> {
    super::timed("evidence: the critical chain", async {
        match focus {
            Some(unit) => systemd::critical_chain(guest, unit).await,
            None => Ok(String::new()),
        }
    })
    .await
}

/// The SSH sessions a boot's last reads run on, so that they do not queue behind each
/// other (each session runs one command at a time).
pub struct Sessions<'a> {
    /// The journal's (and the critical chain's, when it must be read).
    pub journal: &'a Guest,
    /// The listeners'.
    pub listeners: &'a Guest,
}

/// A boot's last evidence: `journal-boot-N.json` (the journal, completed from the idle
/// read's `journal_head` when there is one), `listeners-boot-N.txt`, and, from `units`
/// (awaited beside them), `plot-boot-N.svg` and the focus unit's
/// `critical-chain-boot-N.txt` (read with `systemd-analyze` only when `units` cannot
/// give it).
pub async fn boot_evidence(
    sessions: Sessions<'_>,
    run_dir: &Path,
    boot_index: u32,
    focus: Option<&str>,
    units: impl std::future::Future<Output = Option<UnitsRead>>,
    listeners_read: Option<String>,
    journal_head: Option<String>,
) {
    let journal = super::timed(
        "evidence: the journal",
        capped_journal(sessions.journal, journal_head),
    );
    // The wait-cycle judgement may have read the listeners already, at the phase's end.
    let listeners = async {
        match listeners_read {
            Some(text) => Ok(text),
            None => {
                super::timed(
                    "evidence: the listeners",
                    crate::guest::listeners::read(sessions.listeners),
                )
                .await
            }
        }
    };
    let (journal, units, listeners) = tokio::join!(journal, units, listeners);
    match listeners {
        Ok(text) => {
            let path = run_dir.join(format!("listeners-boot-{boot_index}.txt"));
            if let Err(e) = write_atomic(&path, text.as_bytes()) {
                tracing::warn!("cannot write {}: {e:#}", path.display());
            }
        }
        Err(e) => tracing::warn!("cannot read which unit listens on which port: {e:#}"),
    }
    let drawn = focus.and_then(|f| units.as_ref()?.chain_of(f));
    let chain = match (focus, drawn) {
        (None, _) => Ok(String::new()),
        (Some(_), Some(text)) => Ok(text),
        (Some(_), None) => {
            tracing::debug!("the critical chain is read with systemd-analyze");
            focus_chain(sessions.journal, focus).await
        }
    };
    let plot = match units {
        Some(read) => plot_of(boot_index, &read),
        None => Err(anyhow::anyhow!(
            "no unit states to draw it from (their read failed; see above)"
        )),
    };
    for (file, text) in [
        (bundle::journal_file(boot_index), journal),
        (bundle::critical_chain_file(boot_index), chain),
        (bundle::plot_file(boot_index), plot),
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

/// The boot's plot, drawn on the host from every unit's timestamps. Not
/// `systemd-analyze plot`: that asks systemd-hostnamed for the host's name, which D-Bus
/// starts in the guest (a unit the system under test did not start), and walks every
/// unit a second time; on a TCG guest the two cost 4 to 15 s.
fn plot_of(boot_index: u32, read: &UnitsRead) -> anyhow::Result<String> {
    let states = systemd::parse_show(&read.text)?;
    Ok(crate::evidence::svg::boot_plot(
        &format!(
            "Boot {boot_index}: every unit that started, from {} at {} ({:.1} s)",
            read.by.words(),
            read.when,
            read.at_us as f64 / 1e6
        ),
        &states,
        read.at_us as f64 / 1e6,
    ))
}

/// The boot's journal so far as JSON lines, at most one byte past
/// [`super::cap::JOURNAL_CAP`] (not yet cut: [`capped_journal`] completes and cuts it).
pub async fn journal_head(guest: &Guest) -> anyhow::Result<String> {
    let cap = super::cap::JOURNAL_CAP;
    Ok(guest.exec(&super::cap::journal_command(cap)).await?.stdout)
}

/// The boot's journal as JSON lines, cut at [`super::cap::JOURNAL_CAP`] (marked): the
/// `head` read earlier (at the boot's idle moment) and the entries logged after its last
/// cursor, or the whole journal read now.
async fn capped_journal(guest: &Guest, head: Option<String>) -> anyhow::Result<String> {
    let cap = super::cap::JOURNAL_CAP;
    let mut text = match head {
        Some(mut text) => {
            if text.len() <= cap
                && let Some(cursor) = super::cap::last_cursor(&text)
            {
                let after = super::cap::journal_after_command(&cursor, cap - text.len());
                text.push_str(&guest.exec(&after).await?.stdout);
            }
            text
        }
        None => journal_head(guest).await?,
    };
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

/// `connections-boot-N.jsonl`: the guest's TCP connection attempts and resets as the
/// netwatch reported them (process, unit, destination, PID 1's monotonic time).
pub fn connections_evidence(
    run_dir: &Path,
    boot_index: u32,
    recorder: &crate::guest::recorder::Recorder,
) {
    let text = recorder.with(|log| {
        let mut text = String::new();
        for (_, c) in &log.connections {
            text.push_str(&serde_json::to_string(c).unwrap_or_default());
            text.push('\n');
        }
        let summary = serde_json::json!({"summary": {
            "netwatch_uptime_s": log.net_hello.map(|(_, us)| us as f64 / 1e6),
            "events": log.connections.len(),
            "malformed_skipped": log.net_malformed,
            "ended": log.net_ended.as_ref().map(|(_, why)| why.clone()),
        }});
        text.push_str(&summary.to_string());
        text.push('\n');
        text
    });
    let path = run_dir.join(bundle::connections_file(boot_index));
    if let Err(e) = write_atomic(&path, text.as_bytes()) {
        tracing::warn!("cannot write {}: {e:#}", path.display());
    }
}

/// `recorder-boot-N.jsonl`: every event the recorder brought from PID 1 (jobs queued,
/// their state, what they wait for, their end with its result, unit changes with PID 1's
/// own timestamps), each with the guest time it arrived; then one summary line (when the
/// relay spoke, bytes, malformed messages skipped, when and why the stream ended).
pub fn recorder_evidence(
    run_dir: &Path,
    boot_index: u32,
    recorder: &crate::guest::recorder::Recorder,
    clock: &crate::run::clock::GuestClock,
) {
    let guest_s = |at: std::time::Instant| (clock.to_guest_us(at) as f64 / 1e3).round() / 1e3;
    let text = recorder.with(|log| {
        let mut text = String::new();
        for (at, e) in &log.events {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("received_guest_s".into(), guest_s(*at).into());
            }
            text.push_str(&v.to_string());
            text.push('\n');
        }
        let summary = crate::check::report::RecorderSummary {
            relay_uptime_s: log.hello.map(|(_, us)| us as f64 / 1e6),
            userspace_s: log.queue.userspace_us.map(|us| us as f64 / 1e6),
            queue_known_guest_s: log.queue_known.map(guest_s),
            events: log.events.len(),
            bytes: log.bytes,
            malformed_skipped: log.malformed,
            ended: log
                .ended
                .as_ref()
                .map(|(at, why)| crate::check::report::RecorderEnded {
                    guest_s: guest_s(*at),
                    why: why.clone(),
                }),
        };
        text.push_str(&summary.line());
        text.push('\n');
        text
    });
    let path = run_dir.join(bundle::recorder_file(boot_index));
    if let Err(e) = write_atomic(&path, text.as_bytes()) {
        tracing::warn!("cannot write {}: {e:#}", path.display());
    }
}

pub fn signals_evidence(
    run_dir: &Path,
    boot_index: u32,
    journal: &crate::run::watch::Journal,
    clock: &crate::run::clock::GuestClock,
) {
    let mut text = String::new();
    journal.scan_changes(|all| {
        for c in all {
            let line = serde_json::json!({
                "received_guest_s": (clock.to_guest_us(c.received) as f64 / 1e3).round() / 1e3,
                "unit": c.change.unit,
                "interface": c.change.interface,
                "properties": c.change.properties,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    });
    let file = bundle::signals_file(boot_index);
    if text.is_empty() {
        tracing::debug!("no unit signal arrived: {file} not written");
    } else if let Err(e) = write_atomic(&run_dir.join(&file), text.as_bytes()) {
        tracing::warn!("cannot write {file}: {e:#}");
    }
}
