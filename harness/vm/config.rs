//! What one VM is made of. Built by the caller from a `BootSpec` and scenario options.

use std::path::PathBuf;

use super::accel::AccelChoice;

/// Memory given to a guest unless the caller says otherwise.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Virtual CPUs given to a guest unless the caller says otherwise.
pub const DEFAULT_SMP: u32 = 2;

/// Everything needed to start one QEMU: the disk, what to boot, and where to put files.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The base qcow2 image. Never written: the VM runs on `run_dir/overlay.qcow2`.
    pub disk: PathBuf,
    /// Kernel for direct boot; without it the disk's boot loader runs.
    pub kernel: Option<PathBuf>,
    /// Initrd for direct boot (only with `kernel`).
    pub initrd: Option<PathBuf>,
    /// The full, final kernel command line (only with `kernel`).
    pub cmdline: Vec<String>,
    /// The accelerator, already chosen (see [`super::accel::choose`]).
    pub accel: AccelChoice,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of virtual CPUs.
    pub smp: u32,
    /// Where the overlay, serial logs, QEMU stderr and QMP socket go. Created if missing.
    pub run_dir: PathBuf,
    /// Guest TCP ports to forward from a free 127.0.0.1 port, besides 22 (always forwarded).
    pub guest_forwards: Vec<u16>,
    /// Keep the overlay after the VM ends (for inspection).
    pub keep: bool,
    /// Substrings replaced by `<redacted>` in the logged command line (e.g. the SSH key argument).
    pub redact: Vec<String>,
    /// Start this NixOS runner script (`bin/run-HOSTNAME-vm`) through its environment
    /// instead of QEMU with an argv of ours. `disk`, `kernel` and `initrd` are then
    /// unused: the runner boots its own system on a fresh `run_dir/nixos.qcow2`.
    pub nix_runner: Option<PathBuf>,
}

impl VmConfig {
    /// A config with default memory and CPUs, no kernel, no extra forwards.
    pub fn new(disk: impl Into<PathBuf>, run_dir: impl Into<PathBuf>, accel: AccelChoice) -> Self {
        VmConfig {
            disk: disk.into(),
            kernel: None,
            initrd: None,
            cmdline: Vec::new(),
            accel,
            memory_mib: DEFAULT_MEMORY_MIB,
            smp: DEFAULT_SMP,
            run_dir: run_dir.into(),
            guest_forwards: Vec::new(),
            keep: false,
            redact: Vec::new(),
            nix_runner: None,
        }
    }

    /// A config that starts NixOS's runner script `runner` (see [`super::argv::nix_runner_env`]).
    pub fn nix_runner(
        runner: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
        accel: AccelChoice,
    ) -> Self {
        let mut config = VmConfig::new(PathBuf::new(), run_dir, accel);
        config.nix_runner = Some(runner.into());
        config
    }

    /// The guest ports to forward: 22 first, then the extra ones, without duplicates.
    pub fn forwarded_guest_ports(&self) -> Vec<u16> {
        let mut ports = vec![super::SSH_GUEST_PORT];
        for &p in &self.guest_forwards {
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    }
}
