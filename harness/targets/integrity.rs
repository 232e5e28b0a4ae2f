//! Checksums of a cache entry's files, recorded when the entry is built and checked
//! before it is used, so a damaged entry (a truncated qcow2, a half-written rootfs
//! tarball, a flipped byte) is rebuilt and reported, never booted.
//!
//! `checksums.json` holds, per top-level file of the entry, its size, modification time
//! and SHA-256. Checking stats each file and hashes again only a file whose size or
//! modification time differs from the record, so a warm resolve costs a few `stat`s;
//! a file whose content is unchanged (merely touched) gets its record refreshed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::infra;

/// The file whose presence marks a complete entry.
pub const META_FILE: &str = "meta.json";

/// The file whose mtime says when a run last used the entry (see `cache::mark_used`).
pub const USED_FILE: &str = "used";

/// The record beside `meta.json`.
pub const CHECKSUMS_FILE: &str = "checksums.json";

/// Files that describe the entry rather than make it up.
const NOT_CONTENT: &[&str] = &[META_FILE, CHECKSUMS_FILE, "build.log", USED_FILE];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

type Sums = BTreeMap<String, FileSum>;

fn stat(path: &Path) -> std::io::Result<(u64, u128)> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

fn sum(path: &Path) -> anyhow::Result<FileSum> {
    let (size, mtime_ns) = stat(path)?;
    Ok(FileSum {
        size,
        mtime_ns,
        sha256: sha256_file(path)?,
    })
}

fn content_files(entry: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(entry)? {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if item.file_type()?.is_file() && !NOT_CONTENT.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn write(entry: &Path, sums: &Sums) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(sums)?;
    bytes.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(entry)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    // Readable like the rest of the entry (a temporary file is made 0600).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(entry.join(CHECKSUMS_FILE))?;
    Ok(())
}

/// Hash every top-level file of a freshly built entry and record the sums.
pub fn record(entry: &Path) -> anyhow::Result<()> {
    let mut sums = Sums::new();
    for name in content_files(entry)? {
        sums.insert(name.clone(), sum(&entry.join(&name))?);
    }
    write(entry, &sums)
}

/// Check a complete entry against its record. `Err` says what is damaged. An entry
/// built before checksums were recorded is hashed once and recorded as it is.
pub fn verify(entry: &Path) -> Result<(), String> {
    let path = entry.join(CHECKSUMS_FILE);
    let sums: Sums = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is unreadable: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Err(e) = record(entry) {
                tracing::warn!("cannot record the checksums of {}: {e:#}", entry.display());
            }
            return Ok(());
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut refreshed = sums.clone();
    for (name, want) in &sums {
        let file = entry.join(name);
        let (size, mtime_ns) = stat(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        if size == want.size && mtime_ns == want.mtime_ns {
            continue;
        }
        if size != want.size {
            return Err(format!(
                "{} is {size} bytes, {} when it was built",
                file.display(),
                want.size
            ));
        }
        let got = sha256_file(&file).map_err(|e| format!("{e:#}"))?;
        if got != want.sha256 {
            return Err(format!(
                "{} has sha256 {got}, {} when it was built",
                file.display(),
                want.sha256
            ));
        }
        refreshed.insert(
            name.clone(),
            FileSum {
                mtime_ns,
                ..want.clone()
            },
        );
    }
    if refreshed != sums {
        // Touched but unchanged: the next check is a stat again.
        let _ = write(entry, &refreshed);
    }
    Ok(())
}

/// SHA-256 of a file, streamed (used once per build, never on a cache hit).
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| infra(format!("cannot open {}: {e}", path.display())))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("disk.qcow2"), vec![7u8; 4096]).unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.path().join(super::META_FILE), b"{}").unwrap();
        dir
    }

    #[test]
    fn an_intact_entry_verifies_and_a_touched_one_too() {
        let e = entry();
        record(e.path()).unwrap();
        assert_eq!(verify(e.path()), Ok(()));
        let f = std::fs::File::options()
            .write(true)
            .open(e.path().join("vmlinuz"))
            .unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        assert_eq!(verify(e.path()), Ok(()));
    }

    #[test]
    fn truncation_and_a_changed_byte_are_caught() {
        let e = entry();
        record(e.path()).unwrap();
        let disk = e.path().join("disk.qcow2");
        std::fs::write(&disk, vec![7u8; 1000]).unwrap();
        let why = verify(e.path()).unwrap_err();
        assert!(
            why.contains("is 1000 bytes, 4096 when it was built"),
            "{why}"
        );

        record(e.path()).unwrap();
        let mut bytes = std::fs::read(&disk).unwrap();
        bytes[10] = 8;
        std::fs::write(&disk, bytes).unwrap();
        let why = verify(e.path()).unwrap_err();
        assert!(why.contains("has sha256"), "{why}");
    }

    #[test]
    fn a_missing_file_is_caught_and_an_old_entry_is_recorded_on_first_use() {
        let e = entry();
        assert_eq!(verify(e.path()), Ok(()), "no record yet: taken as it is");
        assert!(e.path().join(CHECKSUMS_FILE).is_file());
        std::fs::remove_file(e.path().join("vmlinuz")).unwrap();
        assert!(verify(e.path()).unwrap_err().contains("vmlinuz"));
    }
}
