//! Evicting cache entries that no run used for a while (`coldboot gc --images`).
//!
//! Every key change (a recipe, the adapter, the recorder) makes new entries, and nothing
//! removed the old ones: one developer's cache reached 48 GB and filled a disk. Each use
//! of an entry stamps it ([`cache::mark_used`], the mtime of its `used` file); an entry is
//! removed only when that stamp is older than the limit, no live VM's overlay is backed
//! by its disk, and no build holds its lock. The choice is [`to_evict`], pure.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::cache::{self, Kind, META_FILE, USED_FILE};

/// The shortest `--unused-for`: a run resolves its image before its VM's overlay exists,
/// so a shorter limit could remove an image between the two.
pub const SHORTEST: Duration = Duration::from_secs(3600);

/// One complete cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its folder.
    pub dir: PathBuf,
    /// Its kind.
    pub kind: Kind,
    /// When a run last used it (its `used` stamp, else when it was built).
    pub last_used: SystemTime,
    /// The disk space its files take.
    pub bytes: u64,
}

/// The entries of `kind` under the cache root `root`, complete ones only (a build in
/// progress is a `.tmp-` folder, never listed).
pub fn entries(root: &Path, kind: Kind) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(root.join(kind.dir_name())) else {
        return Vec::new();
    };
    let mut out: Vec<Entry> = read
        .flatten()
        .map(|item| item.path())
        .filter(|p| p.is_dir() && cache::is_complete(p))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|p| Entry {
            last_used: last_used(&p),
            bytes: disk_bytes(&p),
            kind,
            dir: p,
        })
        .collect();
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

/// The entry's `used` stamp, else its `meta.json`'s time (written when it was built).
fn last_used(dir: &Path) -> SystemTime {
    [USED_FILE, META_FILE]
        .iter()
        .find_map(|f| {
            std::fs::metadata(dir.join(f))
                .and_then(|m| m.modified())
                .ok()
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The space the folder's files take on disk (allocated blocks: images are sparse).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|read| {
            read.flatten()
                .filter_map(|f| f.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// The entries to remove: unused for at least `unused_for` by `now`, and holding no file
/// that a live VM's overlay is backed by (`in_use`).
pub fn to_evict<'a>(
    entries: &'a [Entry],
    now: SystemTime,
    unused_for: Duration,
    in_use: &[PathBuf],
) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| {
            now.duration_since(e.last_used)
                .is_ok_and(|idle| idle >= unused_for)
        })
        .filter(|e| !in_use.iter().any(|f| f.starts_with(&e.dir)))
        .collect()
}

/// Remove (or, with `dry_run`, only list) the entries of both kinds that [`to_evict`]
/// chooses, skipping any whose build lock is held. One line per entry, and a total.
pub fn evict(root: &Path, unused_for: Duration, in_use: &[PathBuf], dry_run: bool) -> Vec<String> {
    let now = SystemTime::now();
    let in_use: Vec<PathBuf> = in_use
        .iter()
        .map(|f| f.canonicalize().unwrap_or_else(|_| f.clone()))
        .collect();
    let mut lines = Vec::new();
    let mut freed = 0u64;
    for kind in [Kind::Image, Kind::Rootfs] {
        let all: Vec<Entry> = entries(root, kind)
            .into_iter()
            .map(|e| Entry {
                dir: e.dir.canonicalize().unwrap_or(e.dir.clone()),
                ..e
            })
            .collect();
        for e in to_evict(&all, now, unused_for, &in_use) {
            let idle = now.duration_since(e.last_used).unwrap_or_default();
            let what = format!(
                "{} ({}, last used {} ago)",
                e.dir.display(),
                size(e.bytes),
                ago(idle)
            );
            if dry_run {
                lines.push(format!("would remove {what}"));
                freed += e.bytes;
                continue;
            }
            let key = e.dir.file_name().map(|n| n.to_string_lossy().to_string());
            let lock = key.map(|k| cache::lock_path(root, e.kind, &k));
            // A build of the same key holds this lock while it rebuilds the entry.
            let held = lock
                .as_ref()
                .and_then(|l| std::fs::OpenOptions::new().write(true).open(l).ok());
            if let Some(f) = &held
                && f.try_lock().is_err()
            {
                lines.push(format!("kept {what}: a build holds its lock"));
                continue;
            }
            match std::fs::remove_dir_all(&e.dir) {
                Ok(()) => {
                    lines.push(format!("removed {what}"));
                    freed += e.bytes;
                }
                Err(err) => lines.push(format!("cannot remove {}: {err}", e.dir.display())),
            }
        }
    }
    let verb = if dry_run { "would free" } else { "freed" };
    lines.push(format!(
        "{verb} {} of cached images and root filesystems unused for {}",
        size(freed),
        ago(unused_for)
    ));
    lines
}

/// `1.4 GiB`, `310 MiB`.
fn size(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

/// `3 d 4 h`, `5 h`, `12 min`.
fn ago(d: Duration) -> String {
    let mins = d.as_secs() / 60;
    let (days, hours) = (mins / (24 * 60), mins / 60 % 24);
    match (days, hours) {
        (0, 0) => format!("{mins} min"),
        (0, h) => format!("{h} h"),
        (d, 0) => format!("{d} d"),
        (d, h) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dir: &str, idle_h: u64, now: SystemTime) -> Entry {
        Entry {
            dir: PathBuf::from(dir),
            kind: Kind::Image,
            last_used: now - Duration::from_secs(idle_h * 3600),
            bytes: 1 << 30,
        }
    }

    #[test]
    fn only_entries_unused_long_enough_and_backing_no_live_overlay_go() {
        let now = SystemTime::now();
        let all = [
            entry("/c/images/old", 200, now),
            entry("/c/images/recent", 2, now),
            entry("/c/images/old-but-booted", 300, now),
            entry("/c/images/just-at-the-limit", 168, now),
        ];
        let in_use = [PathBuf::from("/c/images/old-but-booted/disk.qcow2")];
        let gone: Vec<&str> = to_evict(&all, now, Duration::from_secs(168 * 3600), &in_use)
            .iter()
            .map(|e| e.dir.to_str().unwrap())
            .collect();
        assert_eq!(gone, ["/c/images/old", "/c/images/just-at-the-limit"]);
        // A stamp in the future (a clock set back) is never "unused".
        let ahead = [entry("/c/images/x", 0, now + Duration::from_secs(3600))];
        assert!(to_evict(&ahead, now, SHORTEST, &[]).is_empty());
    }

    #[test]
    fn a_cache_on_disk_is_listed_stamped_and_evicted() {
        let root = tempfile::tempdir().unwrap();
        let images = root.path().join("images");
        for key in ["aaa", "bbb", "ccc"] {
            let dir = images.join(key);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(META_FILE), "{}").unwrap();
            std::fs::write(dir.join("disk.qcow2"), vec![1u8; 8192]).unwrap();
        }
        // A build in progress and an incomplete entry are not entries.
        std::fs::create_dir_all(images.join(".tmp-ddd-1")).unwrap();
        std::fs::create_dir_all(images.join("eee")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
        for key in ["aaa", "bbb"] {
            let f = std::fs::File::options()
                .write(true)
                .open(images.join(key).join(META_FILE))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        // bbb was used just now; ccc was built just now; aaa is ten days old.
        cache::mark_used(&images.join("bbb"));
        let listed: Vec<String> = entries(root.path(), Kind::Image)
            .iter()
            .map(|e| e.dir.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(listed, ["aaa", "bbb", "ccc"]);
        let week = Duration::from_secs(7 * 24 * 3600);
        let dry = evict(root.path(), week, &[], true);
        assert!(
            dry[0].starts_with("would remove ") && dry[0].contains("aaa"),
            "{dry:?}"
        );
        assert_eq!(dry.len(), 2, "{dry:?}");
        assert!(images.join("aaa").exists(), "a dry run removed nothing");
        let done = evict(root.path(), week, &[], false);
        assert!(
            done[0].starts_with("removed ") && done[0].contains("last used 10 d ago"),
            "{done:?}"
        );
        assert!(!images.join("aaa").exists());
        for kept in ["bbb", "ccc", ".tmp-ddd-1", "eee"] {
            assert!(images.join(kept).exists(), "{kept}");
        }
    }
}
