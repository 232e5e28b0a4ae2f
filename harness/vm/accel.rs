//! Choosing the accelerator: KVM when it really works, TCG otherwise.
//!
//! `/dev/kvm` existing proves nothing (on some hosts KVM guests hang at "Booting from
//! ROM" or QEMU fails with "failed to set MSR"), so `auto` boots the given kernel under
//! KVM with a short deadline and watches the console. The result is cached for a while,
//! keyed by the QEMU version, so not every run pays for the probe.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::console::{self, ConsoleState};
use super::process;

/// The QEMU system emulator that runs every VM.
pub const QEMU_SYSTEM: &str = "qemu-system-x86_64";

/// How long the KVM probe may take to show the kernel running.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(8);
/// How long a probe result stays valid in the cache.
pub const CACHE_MAX_AGE: Duration = Duration::from_secs(6 * 3600);
/// The cache file name inside the cache directory.
pub const CACHE_FILE: &str = "accel-probe.json";

/// An accelerator, as requested by the user or as chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Probe KVM and fall back to TCG.
    Auto,
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (multi-threaded).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(crate::error::usage(format!(
                "--accel: unknown accelerator '{other}' (expected auto, kvm or tcg)"
            ))),
        }
    }
}

/// The accelerator a VM runs with, and a specific reason why (shown in evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// `Kvm` or `Tcg` after a probe; `Auto` only if the caller built it that way.
    pub accel: Accel,
    /// Why, e.g. "kvm probe timed out after 8s at 'Booting from ROM'; using tcg".
    pub reason: String,
}

/// What happened when a kernel was booted under KVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The console showed the kernel running.
    KernelRan { after: Duration, line: String },
    /// QEMU exited before the kernel showed up.
    Exited { status: String, stderr: String },
    /// Nothing showed the kernel running before the deadline.
    TimedOut {
        after: Duration,
        last_console: String,
    },
    /// KVM could not even be tried (no `/dev/kvm`, no permission, QEMU missing).
    Unavailable(String),
}

/// The choice that follows from a probe outcome. Pure.
pub fn decide(outcome: &ProbeOutcome) -> AccelChoice {
    match outcome {
        ProbeOutcome::KernelRan { after, line } => AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "kvm probe reached the kernel in {:.1}s ('{}'); using kvm",
                after.as_secs_f64(),
                shorten(line)
            ),
        },
        ProbeOutcome::Exited { status, stderr } => {
            let detail = stderr
                .lines()
                .find(|l| l.contains("error"))
                .or_else(|| stderr.lines().find(|l| !l.trim().is_empty()))
                .map(|l| format!(" with '{}'", shorten(l.trim())))
                .unwrap_or_default();
            AccelChoice {
                accel: Accel::Tcg,
                reason: format!("kvm probe failed: QEMU exited ({status}){detail}; using tcg"),
            }
        }
        ProbeOutcome::TimedOut {
            after,
            last_console,
        } => {
            let at = if last_console.is_empty() {
                "with no console output".to_string()
            } else {
                format!("at '{}'", shorten(last_console))
            };
            AccelChoice {
                accel: Accel::Tcg,
                reason: format!(
                    "kvm probe timed out after {}s {at}; using tcg",
                    after.as_secs()
                ),
            }
        }
        ProbeOutcome::Unavailable(why) => AccelChoice {
            accel: Accel::Tcg,
            reason: format!("kvm unavailable: {why}; using tcg"),
        },
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(MAX).collect::<String>())
    }
}

/// A remembered probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// When the probe ran, in seconds since the Unix epoch.
    pub checked_at: u64,
    /// `qemu-system-x86_64 --version`'s first line when the probe ran.
    pub qemu_version: String,
    /// The choice and its reason.
    pub choice: AccelChoice,
}

/// The cached choice if `entry` is younger than `max_age` and from the same QEMU. Pure.
pub fn fresh_choice(
    entry: &CacheEntry,
    now: u64,
    qemu_version: &str,
    max_age: Duration,
) -> Option<AccelChoice> {
    let age = now.checked_sub(entry.checked_at)?;
    if age > max_age.as_secs() || entry.qemu_version != qemu_version {
        return None;
    }
    Some(AccelChoice {
        accel: entry.choice.accel,
        reason: format!(
            "{} (probed {} min ago, cached)",
            entry.choice.reason,
            age / 60
        ),
    })
}

/// Resolve `requested` to KVM or TCG. `Kvm` and `Tcg` are taken as given; `Auto` uses a
/// fresh cached probe from `cache_dir`, or boots `probe_kernel` under KVM and caches that.
pub async fn choose(
    requested: Accel,
    probe_kernel: &Path,
    cache_dir: &Path,
) -> Result<AccelChoice> {
    match requested {
        Accel::Kvm | Accel::Tcg => {
            return Ok(AccelChoice {
                accel: requested,
                reason: format!("{requested} requested"),
            });
        }
        Accel::Auto => {}
    }
    // Checked here, not in the probe: a missing input must not be cached as "no KVM".
    if !probe_kernel.is_file() {
        return Err(crate::error::usage(format!(
            "accelerator probe: kernel {} not found",
            probe_kernel.display()
        )));
    }
    let version = qemu_version().await?;
    let cache_path = cache_dir.join(CACHE_FILE);
    let now = unix_now();
    if let Some(entry) = std::fs::read(&cache_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        && let Some(choice) = fresh_choice(&entry, now, &version, CACHE_MAX_AGE)
    {
        return Ok(choice);
    }
    let choice = decide(&probe_kvm(probe_kernel, PROBE_DEADLINE).await);
    let entry = CacheEntry {
        checked_at: now,
        qemu_version: version,
        choice: choice.clone(),
    };
    // A cache that cannot be written only costs the next run a probe.
    if let Err(e) = write_cache(&cache_path, &entry) {
        tracing::warn!(
            "cannot cache the accelerator probe in {}: {e:#}",
            cache_path.display()
        );
    }
    Ok(choice)
}

fn write_cache(path: &Path, entry: &CacheEntry) -> Result<()> {
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&tmp, entry)?;
    tmp.persist(path)?;
    Ok(())
}

use crate::unix::now_secs as unix_now;

/// The first line of `qemu-system-x86_64 --version`.
pub async fn qemu_version() -> Result<String> {
    let out = tokio::process::Command::new(QEMU_SYSTEM)
        .arg("--version")
        .output()
        .await
        .map_err(|e| crate::error::infra(format!("cannot run {QEMU_SYSTEM} --version: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The QEMU argv of the KVM probe: the kernel alone, console on stdio, panic = exit.
pub fn probe_argv(kernel: &Path) -> Vec<String> {
    [
        QEMU_SYSTEM,
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-kernel",
        &kernel.display().to_string(),
        "-append",
        "console=ttyS0 panic=-1",
        "-chardev",
        "stdio,id=serial0,signal=off",
        "-serial",
        "chardev:serial0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Boot `kernel` under KVM and report whether it ran before `deadline`. The probe QEMU is
/// always killed (by its PID and process group) before this returns.
pub async fn probe_kvm(kernel: &Path, deadline: Duration) -> ProbeOutcome {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return ProbeOutcome::Unavailable(format!("cannot open /dev/kvm: {e}"));
    }
    if !kernel.is_file() {
        return ProbeOutcome::Unavailable(format!("probe kernel {} not found", kernel.display()));
    }
    let started = Instant::now();
    let mut child = match process::spawn(&probe_argv(kernel), &[], &std::env::temp_dir()) {
        Ok(child) => child,
        Err(e) => return ProbeOutcome::Unavailable(format!("{e:#}")),
    };
    let (tx, mut rx) = watch::channel(ConsoleState::default());
    let stdout = child.stdout.take();
    let console_task = stdout.map(|out| tokio::spawn(console::capture(out, None, tx)));
    let mut stderr_pipe = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        if let Some(err) = stderr_pipe.as_mut() {
            let _ = err.read_to_string(&mut text).await;
        }
        text
    });
    let ended_in_time =
        tokio::time::timeout(deadline, rx.wait_for(|s| s.kernel_running || s.closed))
            .await
            .is_ok();
    let state = rx.borrow().clone();
    let status = process::kill_and_reap(&mut child, Duration::from_secs(2));
    if let Some(task) = console_task {
        task.abort();
    }
    if state.kernel_running {
        ProbeOutcome::KernelRan {
            after: started.elapsed(),
            line: state.last_text,
        }
    } else if ended_in_time {
        let stderr = stderr_task.await.unwrap_or_default();
        ProbeOutcome::Exited {
            status: status.map_or("status unknown".into(), |s| s.to_string()),
            stderr,
        }
    } else {
        ProbeOutcome::TimedOut {
            after: deadline,
            last_console: state.last_text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_seen_means_kvm() {
        let c = decide(&ProbeOutcome::KernelRan {
            after: Duration::from_millis(1500),
            line: "[    0.000000] Linux version 6.1.0-56-cloud-amd64".into(),
        });
        assert_eq!(c.accel, Accel::Kvm);
        assert_eq!(
            c.reason,
            "kvm probe reached the kernel in 1.5s ('[    0.000000] Linux version 6.1.0-56-cloud-amd64'); using kvm"
        );
    }

    #[test]
    fn recorded_msr_failure_means_tcg_and_quotes_qemu() {
        let stderr = include_str!("../../tests/fixtures/vm/kvm-probe-cpu-host-stderr.txt");
        let c = decide(&ProbeOutcome::Exited {
            status: "signal: 6 (SIGABRT) (core dumped)".into(),
            stderr: stderr.into(),
        });
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(
            c.reason,
            "kvm probe failed: QEMU exited (signal: 6 (SIGABRT) (core dumped)) with \
             'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69'; using tcg"
        );
    }

    #[test]
    fn timeout_names_where_the_console_stopped() {
        let c = decide(&ProbeOutcome::TimedOut {
            after: Duration::from_secs(8),
            last_console: "Booting from ROM..".into(),
        });
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(
            c.reason,
            "kvm probe timed out after 8s at 'Booting from ROM..'; using tcg"
        );
        let silent = decide(&ProbeOutcome::TimedOut {
            after: Duration::from_secs(8),
            last_console: String::new(),
        });
        assert!(
            silent.reason.contains("with no console output"),
            "{}",
            silent.reason
        );
    }

    #[test]
    fn missing_device_means_tcg() {
        let c = decide(&ProbeOutcome::Unavailable(
            "cannot open /dev/kvm: No such file or directory (os error 2)".into(),
        ));
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason
                .starts_with("kvm unavailable: cannot open /dev/kvm")
        );
    }

    fn entry() -> CacheEntry {
        CacheEntry {
            checked_at: 1_000_000,
            qemu_version: "QEMU emulator version 7.2.22".into(),
            choice: AccelChoice {
                accel: Accel::Tcg,
                reason: "kvm probe timed out after 8s with no console output; using tcg".into(),
            },
        }
    }

    #[test]
    fn cache_is_used_while_fresh_and_for_the_same_qemu() {
        let e = entry();
        let v = "QEMU emulator version 7.2.22";
        let fresh = fresh_choice(&e, 1_000_000 + 600, v, CACHE_MAX_AGE).unwrap();
        assert_eq!(fresh.accel, Accel::Tcg);
        assert!(
            fresh.reason.ends_with("(probed 10 min ago, cached)"),
            "{}",
            fresh.reason
        );
        assert!(fresh_choice(&e, 1_000_000 + 6 * 3600 + 1, v, CACHE_MAX_AGE).is_none());
        assert!(
            fresh_choice(
                &e,
                1_000_000 + 60,
                "QEMU emulator version 8.2.0",
                CACHE_MAX_AGE
            )
            .is_none()
        );
        assert!(
            fresh_choice(&e, 999_000, v, CACHE_MAX_AGE).is_none(),
            "future timestamps are stale"
        );
    }

    #[test]
    fn cache_entry_round_trips_through_json() {
        let e = entry();
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"accel\":\"tcg\""), "{json}");
        assert_eq!(serde_json::from_str::<CacheEntry>(&json).unwrap(), e);
    }

    #[tokio::test]
    async fn a_missing_probe_kernel_is_a_usage_error_and_is_not_cached() {
        let cache = tempfile::tempdir().unwrap();
        let err = choose(Accel::Auto, Path::new("/nonexistent/vmlinuz"), cache.path())
            .await
            .unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
        assert!(!cache.path().join(CACHE_FILE).exists());
        let tcg = choose(Accel::Tcg, Path::new("/nonexistent/vmlinuz"), cache.path())
            .await
            .unwrap();
        assert_eq!(tcg.reason, "tcg requested");
    }

    #[test]
    fn accel_names_parse_and_bad_ones_are_usage_errors() {
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        let err = "hvf".parse::<Accel>().unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::USAGE);
    }
}
