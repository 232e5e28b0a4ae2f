//! Reading systemd state through a [`Guest`]: unit snapshots, the job queue, the version
//! and the boot time. Each function is one command; the parsers beside it are pure and
//! tested from text recorded on a Debian 12 guest (systemd 252).

pub mod analyze;
pub mod jobs;
pub mod units;

use anyhow::Context as _;

pub use analyze::{BootTime, TargetReached, parse_boot_time};
pub use jobs::{Job, JobRef, parse_jobs};
pub use units::{PROPERTIES, UnitState, parse_show};

use super::shell::quote;
use super::ssh::Guest;

/// Separates the version from the job list in [`list_jobs`]' single command.
const JOBS_MARKER: &str = "@@coldboot-list-jobs@@";

/// The `systemctl show` command for a snapshot of `units`.
pub fn show_command<S: AsRef<str>>(units: &[S]) -> String {
    let names: Vec<String> = units.iter().map(|u| quote(u.as_ref())).collect();
    format!(
        "systemctl show --no-pager -p {} -- {}",
        PROPERTIES.join(","),
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

/// The job queue with true ordering relations. One command reads the version and the
/// queue; when the queue holds a start/start relation, a second one reads the declared
/// `After=` of one unit to learn which way this systemd prints the labels (see [`jobs`]).
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
    let mut jobs = parse_jobs(text.trim_start_matches('\n'), false)?;
    let swapped = match jobs::orientation_probe(&jobs) {
        Some((unit, other)) => {
            let cmd = format!(
                "systemctl show --no-pager -p After --value -- {}",
                quote(unit)
            );
            let after = guest.exec_checked(&cmd).await?.stdout;
            !after.split_whitespace().any(|u| u == other)
        }
        None => jobs::labels_swapped_for_version(parse_version(version)?),
    };
    if swapped {
        jobs::swap_relations(&mut jobs);
    }
    Ok(jobs)
}

/// The guest's systemd version, e.g. 252.
pub async fn systemd_version(guest: &Guest) -> anyhow::Result<u32> {
    let out = guest.exec_checked("systemctl --version").await?;
    parse_version(&out.stdout)
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
