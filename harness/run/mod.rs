//! The executor: bringing targets up, running scenario phases on throwaway overlays,
//! scheduling pairs in parallel, and turning what was seen into verdicts.
//!
//! `boot` brings one target up to a connected guest, `watch` follows its journal,
//! `clock` maps guest time onto host time, `expect` awaits one expectation, `pair` runs
//! one (target, scenario) pair, and `record` writes what a pair leaves behind.

pub mod baseline;
pub mod boot;
pub mod cap;
pub mod clock;
pub mod cycles;
pub mod expect;
pub mod lost;
pub mod pair;
pub mod record;
pub mod watch;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::scenario::RunPair;
use crate::target::{self, BootSpec, PrepareOptions, Progress, TargetSpec};
use crate::vm::{Accel, accel};

pub use pair::{PairReport, run_pair};

/// How to run a set of pairs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The evidence bundle's folder; each pair writes a folder inside it.
    pub evidence: PathBuf,
    /// How many pairs run at once.
    pub jobs: usize,
    /// Keep overlays afterwards.
    pub keep: bool,
    /// The accelerator asked for.
    pub accel: Accel,
    /// How long to wait for SSH after each boot.
    pub ssh_timeout: Duration,
    /// Also time the naive baseline beside the runner (`baseline-boot-N.json`), for
    /// `coldboot bench`.
    pub baseline_poll: bool,
}

/// Prepare every target the pairs use (building images once each), then run the pairs,
/// `jobs` at a time. Returns one report per pair, in the pairs' order.
pub async fn run_pairs(pairs: Vec<RunPair>, opts: &RunOptions) -> anyhow::Result<Vec<PairReport>> {
    std::fs::create_dir_all(&opts.evidence)?;
    let multi = if std::io::stderr().is_terminal() {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    };

    // Images first, one at a time: builds of different recipes share the rootfs cache.
    let mut specs: BTreeMap<String, Arc<BootSpec>> = BTreeMap::new();
    for pair in &pairs {
        if specs.contains_key(&pair.target) {
            continue;
        }
        let bar = multi.add(spinner(format!("preparing {}", pair.target)));
        let bar2 = bar.clone();
        let prep = PrepareOptions {
            progress: Progress::new(move |m| bar2.set_message(m.to_string())),
            ..PrepareOptions::default()
        };
        let spec = TargetSpec::parse(&pair.target)?;
        let boot_spec = target::prepare(&spec, &prep).await?;
        bar.finish_and_clear();
        specs.insert(pair.target.clone(), Arc::new(boot_spec));
    }

    let cache_root = target::cache::cache_root(None)?;
    let probe_kernel = specs
        .values()
        .find_map(|s| s.probe_kernel().map(std::path::Path::to_path_buf))
        .ok_or_else(|| {
            crate::error::infra("no target has a kernel to probe the accelerator with")
        })?;
    let accel = accel::choose(opts.accel, &probe_kernel, &cache_root).await?;
    tracing::info!("accelerator: {} ({})", accel.accel, accel.reason);

    let contexts: Vec<pair::PairContext> = pairs
        .into_iter()
        .map(|p| {
            let bar = multi.add(spinner(format!("{}: queued", p.id)));
            let id = p.id.clone();
            let status: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |m: &str| {
                bar.set_message(format!("{id}: {m}"));
            });
            pair::PairContext {
                spec: specs[&p.target].clone(),
                accel: accel.clone(),
                run_dir: opts
                    .evidence
                    .join(record::file_safe(&p.id.replace('/', "__"))),
                keep: opts.keep,
                ssh_timeout: opts.ssh_timeout,
                baseline_poll: opts.baseline_poll,
                status,
                pair: p,
            }
        })
        .collect();

    let multi2 = multi.clone();
    let reports: Vec<(usize, PairReport)> = futures::stream::iter(contexts.into_iter().enumerate())
        .map(|(i, ctx)| {
            let multi = multi2.clone();
            async move {
                let report = run_pair(ctx).await;
                let _ = record::write_json(&report.run_dir.join("verdict.json"), &report);
                let line = format!(
                    "{:<40} {:<10} {}{}",
                    report.id,
                    report.verdict.word(),
                    if report.matches_plan {
                        "as planned"
                    } else {
                        "NOT as planned"
                    },
                    match &report.verdict {
                        crate::check::Verdict::Pass | crate::check::Verdict::Reproduced { .. } =>
                            String::new(),
                        v => format!("\n    {v}"),
                    }
                );
                let _ = multi.println(&line);
                if multi.is_hidden() {
                    eprintln!("{line}");
                }
                (i, report)
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    let mut reports = reports;
    reports.sort_by_key(|(i, _)| *i);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

fn spinner(msg: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .expect("static template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message(msg);
    bar
}
