//! The two-stage image build. Stage 1 (slow, about a minute): mmdebstrap makes a rootfs
//! tarball, cached by (builder version, suite, packages, mirror). Stage 2 (seconds):
//! unpack, overlay, adapter, variant files, enabled units, `mkfs.ext4 -d`, qcow2, and the
//! kernel and initrd from the image's own `/boot`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::error::infra;
use crate::targets::cache::{self, Kind, META_FILE};
use crate::targets::recipe::Recipe;
use crate::targets::{Progress, adapter, rootfs, tool, units};

/// File names inside an image entry.
pub const DISK_FILE: &str = "disk.qcow2";
/// The kernel copied from the image's `/boot`.
pub const KERNEL_FILE: &str = "vmlinuz";
/// The initrd copied from the image's `/boot`.
pub const INITRD_FILE: &str = "initrd.img";
/// Stage 1's output.
pub const ROOTFS_TAR: &str = "rootfs.tar";
/// Each entry's log of every tool run.
pub const BUILD_LOG: &str = "build.log";

/// What a stage-1 entry records about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsMeta {
    /// The stage-1 key.
    pub key: String,
    /// The builder that made it.
    pub builder_version: String,
    /// Debian suite.
    pub suite: String,
    /// Packages, sorted.
    pub packages: Vec<String>,
    /// The mirror used.
    pub mirror: String,
    /// How long mmdebstrap took.
    pub build_secs: f64,
}

/// What a stage-2 entry records about itself; read back on every cache hit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    /// The stage-2 key (the image id).
    pub key: String,
    /// The stage-1 key it was built from.
    pub rootfs_key: String,
    /// The builder that made it.
    pub builder_version: String,
    /// The recipe folder it was built from (absolute, for humans; not part of the key).
    pub recipe_dir: PathBuf,
    /// The fully resolved variants.
    pub variants: BTreeMap<String, String>,
    /// SHA-256 of `disk.qcow2`, computed once when it was built.
    pub disk_sha256: String,
    /// The kernel release found in `/boot` (such as `6.1.0-50-cloud-amd64`).
    pub kernel_release: String,
    /// Size of the ext4 filesystem in bytes.
    pub disk_size_bytes: u64,
    /// Seconds spent in stage 2 (stage 1 is recorded in its own entry).
    pub build_secs: f64,
    /// When it was built (seconds since the Unix epoch).
    pub built_at_unix: u64,
}

/// Stage-1 inputs that are not in the recipe.
pub struct Stage1<'a> {
    /// Cache root.
    pub cache: &'a Path,
    /// Debian mirror.
    pub mirror: &'a str,
    /// Progress sink.
    pub progress: &'a Progress,
}

/// Fail early, with the reason, when not root: unpacking the tarball must keep file
/// ownership (root-owned /etc, setuid bits, per-service users), because `mkfs.ext4 -d`
/// copies ownership from the files as they are on the host.
pub fn require_root() -> anyhow::Result<()> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(infra(
            "building a recipe image needs root: the root filesystem is unpacked with its owners \
             kept (root-owned system files, service users), because mkfs.ext4 -d copies ownership \
             from the unpacked files; run as root, or use a prebuilt image: target",
        ))
    }
}

/// Make sure the stage-1 tarball exists; returns (tarball, key, cache hit).
pub async fn ensure_rootfs(
    recipe: &Recipe,
    s: &Stage1<'_>,
) -> anyhow::Result<(PathBuf, String, bool)> {
    let key = cache::rootfs_key(&recipe.suite, &recipe.packages, s.mirror);
    let key_ref = &key;
    let (entry, hit) = cache::get_or_fill(s.cache, Kind::Rootfs, &key, |tmp| async move {
        require_root()?;
        s.progress.report(&format!(
            "building the {} root filesystem with mmdebstrap (about a minute)",
            recipe.suite
        ));
        let started = Instant::now();
        let mut packages = recipe.packages.clone();
        packages.sort();
        packages.dedup();
        let log = tmp.join(BUILD_LOG);
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--variant=apt")
            .arg(format!("--include={}", packages.join(",")))
            .arg(&recipe.suite)
            .arg(tmp.join(ROOTFS_TAR))
            .arg(s.mirror);
        tool::run("mmdebstrap", &mut cmd, &log).await?;
        let meta = RootfsMeta {
            key: key_ref.clone(),
            builder_version: cache::BUILDER_VERSION.into(),
            suite: recipe.suite.clone(),
            packages,
            mirror: s.mirror.into(),
            build_secs: started.elapsed().as_secs_f64(),
        };
        write_json(&tmp.join(META_FILE), &meta)
    })
    .await?;
    Ok((entry.join(ROOTFS_TAR), key, hit))
}

/// Build the stage-2 image into `out` (a fresh temporary folder in the cache).
pub async fn build_image(
    recipe: &Recipe,
    variants: &BTreeMap<String, String>,
    tarball: &Path,
    rootfs_key: &str,
    key: &str,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<ImageMeta> {
    require_root()?;
    let started = Instant::now();
    let log = out.join(BUILD_LOG);
    let dir = out.join("rootfs");
    std::fs::create_dir(&dir)?;
    progress.report("unpacking the root filesystem");
    let mut tar = Command::new("tar");
    tar.args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(tarball)
        .arg("-C")
        .arg(&dir);
    tool::run("unpacking the rootfs tarball", &mut tar, &log).await?;

    progress.report("applying the overlay, the harness adapter and the variants");
    customize(recipe, variants, &dir, key, &log)?;
    let kernel_release = copy_boot_files(&dir, out)?;
    copy_unit_tree(&dir, &out.join(UNITS_DIR))?;

    progress.report("making the ext4 filesystem and the qcow2 image");
    let raw = out.join("disk.raw");
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "root", "-d"])
        .arg(&dir)
        .arg(&raw)
        .arg(format!("{}k", recipe.disk_size_bytes / 1024));
    tool::run("mkfs.ext4", &mut mkfs, &log).await?;
    let disk = out.join(DISK_FILE);
    let mut convert = Command::new("qemu-img");
    convert
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&disk);
    tool::run("qemu-img convert", &mut convert, &log).await?;

    let (raw2, dir2, disk2) = (raw.clone(), dir.clone(), disk.clone());
    let disk_sha256 = tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_file(&raw2);
        let _ = std::fs::remove_dir_all(&dir2);
        cache::sha256_file(&disk2)
    })
    .await??;
    let meta = ImageMeta {
        key: key.into(),
        rootfs_key: rootfs_key.into(),
        builder_version: cache::BUILDER_VERSION.into(),
        recipe_dir: std::path::absolute(&recipe.dir).unwrap_or_else(|_| recipe.dir.clone()),
        variants: variants.clone(),
        disk_sha256,
        kernel_release,
        disk_size_bytes: recipe.disk_size_bytes,
        build_secs: started.elapsed().as_secs_f64(),
        built_at_unix: crate::unix::now_secs(),
    };
    write_json(&out.join(META_FILE), &meta)?;
    Ok(meta)
}

/// The unit folders of the image, kept beside the disk (`coldboot analyze` reads them
/// without booting or mounting anything): a small root with the same paths and links.
pub const UNITS_DIR: &str = "units";

/// Copy the unit folders of `rootfs` (and the `/lib` link of a merged-/usr system) to
/// `out`, symlinks kept as symlinks.
fn copy_unit_tree(rootfs: &Path, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    if let Ok(target) = std::fs::read_link(rootfs.join("lib")) {
        std::os::unix::fs::symlink(target, out.join("lib"))?;
    }
    let mut copied = Vec::new();
    for rel in super::unit_tree::UNIT_DIRS {
        let Some(real) = super::unit_tree::inside(rootfs, &rootfs.join(rel)) else {
            continue;
        };
        if real.is_dir() && !copied.contains(&real) {
            let rel = real.strip_prefix(rootfs)?;
            copy_tree(&real, &out.join(rel))?;
            copied.push(real);
        }
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Everything between unpacking and mkfs, in the order of the contract: defaults,
/// overlay, adapter, variant files, the recipe's units.
fn customize(
    recipe: &Recipe,
    variants: &BTreeMap<String, String>,
    dir: &Path,
    key: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let step = |what: &str, e: anyhow::Error| infra(format!("image build: {what}: {e:#}"));
    adapter::write_files(dir, &adapter::default_files(&adapter::machine_id(key)))
        .map_err(|e| step("writing defaults", e))?;
    let overlay = recipe.dir.join("overlay");
    if overlay.is_dir() {
        let n = rootfs::copy_overlay(&overlay, dir).map_err(|e| step("copying overlay/", e))?;
        tool::append_log(
            log,
            &format!("overlay: copied {n} files from {}\n", overlay.display()),
        );
    }
    for extra in &recipe.overlays {
        let n = rootfs::copy_overlay(extra, dir)
            .map_err(|e| step(&format!("copying overlays: {}", extra.display()), e))?;
        tool::append_log(
            log,
            &format!("overlays: copied {n} files from {}\n", extra.display()),
        );
    }
    let links = adapter::install(dir).map_err(|e| step("installing the harness adapter", e))?;
    tool::append_log(log, &format!("adapter: {} links\n", links.len()));
    for (path, content) in recipe.variant_files(variants) {
        let target = rootfs::guest_path(dir, &path)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            std::fs::remove_file(&target)?;
        }
        std::fs::write(&target, content)
            .map_err(|e| step(&format!("writing variant file {path}"), e.into()))?;
        tool::append_log(log, &format!("variant file: {path}\n"));
    }
    // A unit the recipe names but the image lacks is the recipe's mistake: keep it a usage error.
    let links = units::enable(dir, &recipe.enable)?;
    for l in &links {
        tool::append_log(log, &format!("enabled: {} -> {}\n", l.path, l.target));
    }
    Ok(())
}

/// Copy `/boot/vmlinuz-R` and `/boot/initrd.img-R` (the newest R) next to the disk.
fn copy_boot_files(dir: &Path, out: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let boot = dir.join("boot");
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|e| {
            infra(format!(
                "image has no /boot ({e}): add a linux-image package to the recipe"
            ))
        })?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .filter(|r| boot.join(format!("initrd.img-{r}")).is_file())
        .collect();
    releases.sort_by(|a, b| version_cmp(a, b));
    let release = releases.pop().ok_or_else(|| {
        infra("image has no /boot/vmlinuz-* with a matching initrd.img-*: add linux-image-cloud-amd64 and initramfs-tools to the recipe")
    })?;
    for (from, to) in [
        (format!("vmlinuz-{release}"), KERNEL_FILE),
        (format!("initrd.img-{release}"), INITRD_FILE),
    ] {
        std::fs::copy(boot.join(&from), out.join(to))?;
        std::fs::set_permissions(out.join(to), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(release)
}

/// Compare kernel releases by their numeric parts (`6.1.10` > `6.1.9`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    nums(a).cmp(&nums(b)).then_with(|| a.cmp(b))
}

/// Write pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| infra(format!("cannot write {}: {e}", path.display())))
}

/// Read an image entry's metadata.
pub fn read_image_meta(entry: &Path) -> anyhow::Result<ImageMeta> {
    let path = entry.join(META_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| infra(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        infra(format!(
            "corrupt cache metadata {}: {e} (delete the folder to rebuild)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_wins() {
        let mut v = [
            "6.1.10-cloud-amd64".to_string(),
            "6.1.9-cloud-amd64".into(),
            "5.10.0-1".into(),
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v.last().unwrap(), "6.1.10-cloud-amd64");
    }

    #[test]
    fn boot_files_are_copied_readable() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let boot = root.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        for f in [
            "vmlinuz-6.1.0-9",
            "initrd.img-6.1.0-9",
            "vmlinuz-6.1.0-10",
            "initrd.img-6.1.0-10",
            "vmlinuz-7.0",
        ] {
            std::fs::write(boot.join(f), f).unwrap();
            std::fs::set_permissions(boot.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let release = copy_boot_files(root.path(), out.path()).unwrap();
        assert_eq!(release, "6.1.0-10", "7.0 has no initrd");
        assert_eq!(
            std::fs::read_to_string(out.path().join(KERNEL_FILE)).unwrap(),
            "vmlinuz-6.1.0-10"
        );
        let mode = std::fs::metadata(out.path().join(INITRD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn missing_kernel_says_which_packages() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("boot")).unwrap();
        let msg = copy_boot_files(root.path(), root.path())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("linux-image-cloud-amd64"), "{msg}");
    }
}
