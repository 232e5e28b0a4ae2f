//! Helpers shared by the tests that drive the real `coldboot` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The binary, run from the repository root with no stdin.
pub fn coldboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coldboot"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.stdin(Stdio::null());
    c
}

/// Run the binary to its end and echo what it printed, for the test's log.
pub fn run(args: &[&str]) -> Output {
    let out = coldboot().args(args).output().expect("coldboot runs");
    eprintln!(
        "$ coldboot {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Why VM tests cannot run here, if they cannot.
pub fn cannot_boot() -> Option<String> {
    for tool in ["qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "{tool} is not installed (scripts/setup installs it)"
            ));
        }
    }
    if !rustix::process::geteuid().is_root() {
        return Some("recipe images are built as root, and this test is not root".into());
    }
    None
}

/// A VM or guest test that cannot run here: fails when `COLDBOOT_REQUIRE_VM=1` (as
/// scripts/test sets it), so a missing image is never a silent pass; else says why.
pub fn skip(why: &str) {
    assert!(
        std::env::var("COLDBOOT_REQUIRE_VM").as_deref() != Ok("1"),
        "COLDBOOT_REQUIRE_VM=1, but this test cannot run: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// Return from the test, saying why, when VMs cannot boot here (and fail instead when
/// `COLDBOOT_REQUIRE_VM=1`).
#[macro_export]
macro_rules! require_vm {
    () => {
        if let Some(why) = common::cannot_boot() {
            common::skip(&why);
            return;
        }
    };
}

/// Copy a folder tree (a recorded bundle) for a test to work on.
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            // std::fs::copy keeps the permission bits (the model's scripts stay executable).
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The built test image (`COLDBOOT_TEST_IMAGE_DIR`) when it holds every file in `files`,
/// else why not.
pub fn image_dir(files: &[&str]) -> Result<PathBuf, String> {
    let dir = std::env::var_os("COLDBOOT_TEST_IMAGE_DIR")
        .map(PathBuf::from)
        .ok_or(
            "COLDBOOT_TEST_IMAGE_DIR is not set (scripts/test sets it to the debian-stock image)",
        )?;
    for f in files {
        if !dir.join(f).is_file() {
            return Err(format!("{} has no {f}", dir.display()));
        }
    }
    Ok(dir)
}
