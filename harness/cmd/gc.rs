//! `coldboot gc`: remove what killed runs left behind, and with `--images` the cache
//! entries that no run used for a while.

use coldboot::targets::{cache, evict};
use coldboot::vm::owner;

use crate::cli::GcArgs;

/// Remove the leftovers of runs whose process is gone (and, with `--images`, cache
/// entries unused for `--unused-for`), and say what was removed.
pub fn run(args: &GcArgs) -> anyhow::Result<i32> {
    let root = cache::cache_root(None)?;
    if !args.dry_run {
        let removed = owner::collect_stale(&root);
        for line in &removed {
            println!("{line}");
        }
        if removed.is_empty() {
            println!("nothing stale under {}", root.join("runs").display());
        }
    }
    if args.images {
        // After the stale overlays are gone: only live VMs' overlays keep an image.
        let in_use = owner::live_backing_files(&root);
        for line in evict::evict(&root, args.unused_for, &in_use, args.dry_run) {
            println!("{line}");
        }
    }
    Ok(coldboot::error::exit::OK)
}
