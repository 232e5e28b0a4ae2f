//! `coldboot report SHARD_DIR... --into DIR`: the bundles of one plan's shards as one.
//!
//! Shards are checked before anything is copied: one plan (the same name and the same
//! list of pairs in `run.json`), one harness version, no run folder twice. Pairs of the
//! plan that no shard ran are listed, so a lost runner is never mistaken for a clean run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::bundle::{self, write_json};
use super::load::{Bundle, Invocation, PlanRecord, load_bundle};
use crate::error::usage;

/// What a merge produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Run folders copied, in plan order.
    pub folders: Vec<String>,
    /// Pair ids of the plan that no shard has.
    pub missing: Vec<String>,
}

/// The checks a merge makes, on bundles already read. Pure, so every refusal is testable
/// without copying files.
pub fn check_shards(shards: &[(PathBuf, Bundle)]) -> anyhow::Result<(PlanRecord, Vec<String>)> {
    let mut plan: Option<(&Path, &PlanRecord)> = None;
    let mut version: Option<(&Path, String)> = None;
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (dir, bundle) in shards {
        let Some(Invocation { plan: Some(p), .. }) = &bundle.invocation else {
            return Err(usage(format!(
                "{}: its run.json does not say which plan it ran (written by a coldboot older \
                 than `report --into`); run the shards again",
                dir.display()
            )));
        };
        match plan {
            None => plan = Some((dir, p)),
            Some((first, q)) if q.name != p.name || q.pairs != p.pairs || q.repeat != p.repeat => {
                return Err(usage(format!(
                    "{} and {} are bundles of different plans ({} with {} pairs, {} with {} \
                     pairs); only shards of one plan merge",
                    first.display(),
                    dir.display(),
                    q.name,
                    q.pairs.len(),
                    p.name,
                    p.pairs.len()
                )));
            }
            Some(_) => {}
        }
        for v in versions(bundle) {
            match &version {
                None => version = Some((dir, v)),
                Some((first, w)) if *w != v => {
                    return Err(usage(format!(
                        "{} and {} were made by different harness versions ({w} and {v}); \
                         only shards of one run merge",
                        first.display(),
                        dir.display()
                    )));
                }
                Some(_) => {}
            }
        }
        for pair in &bundle.pairs {
            if !seen.insert(&pair.folder) {
                return Err(usage(format!(
                    "run folder {} is in more than one shard (again in {}); were the same \
                     shard's bundles given twice?",
                    pair.folder,
                    dir.display()
                )));
            }
            if !p.pairs.contains(&pair.report.id) {
                return Err(usage(format!(
                    "{}: run folder {} ({}) is not a pair of plan {}",
                    dir.display(),
                    pair.folder,
                    pair.report.id,
                    p.name
                )));
            }
        }
    }
    let Some((_, plan)) = plan else {
        return Err(usage("report --into needs at least one shard bundle"));
    };
    let have: BTreeSet<&str> = shards
        .iter()
        .flat_map(|(_, b)| b.pairs.iter().map(|p| p.report.id.as_str()))
        .collect();
    let missing = plan
        .pairs
        .iter()
        .filter(|id| !have.contains(id.as_str()))
        .cloned()
        .collect();
    let mut merged = plan.clone();
    merged.shard = None;
    Ok((merged, missing))
}

/// The harness versions a bundle's `run.json` and `vm.json` files name.
fn versions(bundle: &Bundle) -> BTreeSet<String> {
    bundle
        .invocation
        .iter()
        .map(|i| i.harness_version.clone())
        .chain(
            bundle
                .pairs
                .iter()
                .filter_map(|p| p.vm.as_ref().map(|v| v.harness_version.clone())),
        )
        .filter(|v| !v.is_empty())
        .collect()
}

/// Merge the shard bundles into `into` (which must not exist or be empty), then render
/// its reports as `coldboot report` does.
pub fn merge(shard_dirs: &[PathBuf], into: &Path) -> anyhow::Result<Merged> {
    if shard_dirs.is_empty() {
        return Err(usage("report --into DIR needs the shard bundles to merge"));
    }
    let mut shards = Vec::new();
    for dir in shard_dirs {
        if !dir.is_dir() {
            return Err(usage(format!(
                "{}: not an evidence bundle folder",
                dir.display()
            )));
        }
        if same_dir(dir, into) {
            return Err(usage(format!(
                "--into {}: is one of the shards; merge into a new folder",
                into.display()
            )));
        }
        shards.push((dir.clone(), load_bundle(dir)?));
    }
    let (plan, missing) = check_shards(&shards)?;
    if into.exists()
        && std::fs::read_dir(into)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(usage(format!(
            "--into {}: exists and is not empty; merge into a new folder",
            into.display()
        )));
    }
    std::fs::create_dir_all(into)
        .map_err(|e| crate::error::infra(format!("cannot create {}: {e}", into.display())))?;

    let mut folders: Vec<(usize, String)> = Vec::new();
    for (dir, bundle) in &shards {
        for pair in &bundle.pairs {
            copy_dir(&dir.join(&pair.folder), &into.join(&pair.folder))?;
            let rank = plan
                .pairs
                .iter()
                .position(|id| *id == pair.report.id)
                .unwrap_or(usize::MAX);
            folders.push((rank, pair.folder.clone()));
        }
    }
    folders.sort();
    let folders: Vec<String> = folders.into_iter().map(|(_, f)| f).collect();
    write_json(&into.join(bundle::ORDER), &folders)?;

    let first = shards[0]
        .1
        .invocation
        .clone()
        .expect("checked: every shard has run.json");
    let commands: Vec<String> = shards
        .iter()
        .filter_map(|(_, b)| b.invocation.as_ref().map(|i| i.command.clone()))
        .collect();
    let invocation = Invocation {
        command: commands.join(" ; "),
        plan: Some(plan),
        ..first
    };
    write_json(&into.join(bundle::RUN), &invocation)?;
    super::render_bundle(into)?;
    Ok(Merged { folders, missing })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Copy a run folder (files and subfolders), refusing symlinks that point out of it.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        crate::error::infra(format!("cannot {what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(to).map_err(|e| fail("create", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| fail("read", from, e))? {
        let entry = entry.map_err(|e| fail("read", from, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| fail("read", &entry.path(), e))?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_file() && !entry.file_name().to_string_lossy().ends_with(".qcow2") {
            std::fs::copy(entry.path(), &dest).map_err(|e| fail("copy", &entry.path(), e))?;
        }
        // Disks kept with --keep are not evidence, and symlinks may point anywhere.
    }
    Ok(())
}
