//! `coldboot gc`: remove what killed runs left behind.

use coldboot::targets::cache;
use coldboot::vm::owner;

/// Remove the leftovers of runs whose process is gone and say what was removed.
pub fn run() -> anyhow::Result<i32> {
    let root = cache::cache_root(None)?;
    let removed = owner::collect_stale(&root);
    for line in &removed {
        println!("{line}");
    }
    if removed.is_empty() {
        println!("nothing stale under {}", root.join("runs").display());
    }
    Ok(coldboot::error::exit::OK)
}
