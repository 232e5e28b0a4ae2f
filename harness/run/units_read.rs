//! Every unit's state at a phase's end: read through the recorder's connection to PID 1
//! (property reads, no process in the guest), else `systemctl show` over SSH, and
//! written as the phase's `units-PHASE.txt`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::evidence::bundle::{self, write_atomic};
use crate::guest::Guest;
use crate::guest::recorder::Recorder;
use crate::guest::recorder::units::Scope;
use crate::guest::systemd;
use crate::scenario::Scenario;

/// Every unit's state, as read at the end of a phase (or of a boot), with the guest's
/// monotonic time when the read began: a unit still starting then was starting at least
/// until that moment.
#[derive(Clone)]
pub struct UnitsRead {
    /// `systemctl show` blocks, as written to `units-PHASE.txt`.
    pub text: String,
    /// Guest CLOCK_MONOTONIC (µs) when the read began.
    pub at_us: u64,
    /// What the read was: "the end of phase cold-boot".
    pub when: String,
    /// How it was read.
    pub by: ReadBy,
    /// The manager's start-up times, read in the same command (for the critical chain).
    pub boot: Option<systemd::chain::BootTimes>,
}

/// How every unit's state was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBy {
    /// Property reads through the recorder's connection to PID 1.
    Recorder,
    /// `systemctl show` over SSH.
    Systemctl,
}

impl ReadBy {
    /// In words, for titles.
    pub fn words(self) -> &'static str {
        match self {
            ReadBy::Recorder => "PID 1's properties (read through the recorder)",
            ReadBy::Systemctl => "systemctl show",
        }
    }
}

impl UnitsRead {
    /// `systemd-analyze critical-chain` of `focus`, drawn from this read; `None` when the
    /// read lacks what it needs (the manager's times, the unit's `After=`).
    pub fn chain_of(&self, focus: &str) -> Option<String> {
        let boot = self.boot?;
        let table = systemd::chain::UnitTable::parse(&self.text);
        // An alias (default.target) is shown under its unit's Id: the read's first block,
        // since the scenario's focus is named first.
        let id = if table.knows_after(focus) {
            focus.to_string()
        } else {
            let first = self.text.split("\n\n").next()?;
            systemd::parse_properties(first).get("Id")?.clone()
        };
        table
            .knows_after(&id)
            .then(|| systemd::chain::render(&id, &table, &boot))
    }
}

/// `units-PHASE.txt`: state, Result and monotonic timestamps of the units the scenario
/// names, then of every unit systemd has loaded, at the end of a phase. Returned for
/// the boot's plot.
pub async fn phase_evidence(
    guest: &Guest,
    recorder: Option<&Recorder>,
    clock: &crate::run::clock::GuestClock,
    run_dir: &Path,
    phase: &str,
    scenario: &Scenario,
) -> Option<UnitsRead> {
    let named = scenario.named_units();
    let when = format!("the end of phase {phase}");
    let read = every_unit(guest, recorder, clock, &named, &when).await?;
    write_units(run_dir, phase, &read);
    Some(read)
}

/// `units-PHASE.txt` from a read made before the phase's end (at the boot's idle
/// moment), which PID 1's reports show still holds at that end.
pub fn write_units(run_dir: &Path, phase: &str, read: &UnitsRead) {
    let path = run_dir.join(bundle::units_file(phase));
    if let Err(e) = write_atomic(&path, read.text.as_bytes()) {
        tracing::warn!("cannot write {}: {e:#}", path.display());
    }
}

/// `signals-boot-N.jsonl`: PID 1's unit signals (only ever about the scenario's units,
/// see [`named_units`]), as received (the guest time of arrival, by `clock`): the
/// evidence of the waits they decided.
/// Separates the manager's times from the units in [`every_unit`]'s output.
const UNITS_MARKER: &str = "@@coldboot-units@@";

/// How long a read of every unit through the recorder may take before it falls back to
/// `systemctl show` (a model boot's read takes about a second).
const BUS_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The `named` units' states, then every loaded unit's: through the `recorder`'s
/// connection to PID 1 when there is one ([`by_recorder`]), else (or when that fails) in
/// one `systemctl show` on `guest`.
pub async fn every_unit(
    guest: &Guest,
    recorder: Option<&Recorder>,
    clock: &crate::run::clock::GuestClock,
    named: &[String],
    when: &str,
) -> Option<UnitsRead> {
    if let Some(recorder) = recorder {
        match by_recorder(guest, recorder, clock, named, when).await {
            Ok(read) => return Some(read),
            Err(e) => tracing::info!(
                "cannot read the units through the recorder ({e}); read with systemctl"
            ),
        }
    }
    by_systemctl(guest, clock, named, when).await
}

/// [`every_unit`] through the recorder: plain property reads (see
/// [`crate::guest::recorder::units`]), about a quarter of `systemctl show`'s time.
pub async fn by_recorder(
    guest: &Guest,
    recorder: &Recorder,
    clock: &crate::run::clock::GuestClock,
    named: &[String],
    when: &str,
) -> Result<UnitsRead, String> {
    let at_us = clock.to_guest_us(Instant::now());
    let read = super::timed(
        "evidence: every unit's state, through the recorder",
        recorder.read_units(named, Scope::Every, BUS_READ_TIMEOUT),
    )
    .await?;
    if read.count == 0 {
        return Err("the read gave no unit".into());
    }
    tracing::debug!(
        "{} units read with {} property reads",
        read.count,
        read.calls
    );
    if let Some(mut f) = crate::guest::recorder::raw_file("units-by-recorder", "txt") {
        // Recording a fixture: the same read by systemctl, just after, to compare.
        let _ = write!(f, "{}{UNITS_MARKER}\n{}", read.manager, read.units);
        if let (Some(again), Some(mut g)) = (
            by_systemctl(guest, clock, named, when).await,
            crate::guest::recorder::raw_file("units-by-systemctl", "txt"),
        ) {
            let _ = g.write_all(again.text.as_bytes());
        }
    }
    Ok(UnitsRead {
        text: read.units,
        at_us,
        when: when.to_string(),
        by: ReadBy::Recorder,
        boot: systemd::chain::BootTimes::parse(&read.manager).ok(),
    })
}

/// `base` brought up to date by reading only the `changed` units through the recorder
/// (the units PID 1 reported changed since `base` began, see
/// [`super::idle::IdleRead::changed_since_read`]): the others are as `base` read them,
/// by PID 1's own word. A few property reads instead of every unit's.
pub async fn delta(
    recorder: &Recorder,
    clock: &crate::run::clock::GuestClock,
    base: UnitsRead,
    changed: &[String],
    when: &str,
) -> Result<UnitsRead, String> {
    let at_us = clock.to_guest_us(Instant::now());
    let fresh = match changed.is_empty() {
        true => String::new(),
        false => {
            super::timed(
                "evidence: the units changed since the idle read, through the recorder",
                recorder.read_units(changed, Scope::Named, BUS_READ_TIMEOUT),
            )
            .await?
            .units
        }
    };
    Ok(UnitsRead {
        text: systemd::units::replace_blocks(&base.text, &fresh, changed),
        at_us,
        when: when.to_string(),
        by: ReadBy::Recorder,
        boot: base.boot,
    })
}

/// [`every_unit`] in one `systemctl show` on `guest`.
async fn by_systemctl(
    guest: &Guest,
    clock: &crate::run::clock::GuestClock,
    named: &[String],
    when: &str,
) -> Option<UnitsRead> {
    let cmd = format!(
        "systemctl show --no-pager -p {}; echo {UNITS_MARKER}; {} $(systemctl list-units --all --plain --no-legend | awk '{{print $1}}')",
        systemd::chain::MANAGER_PROPERTIES,
        systemd::show_command_with(named, &["After"])
    );
    let at_us = clock.to_guest_us(Instant::now());
    let shown = super::timed("evidence: every unit's state", guest.exec(&cmd)).await;
    let out = match shown {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!("cannot read unit states at {when}: {e:#}");
            return None;
        }
    };
    let (manager, units) = out
        .stdout
        .split_once(&format!("{UNITS_MARKER}\n"))
        .unwrap_or(("", &out.stdout));
    // `systemctl show` exits non-zero when one name is unknown, yet prints the rest.
    if units.trim().is_empty() {
        tracing::warn!(
            "cannot read unit states at {when}: systemctl printed nothing (status {}): {}",
            out.status,
            out.stderr.trim()
        );
        return None;
    }
    Some(UnitsRead {
        text: units.to_string(),
        at_us,
        when: when.to_string(),
        by: ReadBy::Systemctl,
        boot: systemd::chain::BootTimes::parse(manager).ok(),
    })
}

/// How long a read through the recorder may take before the check asks over SSH.
const RECORDER_READ: Duration = Duration::from_secs(10);

/// The unit types `no_failed_units` looks at.
const NO_FAILED_TYPES: [&str; 6] = ["service", "socket", "mount", "target", "timer", "path"];

/// The states of `names`, in order: through the recorder's connection to PID 1 (about
/// 20 property reads per unit, no process in the guest), else `systemctl show` over SSH.
pub async fn named_states(
    guest: &Guest,
    recorder: Option<&Recorder>,
    names: &[String],
) -> anyhow::Result<Vec<systemd::UnitState>> {
    if let Some(r) = recorder {
        match r.read_units(names, Scope::Named, RECORDER_READ).await {
            Ok(read) => match systemd::parse_show(&read.units) {
                Ok(states) if states.len() == names.len() => return Ok(states),
                Ok(states) => tracing::debug!(
                    "the recorder read {} of {} units; asking systemctl",
                    states.len(),
                    names.len()
                ),
                Err(e) => {
                    tracing::debug!("the recorder's read does not parse ({e:#}); asking systemctl")
                }
            },
            Err(e) => {
                tracing::debug!("no unit states through the recorder ({e}); asking systemctl")
            }
        }
    }
    systemd::unit_snapshot(guest, names).await
}

/// Every loaded unit of [`NO_FAILED_TYPES`] with its `ActiveState`: PID 1's `ListUnits`
/// through the recorder (one call), else `systemctl list-units` over SSH.
pub async fn failed_candidates(
    guest: &Guest,
    recorder: Option<&Recorder>,
) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(r) = recorder {
        match r.read_units(&[], Scope::States, RECORDER_READ).await {
            Ok(read) if read.count > 0 => {
                let states = systemd::parse_show(&read.units)?;
                return Ok(states
                    .into_iter()
                    .filter(|u| {
                        u.id.rsplit_once('.')
                            .is_some_and(|(_, t)| NO_FAILED_TYPES.contains(&t))
                    })
                    .map(|u| (u.id, u.active_state))
                    .collect());
            }
            Ok(_) => tracing::debug!("the recorder listed no unit; asking systemctl"),
            Err(e) => tracing::debug!("no unit list through the recorder ({e}); asking systemctl"),
        }
    }
    systemd::list_units(guest, &NO_FAILED_TYPES.join(",")).await
}
