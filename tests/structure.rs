//! The folder maps: every `mod.rs` under `harness/` lists its folder's files and
//! subfolders in its module doc ("Files:", one "- `name`: what it is" line each), and
//! names nothing that is not there. A map that falls behind the tree fails here.

use std::collections::BTreeSet;
use std::path::Path;

/// The names a folder holds: its `.rs` files but `mod.rs`, and its subfolders with a
/// `mod.rs` (as `name/`).
fn held(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.is_dir() && path.join("mod.rs").exists() {
            names.insert(format!("{name}/"));
        } else if let Some(stem) = name.strip_suffix(".rs")
            && stem != "mod"
        {
            names.insert(stem.to_string());
        }
    }
    names
}

/// The names a `mod.rs` map lists.
fn mapped(mod_rs: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(mod_rs).unwrap();
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split_once("`:").map(|(n, _)| n.to_string()))
        .collect()
}

fn folders(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && path.join("mod.rs").exists() {
            out.push(path.clone());
            folders(&path, out);
        }
    }
}

#[test]
fn every_folder_map_lists_exactly_its_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness");
    let mut dirs = Vec::new();
    folders(&root, &mut dirs);
    assert!(dirs.len() >= 10, "{dirs:?}");
    let mut wrong = Vec::new();
    for dir in &dirs {
        let (held, mapped) = (held(dir), mapped(&dir.join("mod.rs")));
        let missing: Vec<_> = held.difference(&mapped).collect();
        let stale: Vec<_> = mapped.difference(&held).collect();
        if !missing.is_empty() || !stale.is_empty() {
            wrong.push(format!(
                "{}: not in the map {missing:?}, in the map but not there {stale:?}",
                dir.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
