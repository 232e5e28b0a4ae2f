//! Where the harness keeps its files on this host. The image cache (`targets::cache`)
//! and the VM owner index (`vm::owner`) both live under the cache root.

use std::path::{Path, PathBuf};

use crate::error::infra;

/// The cache root: an explicit override, else `$COLDBOOT_CACHE_DIR`, else the user cache dir.
pub fn cache_root(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("COLDBOOT_CACHE_DIR").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    directories::BaseDirs::new()
        .map(|d| d.cache_dir().join("coldboot"))
        .ok_or_else(|| infra("no cache directory: set COLDBOOT_CACHE_DIR or HOME"))
}
