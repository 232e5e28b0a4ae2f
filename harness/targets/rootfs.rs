//! Writing into an unpacked guest root filesystem from the host without escaping it.
//!
//! A guest has absolute symlinks such as `/var/run -> /run`; following one on the host
//! would write into the host's `/run`. [`guest_path`] resolves every directory component
//! inside the rootfs instead, and callers replace (never follow) the final component.

use std::path::{Component, Path, PathBuf};

use crate::error::infra;

/// More link hops than this means a loop.
const MAX_HOPS: usize = 40;

/// The host path for guest path `guest` in the rootfs at `root`. Symlinks among the
/// directory components are resolved within the rootfs; the last component is not followed.
pub fn guest_path(root: &Path, guest: &str) -> anyhow::Result<PathBuf> {
    let parts: Vec<String> = guest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(root.to_path_buf());
    };
    let mut resolved: Vec<String> = Vec::new();
    let mut queue: Vec<String> = dirs.iter().rev().cloned().collect();
    let mut hops = 0;
    while let Some(part) = queue.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let here = root.join(resolved.join("/")).join(&part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(infra(format!(
                        "too many symlinks resolving {guest} in {}",
                        root.display()
                    )));
                }
                let target = std::fs::read_link(&here)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let comps: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                queue.extend(comps.into_iter().rev());
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    for p in resolved.iter().chain(std::iter::once(last)) {
        out.push(p);
    }
    Ok(out)
}

/// Copy a recipe's `overlay/` tree onto the rootfs: modes kept, files and symlinks
/// replaced, existing directories left with the rootfs's own mode (so `overlay/root`
/// does not loosen `/root`). Ownership is the builder's (root).
pub fn copy_overlay(overlay: &Path, root: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut copied = 0;
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let src_dir = overlay.join(rel.trim_start_matches('/'));
        let mut items: Vec<_> = std::fs::read_dir(&src_dir)?.flatten().collect();
        items.sort_by_key(|i| i.file_name());
        for item in items {
            let name = item.file_name().to_string_lossy().into_owned();
            let guest = format!("{rel}/{name}");
            let meta = std::fs::symlink_metadata(item.path())?;
            let dest = guest_path(root, &guest)?;
            let mode = std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777);
            if meta.is_dir() {
                match std::fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {} // e.g. /lib -> usr/lib: resolved below
                    _ => {
                        std::fs::create_dir_all(&dest)?;
                        std::fs::set_permissions(&dest, mode)?;
                    }
                }
                stack.push(guest);
                continue;
            }
            if std::fs::symlink_metadata(&dest).is_ok() {
                std::fs::remove_file(&dest).map_err(|e| {
                    infra(format!(
                        "overlay {guest}: cannot replace {}: {e}",
                        dest.display()
                    ))
                })?;
            }
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(item.path())?, &dest)?;
            } else {
                std::fs::copy(item.path(), &dest)?;
                std::fs::set_permissions(&dest, mode)?;
            }
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn guest() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(r.join("run")).unwrap();
        std::fs::create_dir_all(r.join("var")).unwrap();
        std::fs::create_dir_all(r.join("root")).unwrap();
        std::fs::set_permissions(r.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/run", r.join("var/run")).unwrap();
        root
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let root = guest();
        let r = root.path();
        assert_eq!(
            guest_path(r, "/var/run/x.pid").unwrap(),
            r.join("run/x.pid")
        );
        assert_eq!(
            guest_path(r, "/lib/systemd/x").unwrap(),
            r.join("usr/lib/systemd/x")
        );
        assert_eq!(
            guest_path(r, "/../../etc/passwd").unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            guest_path(r, "/var/run").unwrap(),
            r.join("var/run"),
            "last part not followed"
        );
    }

    #[test]
    fn link_loops_are_errors() {
        let root = guest();
        symlink("/a", root.path().join("a")).unwrap();
        assert!(guest_path(root.path(), "/a/x").is_err());
    }

    #[test]
    fn overlay_keeps_modes_and_replaces_files() {
        let root = guest();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        symlink("/run/resolv.conf", r.join("etc/resolv.conf")).unwrap();
        let ov = tempfile::tempdir().unwrap();
        let o = ov.path();
        std::fs::create_dir_all(o.join("etc")).unwrap();
        std::fs::create_dir_all(o.join("root/.ssh")).unwrap();
        std::fs::create_dir_all(o.join("lib/systemd/system")).unwrap();
        std::fs::write(o.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        std::fs::write(o.join("lib/systemd/system/a.service"), "[Unit]\n").unwrap();
        std::fs::write(o.join("root/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(o.join("root/tool"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::fs::set_permissions(o.join("root"), std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("tool", o.join("root/link")).unwrap();

        assert_eq!(copy_overlay(o, r).unwrap(), 4);
        let mode = |p: &str| {
            std::fs::symlink_metadata(r.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(
            std::fs::read_to_string(r.join("etc/resolv.conf")).unwrap(),
            "nameserver 1.1.1.1\n"
        );
        assert!(
            !r.join("run/resolv.conf").exists(),
            "the old link was replaced, not followed"
        );
        assert!(r.join("usr/lib/systemd/system/a.service").is_file());
        assert_eq!(mode("root/tool"), 0o750);
        assert_eq!(mode("root"), 0o700, "existing directory keeps its mode");
        assert_eq!(
            std::fs::read_link(r.join("root/link")).unwrap(),
            PathBuf::from("tool")
        );
    }
}
