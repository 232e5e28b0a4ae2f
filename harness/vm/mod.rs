//! One QEMU VM: a throwaway overlay on a base image, a headless QEMU with its serial
//! console captured and QMP connected, user-mode networking with host ports that the
//! kernel chooses, and teardown that cannot be forgotten.
//!
//! `argv` (command line), `accel` (probe decision), `console` (failure matcher) and the
//! `info usernet` parser in `qmp` are pure and unit-tested; `boot` and `process` run
//! QEMU; `registry` lets a Ctrl-C handler or panic hook clean up every live VM.
//!
//! Files:
//! - `accel`: choosing the accelerator
//! - `argv`: the QEMU command line for a [`VmConfig`]
//! - `boot`: one boot of a VM
//! - `config`: what one VM is made of
//! - `console`: the serial console
//! - `owner`: who owns a run folder, so what a killed harness left behind can be
//!   removed
//! - `process`: starting and ending QEMU processes
//! - `qmp`: the QMP connection to one QEMU, and the parser for `info usernet`
//! - `registry`: the process-wide list of live VMs, for the Ctrl-C handler and the
//!   panic hook

pub mod accel;
pub mod argv;
mod boot;
pub mod config;
pub mod console;
pub mod owner;
pub mod process;
pub mod qmp;
pub mod registry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;

pub use accel::{Accel, AccelChoice};
pub use boot::QemuExit;
pub use config::{FwCfgFile, VmConfig};
pub use console::{ConsoleFailure, ConsoleFailureKind};
pub use qmp::HostForward;

use crate::error::{infra, usage};
use boot::Boot;
use registry::Registration;

/// The guest port of SSH, always forwarded.
pub const SSH_GUEST_PORT: u16 = 22;

/// A running VM. Dropping it kills QEMU's process group and removes the overlay unless
/// the config says `keep`.
///
/// With [`VmConfig::nix_runner`] the process started is NixOS's runner script, which
/// `exec`s QEMU: the same PID, process group, registry, QMP, serial capture and
/// teardown apply, and the "overlay" is the disk the runner creates (`nixos.qcow2`).
pub struct Vm {
    config: VmConfig,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    overlay: PathBuf,
    boot: Boot,
    registration: Registration,
}

impl Vm {
    /// Make `run_dir/overlay.qcow2` on the base disk (or, for a NixOS runner, remove any
    /// old `run_dir/nixos.qcow2` so the runner creates a fresh one), start QEMU and read
    /// its host ports.
    ///
    /// Call from async code on a runtime thread, not from `spawn_blocking` (QEMU gets a
    /// parent-death signal tied to the spawning thread).
    pub async fn start(config: VmConfig) -> Result<Vm> {
        let config = resolve_paths(config)?;
        std::fs::create_dir_all(&config.run_dir).map_err(|e| {
            infra(format!(
                "cannot create run directory {}: {e}",
                config.run_dir.display()
            ))
        })?;
        let overlay = match &config.nix_runner {
            Some(_) => config.run_dir.join(argv::NIX_DISK_FILE),
            None => config.run_dir.join(argv::OVERLAY_FILE),
        };
        owner::claim(&config.run_dir, config.keep);
        let registration = Registration::new(overlay.clone(), config.keep);
        if config.nix_runner.is_some() {
            // Every boot from scratch: the runner creates the disk when it is missing.
            let _ = std::fs::remove_file(&overlay);
        } else {
            create_overlay(&config.disk, &overlay).await?;
        }
        let (argv, env) = launch(&config);
        tracing::info!(
            "starting QEMU ({}): {}",
            config.accel.reason,
            argv::redact(&argv::launch_line(&config), &config.redact).join(" ")
        );
        let ports = config.forwarded_guest_ports();
        let started = Boot::start(&argv, &env, &config.run_dir, 1, &ports, |pid| {
            registration.set_pid(Some(pid))
        })
        .await;
        match started {
            Ok(boot) => Ok(Vm {
                config,
                argv,
                env,
                overlay,
                boot,
                registration,
            }),
            Err(e) => {
                if !config.keep {
                    let _ = std::fs::remove_file(&overlay);
                }
                Err(e)
            }
        }
    }

    /// Where the host reaches the guest's SSH server.
    pub fn ssh_addr(&self) -> SocketAddr {
        self.forward_addr(SSH_GUEST_PORT)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Where the host reaches guest TCP port `guest_port`, if it is forwarded.
    pub fn forward_addr(&self, guest_port: u16) -> Option<SocketAddr> {
        self.boot
            .forwards
            .iter()
            .find(|f| f.guest_port == guest_port)
            .map(|f| f.host)
    }

    /// Every host forward of the current boot, as QEMU reported it.
    pub fn host_forwards(&self) -> &[HostForward] {
        &self.boot.forwards
    }

    /// Resolves when the console of the current boot shows a kernel panic, emergency
    /// mode or the initramfs shell, with the quoted lines. Stays pending otherwise (also
    /// after QEMU exits).
    pub async fn console_failure(&self) -> ConsoleFailure {
        let mut rx = self.boot.console.clone();
        let seen = rx
            .wait_for(|s| s.failure.is_some())
            .await
            .ok()
            .and_then(|s| s.failure.clone());
        match seen {
            Some(failure) => failure,
            None => std::future::pending().await,
        }
    }

    /// The console failure seen so far, without waiting.
    pub fn console_failure_now(&self) -> Option<ConsoleFailure> {
        self.boot.console.borrow().failure.clone()
    }

    /// Resolves when QEMU of the current boot exits on its own (never after a kill by
    /// the harness). An exit while the guest should be running is an infra error:
    /// see [`QemuExit::to_error`].
    pub async fn exited(&self) -> QemuExit {
        let mut rx = self.boot.exit.clone();
        let seen = rx
            .wait_for(|e| e.is_some())
            .await
            .ok()
            .and_then(|e| e.clone());
        match seen {
            Some(exit) => exit,
            None => std::future::pending().await,
        }
    }

    /// How QEMU exited, if it already has.
    pub fn exited_now(&self) -> Option<QemuExit> {
        self.boot.exit.borrow().clone()
    }

    /// Resolves with an infra error as soon as the boot cannot succeed: a console
    /// failure (panic, emergency mode, initramfs shell) or QEMU exiting. Race it against the real work.
    pub async fn boot_failure(&self) -> anyhow::Error {
        tokio::select! {
            failure = self.console_failure() => infra(failure.to_string()),
            exit = self.exited() => exit.to_error(),
        }
    }

    /// The last few lines of the current boot's serial console, oldest first.
    pub fn serial_tail(&self) -> Vec<String> {
        self.boot.console.borrow().tail.clone()
    }

    /// Whether the QEMU process of the current boot is still running.
    pub fn is_running(&self) -> bool {
        self.boot.is_running()
    }

    /// Plug (`true`) or pull (`false`) the guest NIC's virtual cable.
    pub async fn set_link(&self, up: bool) -> Result<()> {
        match &self.boot.qmp {
            Some(qmp) => qmp.set_link(argv::link_name(&self.config), up).await,
            None => Err(infra("set_link: the VM is not running")),
        }
    }

    /// QEMU's run state (`running`, `io-error`...), or `None` when QMP cannot say.
    /// `io-error` means QEMU paused the guest on a failed disk write (a full disk).
    pub async fn run_state(&self) -> Option<String> {
        self.boot.qmp.as_ref()?.run_state().await.ok()
    }

    /// Use `cmdline` as the kernel command line from the next boot on (a scenario's
    /// boot options apply per boot).
    pub fn set_cmdline(&mut self, cmdline: Vec<String>) {
        self.config.cmdline = cmdline;
        (self.argv, self.env) = launch(&self.config);
    }

    /// Hard power-off and cold boot again on the same overlay: a new QEMU, a new
    /// `serial-N.log` and new host ports. On error the VM stays off.
    pub async fn power_cycle(&mut self) -> Result<()> {
        // Unregister the PID first: once reaped, it may belong to another process.
        self.registration.set_pid(None);
        self.boot.kill();
        let index = self.boot.index + 1;
        let ports = self.config.forwarded_guest_ports();
        let registration = &self.registration;
        let started = Boot::start(
            &self.argv,
            &self.env,
            &self.config.run_dir,
            index,
            &ports,
            |pid| registration.set_pid(Some(pid)),
        )
        .await;
        match started {
            Ok(boot) => {
                self.boot = boot;
                Ok(())
            }
            Err(e) => {
                self.registration.set_pid(None);
                Err(e)
            }
        }
    }

    /// End the VM now (the same as dropping it: a throwaway VM is simply killed).
    pub fn shutdown(self) {
        drop(self);
    }

    /// The QEMU command line of this VM, with the configured secrets redacted. For a
    /// NixOS runner: its environment as `KEY=VALUE` words, then the runner.
    pub fn qemu_argv(&self) -> Vec<String> {
        argv::redact(&argv::launch_line(&self.config), &self.config.redact)
    }

    /// Why the guest has the virtual CPUs it has.
    pub fn smp_reason(&self) -> &str {
        &self.config.smp_reason
    }

    /// The accelerator and why it was chosen.
    pub fn accel(&self) -> &AccelChoice {
        &self.config.accel
    }

    /// When QEMU of the current boot was started (wall clock).
    pub fn started_at(&self) -> SystemTime {
        self.boot.started_at
    }

    /// Time since QEMU of the current boot was started (monotonic).
    pub fn uptime(&self) -> Duration {
        self.boot.started.elapsed()
    }

    /// Which boot this is: 1 for the first, +1 after each power cycle.
    pub fn boot_index(&self) -> u32 {
        self.boot.index
    }

    /// The serial console log of the current boot (`run_dir/serial-N.log`).
    pub fn serial_log_path(&self) -> &Path {
        &self.boot.serial_log
    }

    /// The PID of the current QEMU (also its process group id).
    pub fn pid(&self) -> i32 {
        self.boot.pid.as_raw_nonzero().get()
    }

    /// The throwaway overlay disk.
    pub fn overlay_path(&self) -> &Path {
        &self.overlay
    }

    /// The run directory (overlay, serial logs, QEMU stderr, QMP socket).
    pub fn run_dir(&self) -> &Path {
        &self.config.run_dir
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.registration.set_pid(None);
        self.boot.kill();
        if !self.config.keep {
            let _ = std::fs::remove_file(&self.overlay);
        }
        // Torn down properly: nothing in the folder is left for `coldboot gc`.
        owner::disown(&self.config.run_dir);
    }
}

/// The program with its arguments, and the extra environment, that start `config`.
fn launch(config: &VmConfig) -> (Vec<String>, Vec<(String, String)>) {
    match &config.nix_runner {
        Some(runner) => (
            vec![runner.display().to_string()],
            argv::nix_runner_env(config),
        ),
        None => (argv::qemu_argv(config), Vec::new()),
    }
}

/// Check the config's files and make its paths absolute (QEMU runs in `run_dir`).
fn resolve_paths(mut config: VmConfig) -> Result<VmConfig> {
    fn existing(path: &Path, what: &str) -> Result<PathBuf> {
        std::fs::canonicalize(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))
    }
    if let Some(runner) = &config.nix_runner {
        // The runner makes its own disk and command line from its environment.
        config.nix_runner = Some(existing(runner, "NixOS runner")?);
        if config.run_dir.is_relative() {
            config.run_dir = std::env::current_dir()
                .map_err(|e| infra(format!("cannot read the current directory: {e}")))?
                .join(&config.run_dir);
        }
        return Ok(config);
    }
    config.disk = existing(&config.disk, "disk image")?;
    if config.kernel.is_none() && (config.initrd.is_some() || !config.cmdline.is_empty()) {
        return Err(usage(
            "an initrd or kernel command line needs a kernel (direct kernel boot)",
        ));
    }
    config.kernel = config.kernel.map(|k| existing(&k, "kernel")).transpose()?;
    config.initrd = config.initrd.map(|i| existing(&i, "initrd")).transpose()?;
    if config.run_dir.is_relative() {
        config.run_dir = std::env::current_dir()
            .map_err(|e| infra(format!("cannot read the current directory: {e}")))?
            .join(&config.run_dir);
    }
    Ok(config)
}

/// `qemu-img create -f qcow2 -b BASE -F qcow2 OVERLAY`: the base is never written.
async fn create_overlay(base: &Path, overlay: &Path) -> Result<()> {
    let _ = std::fs::remove_file(overlay);
    let out = tokio::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(base)
        .args(["-F", "qcow2"])
        .arg(overlay)
        .output()
        .await
        .map_err(|e| {
            infra(format!(
                "cannot run qemu-img (apt-get install qemu-utils): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(infra(format!(
            "qemu-img create of overlay {} on {} failed ({}): {}",
            overlay.display(),
            base.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
