//! The QEMU command line for a [`VmConfig`]. Pure, so the exact argv is unit-tested.
//!
//! QEMU runs with `run_dir` as its working directory, so the overlay and the QMP socket
//! are named relatively (short socket paths stay under the 108-byte limit of unix
//! sockets). The caller makes `disk`, `kernel` and `initrd` absolute first.

use super::accel::{Accel, QEMU_SYSTEM};
use super::config::VmConfig;

/// The overlay disk file, relative to the run directory.
pub const OVERLAY_FILE: &str = "overlay.qcow2";
/// The QMP socket, relative to the run directory.
pub const QMP_SOCKET_FILE: &str = "qmp.sock";
/// The id of the user-mode netdev.
pub const NETDEV_ID: &str = "n0";
/// The id of the guest NIC (the name `set_link` acts on).
pub const NIC_ID: &str = "nic0";
/// The recorder's socket, relative to the run directory: QEMU listens, the harness
/// connects (see `crate::guest::recorder`).
pub const RECORDER_SOCKET_FILE: &str = "recorder.sock";
/// The name of the recorder's virtio-serial port as the guest sees it
/// (`/sys/class/virtio-ports/*/name`; the adapter's recorder looks it up).
pub const RECORDER_PORT_NAME: &str = "org.coldboot.bus";
/// The socket of the second port, the guest's TCP connection attempts (the adapter's
/// netwatch), relative to the run directory.
pub const NETWATCH_SOCKET_FILE: &str = "recorder-net.sock";
/// That port's name in the guest.
pub const NETWATCH_PORT_NAME: &str = "org.coldboot.net";

/// The QEMU arguments of the recorder's channel: a virtio-serial bus of our own (ids that
/// cannot clash with a NixOS runner's), one port on it, and a listening socket behind it.
/// The guest's writes wait until the harness has connected, so nothing is lost before.
pub fn recorder_args() -> Vec<String> {
    [
        "-device",
        "virtio-serial-pci,id=coldboot-vser",
        "-chardev",
        &format!("socket,id=coldboot-rec,path={RECORDER_SOCKET_FILE},server=on,wait=off"),
        "-device",
        &format!(
            "virtserialport,bus=coldboot-vser.0,chardev=coldboot-rec,name={RECORDER_PORT_NAME}"
        ),
        "-chardev",
        &format!("socket,id=coldboot-net,path={NETWATCH_SOCKET_FILE},server=on,wait=off"),
        "-device",
        &format!(
            "virtserialport,bus=coldboot-vser.0,chardev=coldboot-net,name={NETWATCH_PORT_NAME}"
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The QEMU arguments that select an accelerator.
///
/// `Auto` (not resolved by a probe) lets QEMU itself fall back from KVM to TCG.
pub fn accel_args(accel: Accel) -> Vec<String> {
    let args: &[&str] = match accel {
        Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
        Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        Accel::Auto => &["-accel", "kvm", "-accel", "tcg,thread=multi", "-cpu", "max"],
    };
    args.iter().map(|s| s.to_string()).collect()
}

/// The full argv (program first) that boots `config` on its overlay.
pub fn qemu_argv(config: &VmConfig) -> Vec<String> {
    let mut argv: Vec<String> = [QEMU_SYSTEM, "-nodefaults", "-display", "none", "-no-reboot"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(accel_args(config.accel.accel));
    argv.extend([
        "-m".into(),
        config.memory_mib.to_string(),
        "-smp".into(),
        config.smp.to_string(),
    ]);
    if let Some(kernel) = &config.kernel {
        argv.extend(["-kernel".into(), kernel.display().to_string()]);
        if let Some(initrd) = &config.initrd {
            argv.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        argv.extend(["-append".into(), config.cmdline.join(" ")]);
    }
    let hostfwds: String = config
        .forwarded_guest_ports()
        .iter()
        .map(|port| format!(",hostfwd=tcp:127.0.0.1:0-:{port}"))
        .collect();
    argv.extend([
        "-drive".into(),
        format!("file={OVERLAY_FILE},format=qcow2,if=virtio"),
        "-netdev".into(),
        format!("user,id={NETDEV_ID}{hostfwds}"),
        "-device".into(),
        format!("virtio-net-pci,netdev={NETDEV_ID},id={NIC_ID}"),
        "-device".into(),
        "virtio-rng-pci".into(),
        "-chardev".into(),
        "stdio,id=serial0,signal=off".into(),
        "-serial".into(),
        "chardev:serial0".into(),
        "-qmp".into(),
        format!("unix:{QMP_SOCKET_FILE},server=on,wait=off"),
    ]);
    for f in &config.fw_cfg {
        argv.extend(["-fw_cfg".into(), f.qemu_arg()]);
    }
    if config.recorder {
        argv.extend(recorder_args());
    }
    argv
}

/// The disk NixOS's runner creates (`NIX_DISK_IMAGE`), relative to the run directory.
pub const NIX_DISK_FILE: &str = "nixos.qcow2";
/// The user-mode netdev id in NixOS's runner (`-netdev user,id=user.0,...`): the name
/// `set_link` acts on there (the runner gives its NIC no id).
pub const NIX_NETDEV_ID: &str = "user.0";

/// The name of the guest link for QMP `set_link`.
pub fn link_name(config: &VmConfig) -> &'static str {
    if config.nix_runner.is_some() {
        NIX_NETDEV_ID
    } else {
        NIC_ID
    }
}

/// The environment that drives NixOS's VM runner, as nixpkgs'
/// `nixos/modules/virtualisation/qemu-vm.nix` (`startVM`) reads it:
///
/// - `NIX_DISK_IMAGE`: the writable root disk, `readlink -f`'d and created when missing;
///   a fresh path in the run folder, so every run starts from scratch.
/// - `QEMU_OPTS`: appended, unquoted (so word-split), to the `exec qemu ...` line after
///   the configuration's own options: serial on stdio, QMP, no display, no reboot.
/// - `QEMU_KERNEL_PARAMS`: appended to `-append "$(cat .../kernel-params) init=...
///   regInfo=... console=... $QEMU_KERNEL_PARAMS"` (the key, masks, `systemd.setenv=`).
/// - `QEMU_NET_OPTS`: appended to `-netdev user,id=user.0,<forwardPorts>"$QEMU_NET_OPTS"`;
///   the loopback forwards with port 0, which the kernel chooses (read back over QMP).
/// - `TMPDIR` + `USE_TMPDIR`: the runner then uses the run folder instead of a
///   `mktemp -d` and `cd`s into it, so the relative QMP socket lands there too.
///
/// The runner's binary line is `qemu-system-x86_64 -machine accel=kvm:tcg -cpu max`
/// (nixos/lib/qemu-common.nix). A later `-machine accel=tcg` replaces it when the probe
/// chose TCG (KVM that opens but does not run, as on the development machines).
pub fn nix_runner_env(config: &VmConfig) -> Vec<(String, String)> {
    let mut opts: Vec<String> = [
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        "stdio,id=serial0,signal=off",
        "-serial",
        "chardev:serial0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    opts.extend([
        "-qmp".into(),
        format!("unix:{QMP_SOCKET_FILE},server=on,wait=off"),
    ]);
    if config.accel.accel == Accel::Tcg {
        opts.extend(["-machine".into(), "accel=tcg".into()]);
    }
    // QEMU_OPTS is word-split by the runner: the temporary path has no spaces.
    for f in &config.fw_cfg {
        opts.extend(["-fw_cfg".into(), f.qemu_arg()]);
    }
    if config.recorder {
        opts.extend(recorder_args());
    }
    let net: Vec<String> = config
        .forwarded_guest_ports()
        .iter()
        .map(|port| format!("hostfwd=tcp:127.0.0.1:0-:{port}"))
        .collect();
    vec![
        (
            "NIX_DISK_IMAGE".into(),
            config.run_dir.join(NIX_DISK_FILE).display().to_string(),
        ),
        ("QEMU_OPTS".into(), opts.join(" ")),
        ("QEMU_KERNEL_PARAMS".into(), config.cmdline.join(" ")),
        ("QEMU_NET_OPTS".into(), net.join(",")),
        ("TMPDIR".into(), config.run_dir.display().to_string()),
        ("USE_TMPDIR".into(), "1".into()),
    ]
}

/// What starts the VM, as one argv for logs and evidence: `qemu_argv` for QEMU, or
/// `KEY=VALUE... RUNNER` (as `env` takes it) for a NixOS runner.
pub fn launch_line(config: &VmConfig) -> Vec<String> {
    match &config.nix_runner {
        None => qemu_argv(config),
        Some(runner) => nix_runner_env(config)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(std::iter::once(runner.display().to_string()))
            .collect(),
    }
}

/// `argv` with every non-empty `secrets` substring replaced by `<redacted>`, for logs and evidence.
pub fn redact(argv: &[String], secrets: &[String]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            secrets
                .iter()
                .filter(|s| !s.is_empty())
                .fold(arg.clone(), |acc, s| acc.replace(s.as_str(), "<redacted>"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::accel::AccelChoice;

    fn config() -> VmConfig {
        let mut c = VmConfig::new(
            "/images/base.qcow2",
            "/runs/r1",
            AccelChoice {
                accel: Accel::Tcg,
                reason: "tcg requested".into(),
            },
        );
        c.kernel = Some("/images/vmlinuz".into());
        c.initrd = Some("/images/initrd.img".into());
        c.cmdline = vec![
            "root=LABEL=root".into(),
            "rw".into(),
            "console=ttyS0".into(),
            "coldboot.authorized_key=SECRETKEY".into(),
        ];
        c.guest_forwards = vec![8080, 22, 8080];
        c.redact = vec!["SECRETKEY".into()];
        c
    }

    #[test]
    fn argv_for_a_direct_kernel_boot_under_tcg() {
        let expected: Vec<&str> = vec![
            "qemu-system-x86_64",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
            "-kernel",
            "/images/vmlinuz",
            "-initrd",
            "/images/initrd.img",
            "-append",
            "root=LABEL=root rw console=ttyS0 coldboot.authorized_key=SECRETKEY",
            "-drive",
            "file=overlay.qcow2,format=qcow2,if=virtio",
            "-netdev",
            "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22,hostfwd=tcp:127.0.0.1:0-:8080",
            "-device",
            "virtio-net-pci,netdev=n0,id=nic0",
            "-device",
            "virtio-rng-pci",
            "-chardev",
            "stdio,id=serial0,signal=off",
            "-serial",
            "chardev:serial0",
            "-qmp",
            "unix:qmp.sock,server=on,wait=off",
        ];
        assert_eq!(qemu_argv(&config()), expected);
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_no_kernel_means_no_append() {
        let mut c = config();
        c.accel.accel = Accel::Kvm;
        c.kernel = None;
        c.memory_mib = 2048;
        let argv = qemu_argv(&c);
        let joined = argv.join(" ");
        assert!(
            joined.contains("-accel kvm -cpu host -m 2048 -smp 2 -drive"),
            "{joined}"
        );
        assert!(!argv.iter().any(|a| a == "-append" || a == "-initrd"));
    }

    #[test]
    fn nix_runner_environment() {
        let mut c = config();
        c.nix_runner = Some("/nix/store/abc-nixos-vm/bin/run-ccci-model-vm".into());
        let env = nix_runner_env(&c);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("NIX_DISK_IMAGE"), Some("/runs/r1/nixos.qcow2"));
        assert_eq!(
            get("QEMU_OPTS"),
            Some(
                "-nodefaults -display none -no-reboot -chardev stdio,id=serial0,signal=off \
                 -serial chardev:serial0 -qmp unix:qmp.sock,server=on,wait=off -machine accel=tcg"
            )
        );
        assert_eq!(
            get("QEMU_KERNEL_PARAMS"),
            Some("root=LABEL=root rw console=ttyS0 coldboot.authorized_key=SECRETKEY")
        );
        assert_eq!(
            get("QEMU_NET_OPTS"),
            Some("hostfwd=tcp:127.0.0.1:0-:22,hostfwd=tcp:127.0.0.1:0-:8080")
        );
        assert_eq!(get("TMPDIR"), Some("/runs/r1"));
        assert_eq!(get("USE_TMPDIR"), Some("1"));
        // KVM: the runner's own `-machine accel=kvm:tcg` stands.
        c.accel.accel = Accel::Kvm;
        assert!(!nix_runner_env(&c)[1].1.contains("accel"));
        let line = redact(&launch_line(&c), &c.redact);
        assert_eq!(
            line.last().map(String::as_str),
            Some("/nix/store/abc-nixos-vm/bin/run-ccci-model-vm")
        );
        assert!(
            line.iter()
                .any(|a| a.ends_with("coldboot.authorized_key=<redacted>"))
        );
        assert!(!line.join(" ").contains("SECRETKEY"));
        assert_eq!(link_name(&c), "user.0");
    }

    #[test]
    fn fw_cfg_files_reach_qemu_and_the_nix_runner() {
        let mut c = config();
        c.fw_cfg = vec![crate::vm::config::FwCfgFile::named(
            "opt/coldboot/ssh_host_ed25519_key",
            "/tmp/coldboot-fw-cfg-x,y",
        )];
        let argv = qemu_argv(&c);
        let at = argv.iter().position(|a| a == "-fw_cfg").unwrap();
        assert_eq!(
            argv[at + 1],
            "name=opt/coldboot/ssh_host_ed25519_key,file=/tmp/coldboot-fw-cfg-x,,y"
        );
        c.nix_runner = Some("/nix/store/abc-nixos-vm/bin/run-ccci-model-vm".into());
        let env = nix_runner_env(&c);
        assert!(
            env[1].1.ends_with(
                " -fw_cfg name=opt/coldboot/ssh_host_ed25519_key,file=/tmp/coldboot-fw-cfg-x,,y"
            ),
            "{}",
            env[1].1
        );
    }

    #[test]
    fn redaction_hides_secrets_and_keeps_the_rest() {
        let c = config();
        let argv = redact(&qemu_argv(&c), &c.redact);
        let append = &argv[argv.iter().position(|a| a == "-append").unwrap() + 1];
        assert_eq!(
            append,
            "root=LABEL=root rw console=ttyS0 coldboot.authorized_key=<redacted>"
        );
        assert!(!argv.join(" ").contains("SECRETKEY"));
        assert_eq!(redact(&["a".into()], &["".into()]), vec!["a".to_string()]);
    }
}
