//! Reading systemd state through a [`Guest`]: unit snapshots, the job queue, the version
//! and the boot time. Each function is one command; the parsers beside it are pure and
//! tested from text recorded on a Debian 12 guest (systemd 252).
//!
//! Files:
//! - `analyze`: boot time as `systemd-analyze` (verb `time`) prints it
//! - `chain`: `systemd-analyze critical-chain`, rendered on the host from one read of
//!   every unit
//! - `jobs`: the job queue as `systemctl list-jobs --after --before --no-legend` prints
//!   it
//! - `journal`: PID 1's and the services' journal, as `journalctl -o json` prints it
//! - `signals`: PID 1's unit signals on the system bus, as `busctl monitor
//!   --json=short` prints them
//! - `sources`: a target's units as read without booting it
//! - `unitfile`: unit files as systemd reads them (`systemd.syntax(7)`,
//!   `systemd.unit(5)`)
//! - `units`: unit state as `systemctl show -p ...` prints it

pub mod analyze;
pub mod chain;
pub mod jobs;
pub mod journal;
pub mod signals;
pub mod sources;
pub mod unitfile;
pub mod units;

use anyhow::Context as _;

pub use analyze::{BootTime, TargetReached, parse_boot_time};
pub use jobs::{Job, JobRef, parse_jobs};
pub use units::{PROPERTIES, UnitState, parse_list_units, parse_show};

use super::quote::quote;
use super::ssh::Guest;

/// Separates the version from the job list in [`list_jobs`]' single command.
const JOBS_MARKER: &str = "@@coldboot-list-jobs@@";

/// The `systemctl show` command for a snapshot of `units`.
pub fn show_command<S: AsRef<str>>(units: &[S]) -> String {
    show_command_with(units, &[])
}

/// [`show_command`] with `extra` properties beside [`PROPERTIES`].
pub fn show_command_with<S: AsRef<str>>(units: &[S], extra: &[&str]) -> String {
    let names: Vec<String> = units.iter().map(|u| quote(u.as_ref())).collect();
    let properties: Vec<&str> = PROPERTIES.iter().chain(extra).copied().collect();
    format!(
        "systemctl show --no-pager -p {} -- {}",
        properties.join(","),
        names.join(" ")
    )
}

/// The state of each of `units`, in the same order, from one `systemctl show` call.
/// Unknown units come back with `load_state == "not-found"`.
pub async fn unit_snapshot<S: AsRef<str>>(
    guest: &Guest,
    units: &[S],
) -> anyhow::Result<Vec<UnitState>> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let out = guest.exec_checked(&show_command(units)).await?;
    let states = parse_show(&out.stdout)?;
    if states.len() != units.len() {
        anyhow::bail!(
            "systemctl show returned {} units for {} names",
            states.len(),
            units.len()
        );
    }
    Ok(states)
}

/// One unit's state and, in the same `systemctl show` call, the named extra properties
/// (one round trip instead of two when a scenario names properties).
pub async fn unit_state_with(
    guest: &Guest,
    unit: &str,
    extra: &[&str],
) -> anyhow::Result<(UnitState, std::collections::BTreeMap<String, String>)> {
    let mut cmd = show_command(&[unit]);
    for name in extra {
        cmd = cmd.replacen(" -- ", &format!(" -p {} -- ", quote(name)), 1);
    }
    let out = guest.exec_checked(&cmd).await?;
    let state = parse_show(&out.stdout)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("systemctl show returned nothing for {unit}"))?;
    let mut props = parse_properties(&out.stdout);
    props.retain(|k, _| extra.contains(&k.as_str()));
    Ok((state, props))
}

/// `NAME=value` lines, as `systemctl show` prints them.
pub fn parse_properties(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The job queue with true ordering relations, from one command (the version is read
/// too, for queues whose relations cannot tell which way the labels point; see [`jobs`]).
pub async fn list_jobs(guest: &Guest) -> anyhow::Result<Vec<Job>> {
    let cmd = format!(
        "systemctl --version && echo {JOBS_MARKER} && \
         systemctl list-jobs --after --before --no-legend --full --no-pager"
    );
    let out = guest.exec_checked(&cmd).await?;
    let (version, text) = out
        .stdout
        .split_once(JOBS_MARKER)
        .context("systemctl list-jobs: marker missing from the output")?;
    let jobs = parse_jobs(text.trim_start_matches('\n'), false)?;
    Ok(jobs::orient(jobs, parse_version(version)?))
}

/// Whether a job (start, stop, restart...) is queued or running for `unit`.
pub async fn has_job(guest: &Guest, unit: &str) -> anyhow::Result<bool> {
    Ok(list_jobs(guest).await?.iter().any(|j| j.unit == unit))
}

/// `(unit, ActiveState)` of every loaded unit of the types named (`service,socket,...`).
pub async fn list_units(guest: &Guest, types: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = guest
        .exec_checked(&format!(
            "systemctl list-units --all --plain --no-legend --no-pager --type={}",
            quote(types)
        ))
        .await?;
    Ok(units::parse_list_units(&out.stdout))
}

/// The whole journal of the current boot, as `journalctl -o json` lines.
pub async fn boot_journal_json(guest: &Guest) -> anyhow::Result<String> {
    Ok(guest.exec("journalctl -b -o json --no-pager").await?.stdout)
}

/// `systemd-analyze critical-chain` for `unit` (its text, errors included).
pub async fn critical_chain(guest: &Guest, unit: &str) -> anyhow::Result<String> {
    let cmd = format!(
        "systemd-analyze critical-chain --no-pager -- {} 2>&1",
        quote(unit)
    );
    Ok(guest.exec(&cmd).await?.stdout)
}

/// Ask PID 1 to restart `unit`; returns systemctl's exit status (a failing start is the
/// system under test's business, not an error).
pub async fn restart(guest: &Guest, unit: &str, no_block: bool) -> anyhow::Result<i32> {
    let flag = if no_block { "--no-block " } else { "" };
    let cmd = format!("systemctl restart {flag}-- {}", quote(unit));
    Ok(guest.exec(&cmd).await?.status)
}

/// Ask PID 1 for a clean reboot. The connection drops as the guest goes down, so the
/// result of the call itself means nothing.
pub async fn reboot(guest: &Guest) {
    let _ = guest.exec("systemctl reboot").await;
}

/// The guest's systemd version, e.g. 252.
pub async fn systemd_version(guest: &Guest) -> anyhow::Result<u32> {
    let out = guest.exec_checked("systemctl --version").await?;
    parse_version(&out.stdout)
}

/// Wait up to `wait` for the boot to finish (`is-system-running --wait`), then read how
/// long it took. `Ok(None)` when it had not finished by then.
pub async fn boot_time_after(
    guest: &Guest,
    wait: std::time::Duration,
) -> anyhow::Result<(Option<BootTime>, String)> {
    let cmd = format!(
        "timeout {} systemctl is-system-running --wait >/dev/null 2>&1; systemd-analyze --no-pager",
        wait.as_secs().max(1)
    );
    let out = guest
        .exec_timeout(&cmd, wait + std::time::Duration::from_secs(30))
        .await?;
    let text = format!("{}\n{}", out.stdout, out.stderr);
    let line = out.stdout.lines().next().unwrap_or("").trim().to_string();
    Ok((parse_boot_time(&text).ok().flatten(), line))
}

/// How long the boot took, or `None` while it has not finished.
pub async fn boot_time(guest: &Guest) -> anyhow::Result<Option<BootTime>> {
    let out = guest.exec("systemd-analyze --no-pager").await?;
    parse_boot_time(&format!("{}\n{}", out.stdout, out.stderr))
}

/// The version from `systemctl --version`'s first line: `systemd 252 (252.39-1~deb12u1)`.
pub fn parse_version(text: &str) -> anyhow::Result<u32> {
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("systemd ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("systemctl --version: cannot read a version from {first:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_first_line() {
        let text = "systemd 252 (252.39-1~deb12u1)\n+PAM +AUDIT +SELINUX\n";
        assert_eq!(parse_version(text).unwrap(), 252);
        assert!(parse_version("bash: systemctl: not found").is_err());
    }

    #[test]
    fn show_command_quotes_unit_names() {
        let cmd = show_command(&["ssh.service", "dev-x\\x2d1.swap"]);
        assert!(
            cmd.starts_with("systemctl show --no-pager -p Id,LoadState,"),
            "{cmd}"
        );
        assert!(cmd.ends_with(" -- ssh.service 'dev-x\\x2d1.swap'"), "{cmd}");
    }
}
