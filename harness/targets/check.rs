//! Targets checked before anything runs: the recipe folder loads and the variants
//! resolve, an image is a qcow2 disk (and its kernel a Linux kernel), a NixOS
//! configuration name is well formed. Every failure is a usage error (exit 2) naming
//! the target. It reads a few bytes of a file at most; nothing is built or booted, so
//! `coldboot run --dry-run` checks too.

use std::io::Read as _;
use std::path::Path;

use super::{Recipe, TargetSpec, nix};
use crate::error::usage;

/// The first four bytes of a qcow2 file (`QFI\xfb`).
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// A Linux x86 boot image carries `HdrS` at this offset (the boot protocol header).
const BZIMAGE_MAGIC_AT: u64 = 0x202;

/// Check a parsed target without building or booting it.
pub fn check(spec: &TargetSpec) -> anyhow::Result<()> {
    match spec {
        TargetSpec::Recipe { dir, variants } => {
            Recipe::load(dir)?.resolve_variants(variants)?;
        }
        TargetSpec::Image {
            path,
            kernel,
            initrd,
            ..
        } => {
            check_disk_image(path)?;
            if let Some(k) = kernel {
                check_kernel(k)?;
            }
            if let Some(i) = initrd {
                let len = readable(i, "initrd")?;
                if len == 0 {
                    return Err(usage(format!(
                        "image target: initrd {} is empty",
                        i.display()
                    )));
                }
            }
        }
        TargetSpec::Nix { flake, attr } => {
            nix::NixTarget::new(flake, attr)?;
        }
    }
    Ok(())
}

/// Parse and check a target string; errors name `what` (such as `target after`) and the string.
pub fn check_str(what: &str, target: &str) -> anyhow::Result<TargetSpec> {
    let spec = TargetSpec::parse(target)?;
    check(&spec).map_err(|e| {
        let code = crate::error::exit_code(&e);
        let msg = format!("{what} = {target}: {e:#}");
        if code == crate::error::exit::USAGE {
            usage(msg)
        } else {
            e.context(msg)
        }
    })?;
    Ok(spec)
}

/// The size of a regular file, or a usage error saying why it cannot be used.
fn readable(path: &Path, what: &str) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| {
        usage(format!(
            "image target: {what} {}: {}",
            path.display(),
            io_reason(&e)
        ))
    })?;
    if !meta.is_file() {
        return Err(usage(format!(
            "image target: {what} {} is not a regular file",
            path.display()
        )));
    }
    Ok(meta.len())
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        _ => e.to_string(),
    }
}

/// Read `n` bytes at `offset`, or fewer when the file is shorter.
fn read_at(path: &Path, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Seek as _;
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// An `image:` disk must be qcow2: the VM runs on a qcow2 overlay whose backing format is
/// qcow2 (`qemu-img create -F qcow2`), so a raw disk would be misread, and anything else
/// (a text file, a tarball) is a mistake, not an infrastructure failure.
pub fn check_disk_image(path: &Path) -> anyhow::Result<()> {
    readable(path, "disk")?;
    let head = read_at(path, 0, 4).map_err(|e| {
        usage(format!(
            "image target: disk {}: cannot read: {e}",
            path.display()
        ))
    })?;
    if head != QCOW2_MAGIC {
        return Err(usage(format!(
            "image target: {} is not a qcow2 disk image (it does not start with the qcow2 \
             magic QFI\\xfb); convert a raw disk with `qemu-img convert -O qcow2 DISK OUT.qcow2`",
            path.display()
        )));
    }
    Ok(())
}

/// A `kernel=` must be a Linux x86 boot image (`HdrS` in its setup header).
pub fn check_kernel(path: &Path) -> anyhow::Result<()> {
    readable(path, "kernel")?;
    let magic = read_at(path, BZIMAGE_MAGIC_AT, 4).map_err(|e| {
        usage(format!(
            "image target: kernel {}: cannot read: {e}",
            path.display()
        ))
    })?;
    if magic != b"HdrS" {
        return Err(usage(format!(
            "image target: kernel {} is not a Linux kernel image (no HdrS boot header at 0x202)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit, exit_code};

    fn err(target: &str) -> (i32, String) {
        let e = check_str("target t", target).unwrap_err();
        (exit_code(&e), format!("{e:#}"))
    }

    #[test]
    fn a_text_file_is_not_a_disk() {
        let (code, msg) = err("image:/etc/passwd");
        assert_eq!(code, exit::USAGE);
        assert!(msg.contains("target t = image:/etc/passwd"), "{msg}");
        assert!(msg.contains("not a qcow2 disk image"), "{msg}");
    }

    #[test]
    fn missing_files_and_folders_are_usage_errors() {
        for (target, says) in [
            ("image:/nonexistent.qcow2", "does not exist"),
            ("image:/tmp", "not a regular file"),
            ("recipe:/nonexistent", "cannot read recipe"),
        ] {
            let (code, msg) = err(target);
            assert_eq!(code, exit::USAGE, "{target}: {msg}");
            assert!(msg.contains(says), "{target}: {msg}");
        }
    }

    #[test]
    fn qcow2_magic_and_kernel_header_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.qcow2");
        std::fs::write(&disk, b"QFI\xfb\0\0\0\x03rest").unwrap();
        let mut kernel = vec![0u8; 0x300];
        kernel[0x202..0x206].copy_from_slice(b"HdrS");
        let k = dir.path().join("vmlinuz");
        std::fs::write(&k, &kernel).unwrap();
        let target = format!("image:{}?kernel={}", disk.display(), k.display());
        check_str("t", &target).unwrap();
        // The disk is not accepted as a kernel.
        let target = format!("image:{}?kernel={}", disk.display(), disk.display());
        let (code, msg) = err(&target);
        assert_eq!(code, exit::USAGE);
        assert!(msg.contains("not a Linux kernel image"), "{msg}");
    }

    #[test]
    fn a_bad_variant_value_is_named() {
        let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/vm-images/ccci-model");
        let (code, msg) = err(&format!("recipe:{recipe}?gate=bogus"));
        assert_eq!(code, exit::USAGE);
        assert!(
            msg.contains("gate=bogus") && msg.contains("self, dashboard"),
            "{msg}"
        );
        check_str("t", &format!("recipe:{recipe}?gate=dashboard")).unwrap();
    }

    #[test]
    fn a_bad_nix_name_is_a_usage_error() {
        let (code, msg) = err("nix:.#no/slashes");
        assert_eq!(code, exit::USAGE);
        assert!(msg.contains("not a configuration name"), "{msg}");
    }
}
