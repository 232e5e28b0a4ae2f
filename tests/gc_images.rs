//! `coldboot gc --images` on a cache of real qcow2 images (made by qemu-img, no VM):
//! an image unused for longer than the limit goes, one a live overlay is backed by
//! stays until that overlay's owner lets it go, and a recent one stays.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use coldboot::vm::owner;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

/// A complete image entry `KEY` whose last use was `idle` ago (no stamp: its
/// `meta.json`'s time), with a real 1 MiB qcow2 disk.
fn image(root: &Path, key: &str, idle: Duration) {
    let dir = root.join("images").join(key);
    std::fs::create_dir_all(&dir).unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        dir.join("disk.qcow2").to_str().unwrap(),
        "1M",
    ]);
    let meta = dir.join("meta.json");
    std::fs::write(&meta, "{}").unwrap();
    let f = std::fs::File::options().write(true).open(&meta).unwrap();
    f.set_modified(SystemTime::now() - idle).unwrap();
}

fn gc(root: &Path) -> String {
    let out = common::coldboot()
        .args(["gc", "--images", "--unused-for", "24h"])
        .env("COLDBOOT_CACHE_DIR", root)
        .output()
        .expect("coldboot gc");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "$ coldboot gc --images --unused-for 24h\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    text
}

#[test]
fn gc_images_spares_a_live_overlays_base_and_recent_images() {
    let has_qemu_img = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_qemu_img {
        common::skip("qemu-img is not installed (scripts/setup installs it)");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let root = cache.path();
    let week = Duration::from_secs(7 * 24 * 3600);
    image(root, "booted", week);
    image(root, "old", week);
    image(root, "recent", Duration::from_secs(3600));
    // A live VM's overlay on `booted`, owned by this test's process (as `Vm::start`
    // claims its run folder).
    // SAFETY: this binary's only test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("COLDBOOT_CACHE_DIR", root) };
    let run = root.join("runs").join("boot-live");
    std::fs::create_dir_all(&run).unwrap();
    let base = root.join("images/booted/disk.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        run.join("overlay.qcow2").to_str().unwrap(),
    ]);
    owner::claim(&run, false);
    assert_eq!(owner::live_backing_files(root), std::slice::from_ref(&base));

    let said = gc(root);
    assert!(
        said.contains("removed ") && said.contains("images/old ("),
        "{said}"
    );
    assert!(!root.join("images/old").exists());
    assert!(
        root.join("images/booted").exists(),
        "the live overlay's base went: {said}"
    );
    assert!(root.join("images/recent").exists(), "{said}");
    assert!(said.contains("freed "), "{said}");

    // Once the VM is gone (its owner lets the folder go), its base is only an old image.
    owner::disown(&run);
    owner::release();
    let said = gc(root);
    assert!(said.contains("images/booted ("), "{said}");
    assert!(!root.join("images/booted").exists());
    assert!(root.join("images/recent").exists(), "{said}");
}
