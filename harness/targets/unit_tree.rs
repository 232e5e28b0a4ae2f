//! Reading a root filesystem's unit folders into [`UnitSources`], as systemd's unit
//! search path (`systemd.unit(5)`) finds them: `/etc/systemd/system` over
//! `/run/systemd/system` over `/lib/systemd/system` and `/usr/lib/systemd/system`. A unit
//! file in a higher folder hides the same name below; drop-ins from every folder apply,
//! in file-name order, a higher folder's file hiding a lower one of the same name.
//! Symlinks are resolved inside the root, never on the host.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::usage;
use crate::guest::systemd::sources::UnitSources;

/// The unit folders, highest precedence first, relative to the root.
pub const UNIT_DIRS: [&str; 4] = [
    "etc/systemd/system",
    "run/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
];

/// Unit file suffixes systemd loads.
const SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".target",
    ".timer",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
];

fn is_unit_name(n: &str) -> bool {
    SUFFIXES.iter().any(|s| n.len() > s.len() && n.ends_with(s))
}

/// Read the unit folders under `root`.
pub fn load(root: &Path) -> anyhow::Result<UnitSources> {
    if !root.is_dir() {
        return Err(usage(format!(
            "{}: no such unit tree (a folder with etc/systemd/system, lib/systemd/system...)",
            root.display()
        )));
    }
    let mut src = UnitSources::default();
    let mut dropins: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut seen_dirs = Vec::new();
    for rel in UNIT_DIRS {
        let Some(dir) = inside(root, &root.join(rel)) else {
            continue;
        };
        // /lib is a link to /usr/lib on merged-/usr systems: read each folder once.
        if !dir.is_dir() || seen_dirs.contains(&dir) {
            continue;
        }
        seen_dirs.push(dir.clone());
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| usage(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // Folders are looked into only through the root: a link never reaches the host.
            let real = inside(root, &path);
            let real_dir = real.as_ref().filter(|p| p.is_dir());
            if let Some(unit) = name.strip_suffix(".d") {
                if is_unit_name(unit)
                    && let Some(real) = real_dir
                {
                    for (file, text) in conf_files(root, real)? {
                        dropins
                            .entry(unit.to_string())
                            .or_default()
                            .entry(file)
                            .or_insert(text);
                    }
                }
                continue;
            }
            for (suffix, links) in [
                (".wants", &mut src.wants),
                (".requires", &mut src.requires),
                (".upholds", &mut src.upholds),
            ] {
                if let Some(unit) = name.strip_suffix(suffix)
                    && is_unit_name(unit)
                    && let Some(real) = real_dir
                {
                    for linked in listing(real)? {
                        links.insert((unit.to_string(), linked));
                    }
                }
            }
            if !is_unit_name(&name) || src.files.contains_key(&name) || src.masked.contains(&name) {
                continue;
            }
            match std::fs::read_link(&path) {
                Ok(target) => {
                    if target == Path::new("/dev/null") {
                        src.masked.insert(name);
                        continue;
                    }
                    let target_name = target
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if target_name != name && is_unit_name(&target_name) {
                        src.aliases.entry(name).or_insert(target_name);
                    } else if let Some(real) = resolve_link(root, &path)
                        && let Ok(text) = std::fs::read_to_string(&real)
                    {
                        src.files.insert(name, text);
                    }
                }
                Err(_) => {
                    if let Ok(text) = std::fs::read_to_string(&path) {
                        src.files.insert(name, text);
                    }
                }
            }
        }
    }
    src.dropins = dropins
        .into_iter()
        .map(|(u, files)| (u, files.into_iter().collect()))
        .collect();
    Ok(src)
}

/// `*.conf` files of a drop-in folder, by name.
fn conf_files(root: &Path, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for name in listing(dir)? {
        if !name.ends_with(".conf") {
            continue;
        }
        if let Some(real) = resolve_link(root, &dir.join(&name))
            && let Ok(text) = std::fs::read_to_string(real)
        {
            out.push((name, text));
        }
    }
    Ok(out)
}

fn listing(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| usage(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Follow `path`'s symlinks with the guest's `/` at `root`; `None` if it leaves the root
/// or loops.
fn resolve_link(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        match std::fs::read_link(&current) {
            Ok(target) => {
                let next = if target.is_absolute() {
                    root.join(target.strip_prefix("/").ok()?)
                } else {
                    current.parent()?.join(target)
                };
                current = inside(root, &next)?;
            }
            Err(_) => return Some(current),
        }
    }
    None
}

/// `path` with its folder links resolved inside `root` (so `lib` → `usr/lib` works)
/// and `..` removed; `None` if it would leave the root.
pub(crate) fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    inside_at(root, path, 0)
}

fn inside_at(root: &Path, path: &Path, depth: u32) -> Option<PathBuf> {
    if depth > 16 {
        return None;
    }
    let rel = path.strip_prefix(root).ok()?;
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                out.push(part);
                if let Ok(target) = std::fs::read_link(&out) {
                    let next = if target.is_absolute() {
                        root.join(target.strip_prefix("/").ok()?)
                    } else {
                        out.parent()?.join(target)
                    };
                    out = inside_at(root, &next, depth + 1)?;
                }
            }
            Component::ParentDir => {
                if out == root {
                    return None;
                }
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn precedence_aliases_masks_dropins_and_wants() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        write(
            r,
            "usr/lib/systemd/system/a.service",
            "[Unit]\nAfter=low.service\n",
        );
        write(
            r,
            "etc/systemd/system/a.service",
            "[Unit]\nAfter=high.service\n",
        );
        write(r, "usr/lib/systemd/system/multi-user.target", "[Unit]\n");
        symlink(
            "/lib/systemd/system/multi-user.target",
            r.join("usr/lib/systemd/system/default.target"),
        )
        .unwrap();
        symlink("/dev/null", r.join("etc/systemd/system/m.service")).unwrap();
        write(
            r,
            "usr/lib/systemd/system/a.service.d/10-x.conf",
            "[Unit]\nAfter=x.service\n",
        );
        write(
            r,
            "etc/systemd/system/a.service.d/10-x.conf",
            "[Unit]\nAfter=y.service\n",
        );
        std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        symlink(
            "/etc/systemd/system/a.service",
            r.join("etc/systemd/system/multi-user.target.wants/a.service"),
        )
        .unwrap();
        std::fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.upholds")).unwrap();
        symlink(
            "../a.service",
            r.join("etc/systemd/system/multi-user.target.upholds/a.service"),
        )
        .unwrap();
        // A link that would leave the root is not followed.
        symlink(
            "/../../etc/passwd",
            r.join("etc/systemd/system/evil.service"),
        )
        .unwrap();

        let src = load(r).unwrap();
        assert!(src.files["a.service"].contains("high.service"));
        assert_eq!(src.canonical("default.target"), "multi-user.target");
        assert!(src.masked.contains("m.service"));
        assert_eq!(src.dropins["a.service"].len(), 1);
        assert!(src.dropins["a.service"][0].1.contains("y.service"));
        assert!(
            src.wants
                .contains(&("multi-user.target".to_string(), "a.service".to_string()))
        );
        assert_eq!(
            src.upholds,
            [("multi-user.target".to_string(), "a.service".to_string())].into()
        );
        assert!(!src.files.contains_key("evil.service"));
        assert!(!src.wants.iter().any(|(_, u)| u == "host.service"));
    }
}
