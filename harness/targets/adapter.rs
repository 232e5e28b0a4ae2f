//! The harness adapter every recipe image gets, and the neutral defaults it starts from.
//!
//! Files are embedded in the binary so the builder needs nothing but itself. The adapter
//! gives the guest DHCP on the user-mode NIC (systemd-networkd), installs the per-run SSH
//! key from the kernel command line and the run's host key from QEMU fw_cfg before sshd
//! starts, relays PID 1's private D-Bus socket to the harness from early userspace (the
//! recorder, see [`crate::guest::recorder`]), and keeps boots quiet and quick.
//!
//! The three scripts (`authorized-key`, `host-key`, `recorder`) live in `nix/adapter/`:
//! the NixOS module (`nix/modules/coldboot-guest.nix`) runs the same files, and Nix can
//! only reach files inside the `nix/` folder it copies.

use std::path::Path;

use crate::targets::rootfs::guest_path;
use crate::targets::units::{self, Link};

/// A file to write into the rootfs: guest path, content, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: &'static str,
    /// File content.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
}

/// Units the adapter enables in every image.
pub const ENABLED_UNITS: [&str; 4] = [
    "systemd-networkd.service",
    "coldboot-authorized-key.service",
    "coldboot-host-key.service",
    "coldboot-recorder.service",
];

/// Units masked in every image: they reach for the Debian archive on a timer, which a
/// throwaway VM cannot use and which would add noise to boot evidence.
pub const MASKED_UNITS: [&str; 2] = ["apt-daily.timer", "apt-daily-upgrade.timer"];

/// The adapter's own files, written after the recipe's overlay so a recipe cannot break them.
pub fn adapter_files() -> Vec<GuestFile> {
    vec![
        GuestFile {
            path: "/etc/systemd/network/80-coldboot-dhcp.network",
            content: include_str!("adapter/80-coldboot-dhcp.network").into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/etc/systemd/system/coldboot-authorized-key.service",
            content: include_str!("adapter/coldboot-authorized-key.service").into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/usr/local/lib/coldboot/authorized-key",
            content: include_str!("../../nix/adapter/authorized-key").into(),
            mode: 0o755,
        },
        GuestFile {
            path: "/etc/systemd/system/coldboot-host-key.service",
            content: include_str!("adapter/coldboot-host-key.service").into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/usr/local/lib/coldboot/host-key",
            content: include_str!("../../nix/adapter/host-key").into(),
            mode: 0o755,
        },
        GuestFile {
            path: "/etc/systemd/system/coldboot-recorder.service",
            content: include_str!("adapter/coldboot-recorder.service").into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/usr/local/lib/coldboot/recorder",
            content: include_str!("../../nix/adapter/recorder").into(),
            mode: 0o755,
        },
        GuestFile {
            path: "/etc/systemd/system/systemd-networkd-wait-online.service.d/coldboot.conf",
            content: include_str!("adapter/wait-online.conf").into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/etc/ssh/sshd_config.d/coldboot.conf",
            content: include_str!("adapter/sshd.conf").into(),
            mode: 0o644,
        },
    ]
}

/// Neutral defaults written before the overlay (a recipe may replace them): the host's
/// hostname and resolver leak in from mmdebstrap otherwise, and a fixed machine id keeps
/// every boot of the image from being a "first boot" with presets applied.
pub fn default_files(machine_id: &str) -> Vec<GuestFile> {
    vec![
        GuestFile { path: "/etc/hostname", content: "coldboot\n".into(), mode: 0o644 },
        GuestFile {
            path: "/etc/hosts",
            content: "127.0.0.1 localhost\n127.0.1.1 coldboot\n::1 localhost ip6-localhost ip6-loopback\n"
                .into(),
            mode: 0o644,
        },
        GuestFile {
            path: "/etc/fstab",
            content: "LABEL=root / ext4 rw,errors=remount-ro 0 1\n".into(),
            mode: 0o644,
        },
        // QEMU user-mode networking answers DNS on 10.0.2.3.
        GuestFile { path: "/etc/resolv.conf", content: "nameserver 10.0.2.3\n".into(), mode: 0o644 },
        GuestFile { path: "/etc/machine-id", content: format!("{machine_id}\n"), mode: 0o444 },
    ]
}

/// A machine id (32 lowercase hex digits) derived from the image key, so it is stable per image.
pub fn machine_id(image_key: &str) -> String {
    let mut id: String = image_key
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(32)
        .collect();
    while id.len() < 32 {
        id.push('0');
    }
    id.to_ascii_lowercase()
}

/// Write files into the rootfs, replacing what is there (a symlink is removed, not followed).
pub fn write_files(root: &Path, files: &[GuestFile]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = guest_path(root, f.path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::remove_file(&path)?;
        }
        std::fs::write(&path, &f.content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// Write the adapter, enable its units and mask the noisy ones.
pub fn install(root: &Path) -> anyhow::Result<Vec<Link>> {
    write_files(root, &adapter_files())?;
    let enable: Vec<String> = ENABLED_UNITS.iter().map(|u| u.to_string()).collect();
    let mut links = units::enable(root, &enable)?;
    for unit in MASKED_UNITS {
        let link = Link {
            path: format!("/etc/systemd/system/{unit}"),
            target: "/dev/null".into(),
        };
        units::make_link(root, &link)?;
        links.push(link);
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_32_hex() {
        let id = machine_id("ABCDEF0123456789abcdef0123456789ffff");
        assert_eq!(id, "abcdef0123456789abcdef0123456789");
        assert_eq!(machine_id("ab").len(), 32);
    }

    #[test]
    fn key_unit_runs_before_ssh_and_is_wanted() {
        let unit = include_str!("adapter/coldboot-authorized-key.service");
        assert!(unit.contains("Before=ssh.service"));
        let install = units::parse_install(unit);
        assert!(install.wanted_by.contains(&"ssh.service".to_string()));
    }

    #[test]
    fn key_script_reads_cmdline_and_sets_mode_600() {
        let script = include_str!("../../nix/adapter/authorized-key");
        assert!(script.contains("coldboot.authorized_key=") && script.contains("/proc/cmdline"));
        assert!(script.contains("chmod 600"));
    }

    #[test]
    fn host_key_unit_runs_before_ssh_and_sshd_uses_only_that_key() {
        let unit = include_str!("adapter/coldboot-host-key.service");
        assert!(unit.contains("Before=ssh.service"));
        assert!(
            units::parse_install(unit)
                .wanted_by
                .contains(&"ssh.service".to_string())
        );
        let script = include_str!("../../nix/adapter/host-key");
        let name = crate::guest::key::HOST_KEY_FW_CFG;
        assert!(
            script.contains(&format!("name={name}\n")),
            "the script reads {name}"
        );
        assert!(script.contains("/sys/firmware/qemu_fw_cfg/by_name/$name/raw"));
        assert!(
            !script.contains("cat /proc/cmdline"),
            "the key never travels on the command line"
        );
        let sshd = include_str!("adapter/sshd.conf");
        let host_keys: Vec<&str> = sshd.lines().filter(|l| l.starts_with("HostKey ")).collect();
        assert_eq!(host_keys, ["HostKey /run/coldboot/ssh_host_ed25519_key"]);
    }

    #[test]
    fn install_writes_enables_and_masks() {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(
            lib.join("systemd-networkd.service"),
            "[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        install(root.path()).unwrap();
        let etc = root.path().join("etc/systemd/system");
        assert!(
            etc.join("sysinit.target.wants/coldboot-authorized-key.service")
                .is_symlink()
        );
        assert!(
            etc.join("multi-user.target.wants/systemd-networkd.service")
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_link(etc.join("apt-daily.timer")).unwrap(),
            Path::new("/dev/null")
        );
        use std::os::unix::fs::PermissionsExt;
        let script = root.path().join("usr/local/lib/coldboot/authorized-key");
        assert_eq!(
            std::fs::metadata(script).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }
}
