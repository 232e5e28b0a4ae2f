//! What one VM is made of. Built by the caller from a `BootSpec` and scenario options.

use std::path::PathBuf;
use std::sync::Arc;

use super::accel::AccelChoice;

/// Memory given to a guest unless the caller says otherwise.
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
/// Virtual CPUs given to a guest unless the caller says otherwise.
pub const DEFAULT_SMP: u32 = 2;

/// How many virtual CPUs each guest gets, and why: the number `asked` for (`--vcpus`),
/// else a choice for `jobs` guests running at once on a host with `host_cpus`. Under TCG every virtual CPU is a host thread that emulates
/// instructions: more of them than host cores only adds contention (on these 2-core
/// hosts, M1+M2 with two guests of 2 CPUs each took 302 s against 281 s with 1 each,
/// and QEMU used 555 s of CPU against 477 s). Under KVM a virtual CPU is cheap, so the
/// default stands. Never fewer than one, never more than [`DEFAULT_SMP`].
pub fn vcpus(
    asked: Option<u32>,
    accel: super::Accel,
    host_cpus: usize,
    jobs: usize,
) -> (u32, String) {
    if let Some(n) = asked {
        return (n, format!("{n}: asked for (--vcpus or COLDBOOT_VCPUS)"));
    }
    if accel != super::Accel::Tcg {
        return (
            DEFAULT_SMP,
            format!("{DEFAULT_SMP}: the default under {accel}"),
        );
    }
    let jobs = jobs.max(1);
    let share = (host_cpus / jobs).clamp(1, DEFAULT_SMP as usize) as u32;
    let why = if share == DEFAULT_SMP {
        format!("{share}: the default ({host_cpus} host CPUs for {jobs} guest(s) at once)")
    } else {
        format!(
            "{share}: under TCG each virtual CPU is a host thread, and {jobs} guests at once share {host_cpus} host CPUs"
        )
    };
    (share, why)
}

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
    /// Why that many (for the evidence).
    pub smp_reason: String,
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
    /// Named blobs QEMU hands to the guest through fw_cfg (`-fw_cfg name=NAME,file=PATH`;
    /// in the guest root alone reads `/sys/firmware/qemu_fw_cfg/by_name/NAME/raw`).
    pub fw_cfg: Vec<FwCfgFile>,
    /// Give the guest the recorder's virtio-serial port (see [`super::argv::recorder_args`]):
    /// only for guests whose adapter runs the recorder.
    pub recorder: bool,
}

/// One fw_cfg entry: its name (`opt/...`) and the host file QEMU reads at start.
#[derive(Debug, Clone)]
pub struct FwCfgFile {
    /// The entry's name; user entries start with `opt/`.
    pub name: String,
    /// The file QEMU reads (at every start, so also at a power cycle).
    pub path: PathBuf,
    /// The private temporary file behind `path`, removed when the last clone goes.
    _file: Option<Arc<tempfile::NamedTempFile>>,
}

impl FwCfgFile {
    /// `bytes` in a fresh 0600 file in the system temporary folder: never in the run
    /// folder, which may become evidence. Removed when the last clone is dropped.
    pub fn private(name: &str, bytes: &[u8]) -> std::io::Result<FwCfgFile> {
        use std::io::Write as _;
        let mut file = tempfile::Builder::new()
            .prefix("coldboot-fw-cfg-")
            .tempfile()?;
        file.write_all(bytes)?;
        file.flush()?;
        Ok(FwCfgFile {
            name: name.to_string(),
            path: file.path().to_path_buf(),
            _file: Some(Arc::new(file)),
        })
    }

    /// An entry that names a path without owning a file (for `--dry-run` listings).
    pub fn named(name: &str, path: impl Into<PathBuf>) -> FwCfgFile {
        FwCfgFile {
            name: name.to_string(),
            path: path.into(),
            _file: None,
        }
    }

    /// The QEMU option value: `name=NAME,file=PATH` (commas in the path doubled, as
    /// QEMU's option syntax escapes them).
    pub fn qemu_arg(&self) -> String {
        format!(
            "name={},file={}",
            self.name,
            self.path.display().to_string().replace(',', ",,")
        )
    }
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
            smp_reason: format!("{DEFAULT_SMP}: the default"),
            run_dir: run_dir.into(),
            guest_forwards: Vec::new(),
            keep: false,
            redact: Vec::new(),
            nix_runner: None,
            fw_cfg: Vec::new(),
            recorder: false,
        }
    }

    /// Give the guest `(cpus, why)` (see [`vcpus`]); a NixOS runner keeps its own.
    pub fn set_vcpus(&mut self, (cpus, why): (u32, String)) {
        if self.nix_runner.is_none() {
            self.smp = cpus;
            self.smp_reason = why;
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
        config.smp_reason = "the NixOS runner's own (virtualisation.cores)".into();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Accel;

    #[test]
    fn tcg_guests_share_the_host_cores() {
        assert_eq!(vcpus(None, Accel::Tcg, 2, 1).0, 2);
        assert_eq!(vcpus(None, Accel::Tcg, 2, 2).0, 1);
        assert_eq!(vcpus(None, Accel::Tcg, 2, 8).0, 1, "never fewer than one");
        assert_eq!(
            vcpus(None, Accel::Tcg, 16, 2).0,
            2,
            "never more than the default"
        );
        assert_eq!(
            vcpus(None, Accel::Tcg, 4, 0).0,
            2,
            "--jobs 0 runs one at a time"
        );
        let (n, why) = vcpus(None, Accel::Tcg, 2, 2);
        assert_eq!(n, 1);
        assert!(why.contains("2 guests at once share 2 host CPUs"), "{why}");
    }

    #[test]
    fn kvm_guests_keep_the_default() {
        assert_eq!(vcpus(None, Accel::Kvm, 2, 8).0, DEFAULT_SMP);
    }

    #[test]
    fn an_asked_number_wins_and_says_so() {
        let (n, why) = vcpus(Some(3), Accel::Tcg, 2, 2);
        assert_eq!(n, 3);
        assert!(why.contains("asked for"), "{why}");
    }
}
