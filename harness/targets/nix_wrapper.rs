//! Where the wrapper flake (the repository's `nix/` folder) is at run time.
//!
//! The binary carries its own copy of `nix/` (every file the flake reads, not the docs)
//! and writes it once into the cache as `nix/<hash>/`, so an installed `coldboot` needs
//! no checkout and evaluates the wrapper it was built with. `$COLDBOOT_NIX_DIR` points
//! at another copy instead (a patched wrapper, or a checkout being edited). Either way
//! the folder is a plain path flake: Nix copies the folder alone, which is why `nix/`
//! must hold everything its modules read.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{infra, usage};

/// Overrides the wrapper flake's folder.
pub const NIX_DIR_ENV: &str = "COLDBOOT_NIX_DIR";

/// One file of the wrapper: its path under `nix/`, its text, and whether it is executable.
#[derive(Debug, Clone, Copy)]
pub struct WrapperFile {
    /// Relative path under `nix/`.
    pub path: &'static str,
    /// The file's text as built into the binary.
    pub text: &'static str,
    /// Mode 0755 rather than 0644, as in the folder (the model's scripts are; the adapter's
    /// are run through a shell or perl).
    pub executable: bool,
}

macro_rules! file {
    ($path:literal, $exec:literal) => {
        WrapperFile {
            path: $path,
            text: include_str!(concat!("../../nix/", $path)),
            executable: $exec,
        }
    };
}

/// Every file of `nix/` that Nix reads. A test checks the list against the folder.
pub const WRAPPER_FILES: &[WrapperFile] = &[
    file!("flake.nix", false),
    file!("flake.lock", false),
    file!("lib/coldboot.nix", false),
    file!("lib/unit-texts.nix", false),
    file!("modules/ccci-model.nix", false),
    file!("modules/coldboot-guest.nix", false),
    file!("modules/coldboot-options.nix", false),
    file!("adapter/authorized-key", false),
    file!("adapter/host-key", false),
    file!("adapter/recorder", false),
    file!("model/usr/lib/ccci-model/consumer", true),
    file!("model/usr/lib/ccci-model/reconcile-proxy", true),
    file!("model/usr/local/bin/ccci-model-set-latest", true),
    file!("model/usr/share/ccci-model/dashboard/Caddyfile", false),
    file!("model/usr/share/ccci-model/dashboard/www/index.html", false),
    file!(
        "model/usr/share/ccci-model/recipes/broken-crash/Caddyfile",
        false
    ),
    file!(
        "model/usr/share/ccci-model/recipes/broken-silent/Caddyfile",
        false
    ),
    file!("model/usr/share/ccci-model/recipes/v1/Caddyfile", false),
    file!("model/usr/share/ccci-model/recipes/v2/Caddyfile", false),
];

/// Where the wrapper was found, for messages and the dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapperSource {
    /// `$COLDBOOT_NIX_DIR`.
    Env(PathBuf),
    /// The copy built into this binary, written into the cache.
    Embedded(PathBuf),
}

impl WrapperSource {
    /// The folder to name as the flake.
    pub fn dir(&self) -> &Path {
        match self {
            WrapperSource::Env(d) | WrapperSource::Embedded(d) => d,
        }
    }
}

/// The wrapper flake's folder: `$COLDBOOT_NIX_DIR` when set (it must hold `flake.nix`
/// and `flake.lock`), else the built-in copy under `cache_root/nix/`.
pub fn locate(cache_root: &Path) -> anyhow::Result<WrapperSource> {
    if let Some(dir) = std::env::var_os(NIX_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = std::path::absolute(PathBuf::from(&dir))
            .map_err(|e| usage(format!("{NIX_DIR_ENV}={}: {e}", dir.to_string_lossy())))?;
        check_dir(&dir)?;
        return Ok(WrapperSource::Env(dir));
    }
    Ok(WrapperSource::Embedded(materialize(cache_root)?))
}

/// A wrapper folder given by the user must be a copy of `nix/`, lock file included: a
/// missing lock would make every call resolve nixpkgs on the network.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    for needed in ["flake.nix", "flake.lock"] {
        if !dir.join(needed).is_file() {
            return Err(usage(format!(
                "{NIX_DIR_ENV}={}: there is no {needed} there. Point it at a copy of \
                 coldboot's nix/ folder (with its flake.lock), or unset it to use the \
                 wrapper built into coldboot",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The content hash that names the built-in copy's folder.
pub fn embedded_hash() -> String {
    let mut h = Sha256::new();
    h.update(b"coldboot-nix-wrapper/1");
    for f in WRAPPER_FILES {
        for part in [f.path.as_bytes(), f.text.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update([f.executable as u8]);
    }
    hex::encode(&h.finalize()[..10])
}

/// Write the built-in copy into `cache_root/nix/HASH/` once. A folder of that name is
/// complete: it is written elsewhere and renamed into place.
pub fn materialize(cache_root: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let parent = cache_root.join("nix");
    let dir = parent.join(embedded_hash());
    if dir.join("flake.nix").is_file() {
        return Ok(dir);
    }
    let fail = |what: String, e: std::io::Error| {
        infra(format!(
            "cannot write coldboot's NixOS wrapper flake into {}: {what}: {e}",
            parent.display()
        ))
    };
    std::fs::create_dir_all(&parent).map_err(|e| fail("creating the folder".into(), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&parent)
        .map_err(|e| fail("a staging folder".into(), e))?;
    for f in WRAPPER_FILES {
        let path = staging.path().join(f.path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| fail(f.path.into(), e))?;
        }
        std::fs::write(&path, f.text).map_err(|e| fail(f.path.into(), e))?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(f.path.into(), e))?;
    }
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &dir) {
        // Another run put the same content there first.
        let _ = std::fs::remove_dir_all(&staged);
        if !dir.join("flake.nix").is_file() {
            return Err(fail(format!("renaming into {}", dir.display()), e));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nix_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("nix")
    }

    fn files_under(dir: &Path, rel: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir.join(rel)).unwrap().flatten() {
            let rel = rel.join(e.file_name());
            if e.path().is_dir() {
                files_under(dir, &rel, out);
            } else {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }

    /// A file added to `nix/` and not to the list would be missing from the built-in
    /// copy, and Nix would fail on it only on a machine without a checkout.
    #[test]
    fn the_built_in_copy_is_the_whole_folder_but_its_docs() {
        let mut on_disk = Vec::new();
        files_under(&nix_dir(), Path::new(""), &mut on_disk);
        on_disk.retain(|p| !p.ends_with(".md"));
        on_disk.sort();
        let mut listed: Vec<String> = WRAPPER_FILES.iter().map(|f| f.path.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk);
        for f in WRAPPER_FILES {
            let mode = std::fs::metadata(nix_dir().join(f.path))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111 != 0, f.executable, "{}: mode {mode:o}", f.path);
        }
    }

    #[test]
    fn materialized_once_with_the_same_files_and_modes() {
        let cache = tempfile::tempdir().unwrap();
        let dir = materialize(cache.path()).unwrap();
        assert_eq!(dir, cache.path().join("nix").join(embedded_hash()));
        for f in WRAPPER_FILES {
            let path = dir.join(f.path);
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                f.text,
                "{}",
                f.path
            );
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if f.executable { 0o755 } else { 0o644 });
        }
        // A second call reuses it, and leaves no staging folder behind.
        std::fs::write(dir.join("marker"), "kept").unwrap();
        assert_eq!(materialize(cache.path()).unwrap(), dir);
        assert!(dir.join("marker").exists());
        let entries: Vec<_> = std::fs::read_dir(cache.path().join("nix"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }

    #[test]
    fn a_user_folder_without_the_lock_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("flake.nix"), "{ }").unwrap();
        let e = check_dir(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("no flake.lock there") && e.contains(NIX_DIR_ENV),
            "{e}"
        );
        std::fs::write(d.path().join("flake.lock"), "{ }").unwrap();
        check_dir(d.path()).unwrap();
        let e = check_dir(&d.path().join("absent")).unwrap_err().to_string();
        assert!(e.contains("no flake.nix there"), "{e}");
    }
}
