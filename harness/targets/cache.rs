//! The build cache: content keys, the cache folder, and filling an entry atomically
//! under a per-key file lock.
//!
//! Layout under the cache root (`$COLDBOOT_CACHE_DIR`, else `~/.cache/coldboot`):
//! `rootfs/KEY/` (stage 1: `rootfs.tar`), `images/KEY/` (stage 2: `disk.qcow2`, `vmlinuz`,
//! `initrd.img`), each with `meta.json` and `build.log`; `locks/KIND-KEY.lock`. An entry
//! is built in `KIND/.tmp-KEY-*` and renamed into place, so it is either whole or absent.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::infra;

// The cache root is also where vm/ keeps its owner index, so it is found below both.
pub use crate::dirs::cache_root;
// Integrity checks an entry below the cache, so the entry's file names and the file
// checksum live there.
pub use super::integrity::{META_FILE, USED_FILE, sha256_file};

/// Bumped whenever the builder changes what it puts in an image; part of every key.
pub const BUILDER_VERSION: &str = "coldboot-debian-builder/1";

/// The Debian mirror used when `COLDBOOT_DEBIAN_MIRROR` is not set.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The two kinds of cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Stage 1: the mmdebstrap tarball.
    Rootfs,
    /// Stage 2: the bootable image.
    Image,
}

impl Kind {
    /// The folder its entries live in under the cache root (`rootfs`, `images`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Kind::Rootfs => "rootfs",
            Kind::Image => "images",
        }
    }
}

/// Feeds length-prefixed fields into SHA-256, so `["ab","c"]` and `["a","bc"]` differ.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn new(domain: &str) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.field(domain.as_bytes());
        h.field(BUILDER_VERSION.as_bytes());
        h
    }
    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }
    fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Stage-1 key: builder version, suite, the package set (sorted, deduplicated) and mirror.
pub fn rootfs_key(suite: &str, packages: &[String], mirror: &str) -> String {
    let mut sorted: Vec<&String> = packages.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut h = KeyHasher::new("rootfs");
    h.field(suite.as_bytes());
    h.field(&(sorted.len() as u64).to_le_bytes());
    for p in sorted {
        h.field(p.as_bytes());
    }
    h.field(mirror.as_bytes());
    h.finish()
}

/// One entry of a recipe folder, as it enters the image key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeEntry {
    /// Path relative to the recipe folder, with `/` separators.
    pub rel: String,
    /// Permission bits plus the file type bits.
    pub mode: u32,
    /// File content, or the link target for a symlink, empty for a directory.
    pub content: Vec<u8>,
}

/// Stage-2 key: the stage-1 key, every recipe entry, and the fully resolved variants.
pub fn image_key(
    rootfs: &str,
    entries: &[RecipeEntry],
    variants: &BTreeMap<String, String>,
) -> String {
    let mut sorted: Vec<&RecipeEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.rel.cmp(&b.rel));
    // image/2: an entry also keeps the image's unit folders (`units/`).
    // image/3: the adapter installs the run's host key from fw_cfg.
    // image/4: the adapter's own files and units are in the key, so any change to them
    // (the recorder, for one) makes a new image instead of reusing a stale one.
    let mut h = KeyHasher::new("image/4");
    h.field(rootfs.as_bytes());
    for f in super::adapter::adapter_files() {
        h.field(f.path.as_bytes());
        h.field(&f.mode.to_le_bytes());
        h.field(f.content.as_bytes());
    }
    for u in super::adapter::ENABLED_UNITS
        .iter()
        .chain(super::adapter::MASKED_UNITS.iter())
    {
        h.field(u.as_bytes());
    }
    h.field(&(sorted.len() as u64).to_le_bytes());
    for e in sorted {
        h.field(e.rel.as_bytes());
        h.field(&e.mode.to_le_bytes());
        h.field(&e.content);
    }
    h.field(&(variants.len() as u64).to_le_bytes());
    for (k, v) in variants {
        h.field(k.as_bytes());
        h.field(v.as_bytes());
    }
    h.finish()
}

/// Read every entry under a recipe folder (files, directories, symlinks; not followed).
pub fn recipe_entries(dir: &Path) -> anyhow::Result<Vec<RecipeEntry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let read = std::fs::read_dir(&full).map_err(|e| {
            crate::error::usage(format!("cannot read recipe folder {}: {e}", full.display()))
        })?;
        for item in read {
            let item = item?;
            let rel = rel.join(item.file_name());
            let meta = std::fs::symlink_metadata(item.path())?;
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(item.path())?
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                stack.push(rel.clone());
                Vec::new()
            } else {
                std::fs::read(item.path())?
            };
            out.push(RecipeEntry {
                rel: rel.to_string_lossy().into_owned(),
                mode: meta.permissions().mode(),
                content,
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// The folder of one entry.
pub fn entry_dir(root: &Path, kind: Kind, key: &str) -> PathBuf {
    root.join(kind.dir_name()).join(key)
}

/// The lock a build of the entry holds (and `coldboot gc --images` while it removes it).
pub fn lock_path(root: &Path, kind: Kind, key: &str) -> PathBuf {
    root.join("locks")
        .join(format!("{}-{key}.lock", kind.dir_name()))
}

/// Whether an entry is complete (the hot path: one stat, no hashing).
pub fn is_complete(entry: &Path) -> bool {
    entry.join(META_FILE).is_file()
}

/// Return the entry for `key`, filling it with `fill(tmp_dir)` if absent. `fill` must write
/// everything, including `meta.json`, into `tmp_dir`; the folder is then renamed into place.
/// The returned flag is true when the entry already existed (no build work was done here).
pub async fn get_or_fill<F, Fut>(
    root: &Path,
    kind: Kind,
    key: &str,
    fill: F,
) -> anyhow::Result<(PathBuf, bool)>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let entry = entry_dir(root, kind, key);
    if is_complete(&entry) {
        match super::integrity::verify(&entry) {
            Ok(()) => {
                mark_used(&entry);
                return Ok((entry, true));
            }
            Err(why) => report_damaged(&entry, &why),
        }
    }
    let kind_dir = root.join(kind.dir_name());
    let locks = root.join("locks");
    for d in [&kind_dir, &locks] {
        std::fs::create_dir_all(d)
            .map_err(|e| infra(format!("cannot create cache folder {}: {e}", d.display())))?;
    }
    let _lock = lock(&lock_path(root, kind, key)).await?;
    if is_complete(&entry) && super::integrity::verify(&entry).is_ok() {
        // Another process built (or rebuilt) it while we waited.
        mark_used(&entry);
        return Ok((entry, true));
    }
    remove_stale(&kind_dir, &entry, key);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{key}-"))
        .tempdir_in(&kind_dir)
        .map_err(|e| {
            infra(format!(
                "cannot create a build folder in {}: {e}",
                kind_dir.display()
            ))
        })?;
    if let Err(e) = fill(tmp.path().to_path_buf()).await {
        let log = tmp.path().join("build.log");
        let kept = kind_dir.join(format!("{key}.failed.log"));
        let _ = std::fs::copy(&log, &kept);
        return Err(e);
    }
    if !is_complete(tmp.path()) {
        return Err(infra(format!("build of {key} wrote no {META_FILE}")));
    }
    super::integrity::record(tmp.path()).map_err(|e| {
        infra(format!(
            "cannot record the checksums of the new entry {key}: {e:#}"
        ))
    })?;
    let built = tmp.keep();
    std::fs::rename(&built, &entry).map_err(|e| {
        infra(format!(
            "cannot move {} to {}: {e}",
            built.display(),
            entry.display()
        ))
    })?;
    mark_used(&entry);
    Ok((entry, false))
}

/// Stamp `entry` as used now, for `coldboot gc --images` (`targets::evict`). A cache that
/// cannot be written (read-only, shared) keeps its older stamp: that only makes the entry
/// look older to gc.
pub fn mark_used(entry: &Path) {
    let path = entry.join(USED_FILE);
    let stamped = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = stamped {
        tracing::debug!("cannot stamp {} as used: {e}", path.display());
    }
}

/// Say that a cache entry is damaged and will be rebuilt (never booted).
fn report_damaged(entry: &Path, why: &str) {
    eprintln!(
        "warning: cache entry {} is damaged ({why}); rebuilding it",
        entry.display()
    );
}

/// Take the exclusive lock on `path`, waiting on a blocking thread.
async fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| infra(format!("cannot open cache lock {}: {e}", path.display())))?;
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await?
        .map_err(|e| infra(format!("cannot lock {shown}: {e}")))
}

/// Remove leftovers of builds of `key` that died (we hold its lock, so none is running),
/// and an incomplete entry folder.
fn remove_stale(kind_dir: &Path, entry: &Path, key: &str) {
    let prefix = format!(".tmp-{key}-");
    if let Ok(read) = std::fs::read_dir(kind_dir) {
        for item in read.flatten() {
            if item.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(item.path());
            }
        }
    }
    if entry.exists() {
        let _ = std::fs::remove_dir_all(entry);
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
