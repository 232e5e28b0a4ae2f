//! Bringing a target up: one cold boot from a `BootSpec` to a connected guest.
//!
//! Both `coldboot boot` and the scenario runner go through here, so the kernel command
//! line, the SSH key and the race against a kernel panic are decided in one place.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::infra;
use crate::guest::key::HOST_KEY_FW_CFG;
use crate::guest::{Guest, SshKey};
use crate::scenario::BootOptions;
use crate::targets::{BootSpec, Launch, TargetIdentity};
use crate::vm::{AccelChoice, FwCfgFile, Vm, VmConfig};

/// The full kernel command line: the target's base, the SSH key, then the boot options
/// (masks, `systemd.setenv=`, extra arguments).
pub fn cmdline(spec: &BootSpec, key: &SshKey, opts: &BootOptions) -> Vec<String> {
    let mut line = spec.cmdline.clone();
    line.push(key.kernel_arg());
    line.extend(opts.kernel_cmdline());
    line
}

/// A VM configuration for `spec`, with the key redacted from anything logged and the
/// run's private host key offered through fw_cfg (see [`crate::guest::key`]).
pub fn vm_config(
    spec: &BootSpec,
    key: &SshKey,
    opts: &BootOptions,
    accel: AccelChoice,
    run_dir: PathBuf,
    guest_forwards: Vec<u16>,
    keep: bool,
) -> anyhow::Result<VmConfig> {
    let mut config = match &spec.launch {
        Launch::Qemu {
            disk,
            kernel,
            initrd,
        } => {
            let mut config = VmConfig::new(disk, run_dir, accel);
            config.kernel = kernel.clone();
            config.initrd = initrd.clone();
            config
        }
        Launch::NixRunner { runner, .. } => VmConfig::nix_runner(runner, run_dir, accel),
    };
    config.cmdline = cmdline(spec, key, opts);
    config.guest_forwards = guest_forwards;
    config.keep = keep;
    config.redact = vec![key.kernel_arg()];
    config.fw_cfg.push(host_key_fw_cfg(key)?);
    config.recorder = has_recorder(spec);
    Ok(config)
}

/// The fw_cfg entry that hands the run's private host key to the guest's adapter.
pub fn host_key_fw_cfg(key: &SshKey) -> anyhow::Result<FwCfgFile> {
    let pem = key.host_private_openssh()?;
    FwCfgFile::private(HOST_KEY_FW_CFG, pem.as_bytes())
        .map_err(|e| infra(format!("cannot write the per-run host key file: {e}")))
}

/// Whether a target's guest must present the run's host key: recipe images and NixOS
/// systems always carry the coldboot adapter that installs it; a prebuilt `image:` may
/// not, and then the key is only recorded as not pinned (see [`crate::guest::HostKey`]).
pub fn requires_host_key(spec: &BootSpec) -> bool {
    !matches!(spec.identity, TargetIdentity::Image { .. })
}

/// One line on what the recorder saw of a boot: when its relay spoke (after QEMU started,
/// and after userspace began on the guest's clock), how much came, and whether it ended.
pub fn recorder_summary(
    recorder: &crate::guest::recorder::Recorder,
    qemu_started: Instant,
) -> String {
    recorder.with(|log| {
        let Some((at, uptime_us)) = log.hello else {
            return match &log.ended {
                Some((_, why)) => format!("recorder: never spoke ({why})"),
                None => "recorder: never spoke".to_string(),
            };
        };
        let userspace = log
            .queue
            .userspace_us
            .map(|u| {
                format!(
                    ", {:.1} s after userspace began",
                    (uptime_us as f64 - u as f64) / 1e6
                )
            })
            .unwrap_or_default();
        let ended = match &log.ended {
            Some((t, why)) => format!(
                "; ended at {:.1} s: {why}",
                t.saturating_duration_since(qemu_started).as_secs_f64()
            ),
            None => String::new(),
        };
        let resets = log
            .connections
            .iter()
            .filter(|(_, c)| c.kind == crate::guest::recorder::net::Attempt::Reset)
            .count();
        let net = match (&log.net_hello, &log.net_ended) {
            (None, _) if log.net_untraced.is_some() => {
                "; netwatch up, but not tracing connection attempts (see the serial log)".to_string()
            }
            (Some((_, up)), _) => format!(
                "; netwatch up at {:.2} s: {} connection events ({resets} refused or reset), {} malformed",
                *up as f64 / 1e6,
                log.connections.len(),
                log.net_malformed
            ),
            (None, Some((_, why))) => format!("; netwatch never spoke ({why})"),
            (None, None) => "; netwatch not heard from yet".to_string(),
        };
        let gate_probes = if log.probed_gates.is_empty() {
            String::new()
        } else {
            let healthy = log.gate_answers.iter().filter(|(_, a)| a.healthy()).count();
            format!(
                "; {} gate probe(s) by the recorder ({healthy} healthy)",
                log.gate_answers.len()
            )
        };
        format!(
            "recorder: relay up at guest uptime {:.2} s ({:.1} s after QEMU started{userspace}); {} events, {} KiB, {} malformed{ended}{net}{gate_probes}",
            uptime_us as f64 / 1e6,
            at.saturating_duration_since(qemu_started).as_secs_f64(),
            log.events.len(),
            log.bytes / 1024,
            log.malformed,
        )
    })
}

/// Whether a target's guest runs coldboot's recorder: recipe images and NixOS systems
/// carry the adapter that installs it; a prebuilt `image:` is watched over SSH alone.
pub fn has_recorder(spec: &BootSpec) -> bool {
    !matches!(spec.identity, TargetIdentity::Image { .. })
}

/// Wait for SSH on the VM's current boot, failing at once on a kernel panic, emergency
/// mode or QEMU exiting. Returns the guest and the time from QEMU start to SSH.
pub async fn connect(
    vm: &Vm,
    key: &SshKey,
    ssh_timeout: Duration,
) -> anyhow::Result<(Guest, Duration)> {
    let started = Instant::now() - vm.uptime();
    let addr = vm.ssh_addr();
    tokio::select! {
        guest = Guest::connect(addr, key, ssh_timeout) => {
            let guest = guest.with_context(|| format!(
                "no SSH from the guest (serial log: {})", vm.serial_log_path().display()))?;
            Ok((guest, started.elapsed()))
        }
        failure = vm.boot_failure() => Err(failure.context(format!(
            "the boot failed before SSH came up (serial log: {})",
            vm.serial_log_path().display()
        ))),
    }
}

/// Start a VM from `config` and connect to it.
pub async fn cold_boot(
    config: VmConfig,
    key: &SshKey,
    ssh_timeout: Duration,
) -> anyhow::Result<(Vm, Guest, Duration)> {
    let vm = Vm::start(config).await?;
    let (guest, took) = connect(&vm, key, ssh_timeout).await?;
    Ok((vm, guest, took))
}

/// The guest's `Startup finished in ...` line, if the boot has finished.
pub async fn guest_startup_line(guest: &Guest) -> Option<String> {
    let (boot, line) = crate::guest::systemd::boot_time_after(guest, Duration::ZERO)
        .await
        .ok()?;
    boot.map(|_| line)
}

/// The kernel the accelerator probe boots, or an infra error: recipe images always have
/// one, and a NixOS system has `toplevel/kernel`.
pub fn require_kernel(spec: &BootSpec) -> anyhow::Result<&std::path::Path> {
    spec.probe_kernel().ok_or_else(|| {
        infra(format!(
            "target {:?} has no kernel to probe the accelerator with",
            spec.launch
        ))
    })
}
