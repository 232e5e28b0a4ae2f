//! `coldboot doctor`: what this host can do, and whether a run is possible at all.

use std::path::PathBuf;

use coldboot::targets::{build, cache, nix_host};
use coldboot::vm::accel;

use crate::cli::DoctorArgs;

const GIB: u64 = 1 << 30;

/// Print one line per capability; exit non-zero only when a run is impossible.
pub async fn run(args: &DoctorArgs) -> anyhow::Result<i32> {
    let mut fatal = Vec::new();
    let line = |what: &str, status: &str| println!("{what:<14} {status}");

    let qemu = super::first_line("qemu-system-x86_64", &["--version"]).await;
    match &qemu {
        Some(v) => line("qemu", v),
        None => {
            line(
                "qemu",
                "MISSING (apt-get install qemu-system-x86 qemu-utils)",
            );
            fatal.push("qemu-system-x86_64 is missing");
        }
    }
    match super::first_line("qemu-img", &["--version"]).await {
        Some(v) => line("qemu-img", &v),
        None => {
            line("qemu-img", "MISSING (apt-get install qemu-utils)");
            fatal.push("qemu-img is missing");
        }
    }

    let cache_root = cache::cache_root(None)?;
    if qemu.is_some() {
        match probe_kernel(&cache_root) {
            Some(kernel) => {
                let requested = args.vm.accel.into();
                match accel::choose(requested, &kernel, &cache_root).await {
                    Ok(choice) => line(
                        "accelerator",
                        &format!("{} ({})", choice.accel, choice.reason),
                    ),
                    Err(e) => line("accelerator", &format!("probe failed: {e:#}")),
                }
            }
            None => line(
                "accelerator",
                "not probed yet: no kernel to probe with (build an image first); \
                 the first boot probes KVM and falls back to TCG",
            ),
        }
    }

    match super::first_line("mmdebstrap", &["--version"]).await {
        Some(v) => line("mmdebstrap", &v),
        None => line(
            "mmdebstrap",
            "missing: recipe: targets cannot be built (image: targets still work)",
        ),
    }
    match super::first_line("mkfs.ext4", &["-V"]).await {
        Some(v) => line("mkfs.ext4", &v),
        None => {
            // mkfs.ext4 -V prints to stderr and exits 0 on most versions; check the path too.
            if which("mkfs.ext4").is_some() {
                line("mkfs.ext4", "present")
            } else {
                line(
                    "mkfs.ext4",
                    "missing: recipe: targets cannot be built (apt-get install e2fsprogs)",
                )
            }
        }
    }
    let root = rustix::process::geteuid().is_root();
    line(
        "root",
        if root {
            "yes (recipe images keep file ownership)"
        } else {
            "no: recipe builds need root to keep file ownership in the image"
        },
    );
    // Nix is optional: these lines never add to `fatal`.
    let nix = nix_host::probe().await;
    for l in nix_host::report(nix.as_ref()) {
        line(l.label, &l.text);
    }

    match super::free_bytes(&cache_root) {
        Some(free) => {
            let status = format!(
                "{:.1} GiB free at {}",
                free as f64 / GIB as f64,
                cache_root.display()
            );
            if free < GIB {
                line(
                    "disk",
                    &format!(
                        "{status}: too little for an image; `coldboot gc --images` frees cached images no run used for a week"
                    ),
                );
                fatal.push("less than 1 GiB free in the cache directory");
            } else if free < 5 * GIB {
                line(
                    "disk",
                    &format!(
                        "{status}: low (an image takes about 1 GiB); `coldboot gc --images` frees cached images no run used for a week"
                    ),
                );
            } else {
                line("disk", &status);
            }
        }
        None => line(
            "disk",
            &format!("cannot read free space at {}", cache_root.display()),
        ),
    }
    line("image cache", &image_cache(&cache_root));

    if fatal.is_empty() {
        Ok(0)
    } else {
        eprintln!("a run is impossible here: {}", fatal.join("; "));
        Ok(coldboot::error::exit::INFRA)
    }
}

/// A kernel to probe KVM with: the newest cached image's, else the host's own.
fn probe_kernel(cache_root: &std::path::Path) -> Option<PathBuf> {
    let images = cache_root.join("images");
    let mut kernels: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(images)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|entry| cache::is_complete(entry))
        .map(|entry| entry.join(build::KERNEL_FILE))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    kernels.sort();
    if let Some((_, k)) = kernels.pop() {
        return Some(k);
    }
    let mut host: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz"))
        })
        .filter(|p| std::fs::File::open(p).is_ok())
        .collect();
    host.sort();
    host.pop()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
}

/// The cache's images and root filesystems: how many, how much disk, and how much of it
/// no run used for a week (what `coldboot gc --images` would free).
fn image_cache(root: &std::path::Path) -> String {
    use coldboot::targets::{cache::Kind, evict};
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    let all: Vec<evict::Entry> = [Kind::Image, Kind::Rootfs]
        .into_iter()
        .flat_map(|k| evict::entries(root, k))
        .collect();
    let gib = |b: u64| b as f64 / GIB as f64;
    let total: u64 = all.iter().map(|e| e.bytes).sum();
    let idle: Vec<&evict::Entry> = evict::to_evict(&all, std::time::SystemTime::now(), week, &[]);
    let idle_bytes: u64 = idle.iter().map(|e| e.bytes).sum();
    format!(
        "{} entries, {:.1} GiB; {} unused for a week ({:.1} GiB: `coldboot gc --images` removes them)",
        all.len(),
        gib(total),
        idle.len(),
        gib(idle_bytes)
    )
}
