//! The QEMU command line for a [`VmConfig`]. Pure, so the exact argv is unit-tested.
//!
//! QEMU runs with `run_dir` as its working directory, so the overlay and the QMP socket
//! are named relatively (short socket paths stay under the 108-byte limit of unix
//! sockets). The caller makes `disk`, `kernel` and `initrd` absolute first.

use super::accel::Accel;
use super::config::VmConfig;

/// The QEMU system emulator that runs every VM.
pub const QEMU_SYSTEM: &str = "qemu-system-x86_64";
/// The overlay disk file, relative to the run directory.
pub const OVERLAY_FILE: &str = "overlay.qcow2";
/// The QMP socket, relative to the run directory.
pub const QMP_SOCKET_FILE: &str = "qmp.sock";
/// The id of the user-mode netdev.
pub const NETDEV_ID: &str = "n0";
/// The id of the guest NIC (the name `set_link` acts on).
pub const NIC_ID: &str = "nic0";

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
    argv
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
