//! The evidence bundle's top level: the reports rendered from the pairs' run folders.
//!
//! `load` reads a bundle back from disk; `json`, `junit`, `markdown` and `svg` render it
//! without touching files. `coldboot run` and `coldboot report DIR` both render from
//! what `load` reads, so their output is byte-identical.
//!
//! Files:
//! - `bench`: `coldboot bench`'s figures, computed from the bundle the benchmark wrote
//! - `bundle`: the evidence bundle's layout, in one place
//! - `compare`: `coldboot compare OLD NEW`: what got worse between two bundles
//! - `facts`: facts the renderers share, computed from a loaded bundle
//! - `gate_timeline`: the harness's probes of a gate beside the gated unit's journal
//! - `json`: `report.json`, the machine-readable report
//! - `junit`: `junit.xml`
//! - `load`: reading a bundle back from disk
//! - `markdown`: `report.md`
//! - `merge`: `coldboot report SHARD_DIR... --into DIR`: one plan's shards as one
//!   bundle
//! - `redact`: redaction of secrets in the evidence bundle
//! - `svg`: `timeline.svg` and the boot plot
//! - `timing`: repetitions and boot timing

pub mod bench;
pub mod bundle;
pub mod compare;
pub mod facts;
pub mod gate_timeline;
pub mod json;
pub mod junit;
pub mod load;
pub mod markdown;
pub mod merge;
pub mod redact;
pub mod svg;
pub mod timing;

use std::path::Path;

use crate::check::PairReport;
use bundle::{write_atomic, write_json};

pub use load::{Bundle, PairEvidence, load_bundle};

pub use bundle::SCHEMA_VERSION;

/// The four report files of a bundle, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `report.md`.
    pub markdown: String,
    /// `report.json`.
    pub json: String,
    /// `junit.xml`.
    pub junit: String,
    /// `timeline.svg`.
    pub svg: String,
}

/// Render every report of a loaded bundle. `name` names the bundle (its folder name).
pub fn render(bundle: &Bundle, name: &str) -> anyhow::Result<Rendered> {
    Ok(Rendered {
        markdown: markdown::render(bundle, name),
        json: json::render(bundle)?,
        junit: junit::render(bundle, name)?,
        svg: svg::render(&svg::groups(bundle)),
    })
}

/// Write the reports at the top of the bundle, after the runner's pairs finished.
/// Records the plan's order of the run folders (`order.json`), then renders from the
/// folders on disk exactly as `coldboot report DIR` does.
pub fn write_reports(bundle: &Path, reports: &[PairReport]) -> anyhow::Result<()> {
    let order: Vec<String> = reports
        .iter()
        .filter_map(|r| r.run_dir.file_name()?.to_str().map(str::to_string))
        .collect();
    write_json(&bundle.join(bundle::ORDER), &order)?;
    render_bundle(bundle).map(|_| ())
}

/// Read the bundle at `dir`, render its reports and write them at its top.
pub fn render_bundle(dir: &Path) -> anyhow::Result<Rendered> {
    let bundle = load_bundle(dir)?;
    let rendered = render(&bundle, &bundle_name(dir))?;
    for (file, text) in [
        (bundle::REPORT_MD, &rendered.markdown),
        (bundle::REPORT_JSON, &rendered.json),
        (bundle::JUNIT, &rendered.junit),
        (bundle::TIMELINE_SVG, &rendered.svg),
    ] {
        write_atomic(&dir.join(file), text.as_bytes()).map_err(|e| {
            crate::error::infra(format!("cannot write {}: {e:#}", dir.join(file).display()))
        })?;
    }
    Ok(rendered)
}

/// `coldboot report DIR`: render report.md, report.json, junit.xml and timeline.svg
/// again from the run folders, and say where they are.
pub fn report_command(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::error::usage(format!(
            "{}: not an evidence bundle folder",
            dir.display()
        )));
    }
    let bundle = load_bundle(dir)?;
    if bundle.pairs.is_empty() {
        return Err(crate::error::usage(format!(
            "{}: no run folders (folders with verdict.json, timeline.jsonl or vm.json)",
            dir.display()
        )));
    }
    render_bundle(dir)?;
    let c = facts::counts(&bundle);
    eprintln!(
        "{} pairs ({} as planned, {} not): wrote report.md, report.json, junit.xml and timeline.svg in {}",
        c.total,
        c.as_planned,
        c.not_as_planned,
        dir.display()
    );
    Ok(())
}

/// The bundle's name as reports show it: its folder name, independent of how the path
/// was spelt on the command line.
pub fn bundle_name(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("evidence")
        .to_string()
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time (UTC), for folder names.
pub fn utc_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Write `run.json` at the top of the bundle: the command line and the machine, which the
/// report states so that a reader knows where its figures come from.
pub fn write_invocation(
    bundle: &Path,
    command: &str,
    plan: Option<load::PlanRecord>,
    sections: &[crate::scenario::Section],
) -> anyhow::Result<()> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown OS".to_string());
    let invocation = load::Invocation {
        command: command.to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        host: format!(
            "{os}, {} {}",
            read("/proc/sys/kernel/ostype"),
            read("/proc/sys/kernel/osrelease")
        ),
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        plan,
        load_avg: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok()),
        sections: sections.to_vec(),
    };
    write_json(&bundle.join(bundle::RUN), &invocation)
}

/// Write the bundle's `report.md` to `out` as well, its links rebased so that they
/// resolve from `out`'s folder (for a `REPORT.md` kept beside a committed bundle).
pub fn write_markdown_to(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let markdown = std::fs::read_to_string(dir.join(bundle::REPORT_MD))?;
    let from = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = relative_path(&std::path::absolute(from)?, &std::path::absolute(dir)?);
    write_atomic(out, rebase_links(&markdown, &base).as_bytes())
}

/// `to` as seen from `from` (both absolute), with `/` separators.
fn relative_path(from: &Path, to: &Path) -> String {
    let f: Vec<_> = from.components().collect();
    let t: Vec<_> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_string(); f.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Prefix every relative link target (`](target)`) of `markdown` with `base/`.
pub fn rebase_links(markdown: &str, base: &str) -> String {
    if base.is_empty() {
        return markdown.to_string();
    }
    let mut out = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(i) = rest.find("](") {
        let (head, tail) = rest.split_at(i + 2);
        out.push_str(head);
        let absolute = ["http://", "https://", "#", "/", "mailto:"]
            .iter()
            .any(|p| tail.starts_with(p));
        if !absolute && !tail.starts_with(')') {
            out.push_str(base);
            out.push('/');
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_rebase_onto_the_bundle() {
        let md = "see [verdict](before__x/verdict.json) and ![t](timeline.svg), not [w](https://x.org) or [a](#m1)";
        assert_eq!(
            rebase_links(md, "docs/reference-run"),
            "see [verdict](docs/reference-run/before__x/verdict.json) and ![t](docs/reference-run/timeline.svg), not [w](https://x.org) or [a](#m1)"
        );
        assert_eq!(
            relative_path(Path::new("/r"), Path::new("/r/docs/run")),
            "docs/run"
        );
        assert_eq!(relative_path(Path::new("/r/a"), Path::new("/r/b")), "../b");
    }

    #[test]
    fn stamps_are_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-11-28 05:34:26 UTC
        assert_eq!(utc_stamp(1_795_844_066), "20261128T053426Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }
}
