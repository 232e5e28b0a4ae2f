//! `coldboot compare OLD NEW`: verdicts that changed and units that got slower, as a
//! Markdown table and JSON; exit 1 on a regression.

use std::path::{Path, PathBuf};

use coldboot::error::{exit, usage};
use coldboot::evidence::compare::{self, Thresholds};
use coldboot::evidence::{bundle_name, load_bundle};

/// Compare, write `compare.md` and `compare.json` into `out` (default: NEW), print the
/// Markdown. 0: no regression; 1: a regression; 2: bad input.
pub fn run(
    old: &Path,
    new: &Path,
    pct: f64,
    secs: f64,
    out: Option<PathBuf>,
) -> anyhow::Result<i32> {
    if !pct.is_finite() || pct < 0.0 {
        return Err(usage(format!(
            "--threshold-pct {pct}: expected a percentage of 0 or more"
        )));
    }
    if !secs.is_finite() || secs < 0.0 {
        return Err(usage(format!(
            "--threshold-secs {secs}: expected seconds, 0 or more"
        )));
    }
    let load = |dir: &Path| {
        if !dir.is_dir() {
            return Err(usage(format!(
                "{}: not an evidence bundle folder",
                dir.display()
            )));
        }
        let b = load_bundle(dir)?;
        if b.pairs.is_empty() {
            return Err(usage(format!(
                "{}: no run folders (folders with verdict.json, timeline.jsonl or vm.json)",
                dir.display()
            )));
        }
        Ok(b)
    };
    let (o, n) = (load(old)?, load(new)?);
    let c = compare::compare(&o, &n, Thresholds { pct, secs });
    let md = compare::markdown(&c, &bundle_name(old), &bundle_name(new));
    let out = out.unwrap_or_else(|| new.to_path_buf());
    std::fs::create_dir_all(&out)
        .map_err(|e| coldboot::error::infra(format!("cannot create {}: {e}", out.display())))?;
    coldboot::evidence::bundle::write_atomic(&out.join("compare.md"), md.as_bytes())?;
    coldboot::evidence::bundle::write_json(&out.join("compare.json"), &c)?;
    print!("{md}");
    eprintln!(
        "wrote {} and {}",
        out.join("compare.md").display(),
        out.join("compare.json").display()
    );
    Ok(if c.regressions > 0 {
        exit::MISMATCH
    } else {
        exit::OK
    })
}
