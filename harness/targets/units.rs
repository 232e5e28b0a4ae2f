//! Enabling systemd units inside an unpacked root filesystem, without running anything
//! from the guest.
//!
//! We create the `[Install]` symlinks ourselves instead of `chroot DIR systemctl enable`:
//! it needs no guest binaries to run on the host (so no chroot, /proc or architecture
//! concerns), it behaves the same whatever systemd the host has, and the link logic is
//! pure and unit-tested. It covers what recipes use: `WantedBy=`, `RequiredBy=`,
//! `UpheldBy=`, `Alias=`, `Also=` and template instances (`foo@bar.service`).

use std::path::Path;

use crate::error::usage;
use crate::guest::systemd::unitfile;
use crate::targets::rootfs::guest_path;

/// Where unit files live in the guest, most specific first.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The `[Install]` section of a unit file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=` units.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=` units.
    pub required_by: Vec<String>,
    /// `UpheldBy=` units.
    pub upheld_by: Vec<String>,
    /// `Alias=` names.
    pub alias: Vec<String>,
    /// `Also=` units enabled together with this one.
    pub also: Vec<String>,
    /// `DefaultInstance=` for templates.
    pub default_instance: Option<String>,
}

impl Install {
    /// Whether the section gives anything to enable.
    pub fn is_empty(&self) -> bool {
        self.wanted_by.is_empty()
            && self.required_by.is_empty()
            && self.upheld_by.is_empty()
            && self.alias.is_empty()
            && self.also.is_empty()
    }
}

/// The `[Install]` section of unit file text, read by the one unit-file reader
/// ([`unitfile::parse_assignments`]): space-separated lists, repeated keys add, an empty
/// value clears.
pub fn parse_install(text: &str) -> Install {
    let mut install = Install::default();
    for a in unitfile::parse_assignments(text) {
        if a.section != "Install" {
            continue;
        }
        let list = match a.key.as_str() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "UpheldBy" => &mut install.upheld_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                install.default_instance = Some(a.value);
                continue;
            }
            _ => continue,
        };
        if a.value.is_empty() {
            list.clear();
        } else {
            list.extend(a.value.split_whitespace().map(str::to_string));
        }
    }
    install
}

/// A symlink to create: guest path of the link → guest path it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The link, as a guest path under /etc/systemd/system.
    pub path: String,
    /// The unit file it points to (guest path).
    pub target: String,
}

/// The links `systemctl enable NAME` would make for a unit whose file is `file` (guest path).
pub fn install_links(name: &str, file: &str, install: &Install) -> Vec<Link> {
    let mut links = Vec::new();
    for (dirs, suffix) in [
        (&install.wanted_by, "wants"),
        (&install.required_by, "requires"),
        (&install.upheld_by, "upholds"),
    ] {
        for by in dirs {
            links.push(Link {
                path: format!("/etc/systemd/system/{by}.{suffix}/{name}"),
                target: file.to_string(),
            });
        }
    }
    for alias in &install.alias {
        links.push(Link {
            path: format!("/etc/systemd/system/{alias}"),
            target: file.to_string(),
        });
    }
    links
}

/// Find a unit's file in the rootfs, without following links out of it: only regular files.
fn find_unit(root: &Path, file_name: &str) -> Option<String> {
    UNIT_DIRS.iter().find_map(|dir| {
        let guest = format!("{dir}/{file_name}");
        let meta = std::fs::symlink_metadata(guest_path(root, &guest).ok()?).ok()?;
        meta.is_file().then_some(guest)
    })
}

/// Enable units in the rootfs at `root`, following `Also=`. A requested unit that does
/// not exist or has nothing to install is a usage error naming it.
pub fn enable(root: &Path, units: &[String]) -> anyhow::Result<Vec<Link>> {
    let mut done: Vec<String> = Vec::new();
    let mut made = Vec::new();
    let mut queue: Vec<(String, bool)> = units.iter().map(|u| (u.clone(), true)).collect();
    while let Some((name, requested)) = queue.pop() {
        if done.contains(&name) {
            continue;
        }
        done.push(name.clone());
        let template = unitfile::template_of(&name);
        let file_name = template.clone().unwrap_or_else(|| name.clone());
        let Some(file) = find_unit(root, &file_name) else {
            if requested {
                return Err(usage(format!(
                    "cannot enable {name}: no unit file {file_name} in the image (looked in {})",
                    UNIT_DIRS.join(", ")
                )));
            }
            continue;
        };
        let text = std::fs::read_to_string(guest_path(root, &file)?)?;
        let install = parse_install(&text);
        if install.is_empty() && requested {
            return Err(usage(format!(
                "cannot enable {name}: {file} has no [Install] section (it is static; pull it in with Wants= from another unit)"
            )));
        }
        // A template named without an instance (`foo@.service`) needs DefaultInstance=.
        let bare_template = name
            .split_once('@')
            .is_some_and(|(_, rest)| rest.starts_with('.'));
        let link_name = match bare_template {
            true => match &install.default_instance {
                Some(inst) => file_name.replacen("@.", &format!("@{inst}."), 1),
                None => {
                    return Err(usage(format!(
                        "cannot enable template {name} without an instance (write NAME@INSTANCE{})",
                        &file_name[file_name.rfind('.').unwrap_or(0)..]
                    )));
                }
            },
            _ => name.clone(),
        };
        for link in install_links(&link_name, &file, &install) {
            make_link(root, &link)?;
            made.push(link);
        }
        queue.extend(install.also.iter().map(|u| (u.clone(), false)));
    }
    Ok(made)
}

/// Create one symlink (replacing an old one), creating its directory.
pub fn make_link(root: &Path, link: &Link) -> anyhow::Result<()> {
    let path = guest_path(root, &link.path)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path)?;
    }
    std::os::unix::fs::symlink(&link.target, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const NETWORKD: &str = "[Unit]\nDescription=x\n[Service]\nExecStart=/x\n\n[Install]\nWantedBy=multi-user.target\nAlso=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\n# comment=ignored\nAlso=systemd-networkd-wait-online.service\n";

    #[test]
    fn parses_install_section_only() {
        let text = format!("[Unit]\nWantedBy=not-this.target\n{NETWORKD}");
        let i = parse_install(&text);
        assert_eq!(i.wanted_by, ["multi-user.target"]);
        assert_eq!(
            i.also,
            [
                "systemd-networkd.socket",
                "systemd-networkd-wait-online.service"
            ]
        );
        assert_eq!(i.alias, ["dbus-org.freedesktop.network1.service"]);
        assert!(parse_install("[Service]\nExecStart=/x\n").is_empty());
    }

    #[test]
    fn links_for_wants_requires_and_alias() {
        let i = Install {
            wanted_by: vec!["multi-user.target".into(), "ssh.service".into()],
            required_by: vec!["b.target".into()],
            alias: vec!["a.service".into()],
            ..Install::default()
        };
        let links = install_links("k.service", "/etc/systemd/system/k.service", &i);
        let paths: Vec<&str> = links.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/systemd/system/multi-user.target.wants/k.service",
                "/etc/systemd/system/ssh.service.wants/k.service",
                "/etc/systemd/system/b.target.requires/k.service",
                "/etc/systemd/system/a.service",
            ]
        );
        assert!(
            links
                .iter()
                .all(|l| l.target == "/etc/systemd/system/k.service")
        );
    }

    fn rootfs() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let lib = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("systemd-networkd.service"), NETWORKD).unwrap();
        std::fs::write(
            lib.join("systemd-networkd.socket"),
            "[Install]\nWantedBy=sockets.target\n",
        )
        .unwrap();
        std::fs::write(lib.join("static.service"), "[Service]\nExecStart=/x\n").unwrap();
        std::fs::write(
            lib.join("t@.service"),
            "[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        root
    }

    #[test]
    fn enable_follows_also_and_skips_missing_also() {
        let root = rootfs();
        let made = enable(root.path(), &["systemd-networkd.service".into()]).unwrap();
        assert_eq!(made.len(), 3, "{made:?}");
        let link = root
            .path()
            .join("etc/systemd/system/sockets.target.wants/systemd-networkd.socket");
        assert_eq!(
            std::fs::read_link(link).unwrap(),
            PathBuf::from("/usr/lib/systemd/system/systemd-networkd.socket")
        );
    }

    #[test]
    fn enable_instances_and_errors() {
        let root = rootfs();
        enable(root.path(), &["t@x.service".into()]).unwrap();
        assert!(
            root.path()
                .join("etc/systemd/system/multi-user.target.wants/t@x.service")
                .is_symlink()
        );
        let msg = enable(root.path(), &["t@.service".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("without an instance"), "{msg}");
        let msg = enable(root.path(), &["nope.service".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("cannot enable nope.service"), "{msg}");
        let msg = enable(root.path(), &["static.service".into()])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no [Install] section"), "{msg}");
    }
}
