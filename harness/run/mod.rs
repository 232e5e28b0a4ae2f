//! The executor: bringing targets up, running scenario phases on throwaway overlays,
//! scheduling pairs in parallel, and turning what was seen into verdicts.
//!
//! `boot` brings one target up to a connected guest, `watch` follows its journal,
//! `clock` maps guest time onto host time, `expect` awaits one expectation (`early`
//! decides unit waits from the journal ahead of their turn), `pair` runs
//! one (target, scenario) pair, and `record` writes what a pair leaves behind.
//!
//! Files:
//! - `actions`: a phase's actions, and reboots that hand back a reconnected guest
//! - `baseline`: the naive baseline `coldboot bench` measures the runner against
//! - `boot`: bringing a target up
//! - `cap`: size caps on evidence files a guest can make arbitrarily large
//! - `clock`: one clock for a run
//! - `context`: what a pair's phases share: its context, its state, their small rules
//! - `cycle_reads`: what one read of the job queue means, folded into the watch
//! - `cycle_watch`: the wait-cycle watcher task: reads, gate probes, confirmation
//! - `cycle_watch_tests`: tests of `cycle_watch`
//! - `cycles`: watching for wait cycles while a boot runs (the handle on what was found)
//! - `early`: unit waits decided ahead of their turn
//! - `expect`: awaiting and evaluating one expectation against a live guest
//! - `fault`: a scenario's faults, checked against the target and run in the guest
//! - `gate_probe`: the watcher's probes of declared gates, paced and right after a start
//! - `history`: how long each pair took in past runs here, to order the next run's pairs
//! - `http_wait`: an `http:` expectation, probed until it answers or its deadline
//! - `honesty`: gate honesty on a live guest, against the watcher's probes of the gate
//! - `idle`: the end-of-phase evidence, read at the boot's first idle moment
//! - `live`: what an expectation awaits with (the live guest, its streams) and gets
//! - `lost`: a VM lost in the middle of a phase
//! - `pair`: running one (target, scenario) pair on its own overlay, and its report
//! - `phase`: one phase: its boot, its actions, its checks and its end's evidence
//! - `probe`: the harness's own HTTP probes, from the guest (curl) or the host
//! - `record`: what a pair leaves in its run folder while it runs
//! - `stable`: `stable:` windows, watched by PID 1's events and probes at an interval
//! - `turns`: a phase's expectations, checked in turns (observations side by side)
//! - `turns_played_tests`: a phase checked against a guest played back from a real boot
//! - `unit_wait`: a unit wait: PID 1's word first, racing a systemctl read
//! - `units_read`: every unit's state at a phase's end, through the recorder or systemctl
//! - `up`: a booted guest: connecting its watch, cycling it, its last evidence
//! - `watch`: following the guest's journal while a boot happens, so waits end on
//!   events
//! - `watch_state`: the wait-cycle watcher's setup and state, below the watcher and its
//!   handle

pub mod actions;
pub mod baseline;
pub mod boot;
pub mod cap;
pub mod clock;
pub mod context;
pub mod cycle_reads;
pub mod cycle_watch;
pub mod cycles;
pub mod early;
pub mod expect;
pub mod fault;
pub mod gate_probe;
pub mod history;
pub mod honesty;
pub mod http_wait;
pub mod idle;
pub mod live;
pub mod lost;
pub mod pair;
pub mod phase;
pub mod probe;
pub mod record;
pub mod stable;
pub mod turns;
pub mod unit_wait;
pub mod units_read;
pub mod up;
pub mod watch;
pub mod watch_state;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar};

use crate::evidence::redact;
use crate::scenario::RunPair;
use crate::targets::{self, BootSpec, PrepareOptions, Progress, TargetSpec};
use crate::vm::{Accel, accel};
use history::History;

use crate::check::PairReport;
pub use pair::run_pair;

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
    /// Virtual CPUs per guest when given (`--vcpus`), else decided by `vm::config::vcpus`.
    pub vcpus: Option<u32>,
    /// How long to wait for SSH after each boot.
    pub ssh_timeout: Duration,
    /// Also time the naive baseline beside the runner (`baseline-boot-N.json`), for
    /// `coldboot bench`.
    pub baseline_poll: bool,
    /// The plans' `redact:` patterns (the targets' own are added per pair).
    pub redact: Vec<String>,
}

/// `work`, with how long it took in the debug log (where a pair's time goes).
pub(crate) async fn timed<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    let began = std::time::Instant::now();
    let out = work.await;
    tracing::debug!("{what} took {:.2}s", began.elapsed().as_secs_f64());
    out
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

    let specs = prepare_targets(&pairs, &multi).await?;

    // A fault the target lacks is the scenario's mistake: say so before anything boots.
    for pair in &pairs {
        let faults: Vec<&str> = specs[&pair.target]
            .faults
            .keys()
            .map(String::as_str)
            .collect();
        pair::check_faults(pair, &faults)?;
    }

    let redactors = redactors(opts, &specs)?;

    let cache_root = targets::cache::cache_root(None)?;
    let probe_kernel = specs
        .values()
        .find_map(|s| s.probe_kernel().map(std::path::Path::to_path_buf))
        .ok_or_else(|| {
            crate::error::infra("no target has a kernel to probe the accelerator with")
        })?;
    let accel = accel::choose(opts.accel, &probe_kernel, &cache_root).await?;
    tracing::info!("accelerator: {} ({})", accel.accel, accel.reason);
    let host_cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let at_once = opts.jobs.max(1).min(pairs.len().max(1));
    let vcpus = crate::vm::config::vcpus(opts.vcpus, accel.accel, host_cpus, at_once);
    tracing::info!("virtual CPUs per guest: {}", vcpus.1);

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
                redactor: redactors[&p.target].clone(),
                accel: accel.clone(),
                vcpus: vcpus.clone(),
                run_dir: opts
                    .evidence
                    .join(crate::evidence::bundle::pair_folder(&p.id)),
                keep: opts.keep,
                ssh_timeout: opts.ssh_timeout,
                baseline_poll: opts.baseline_poll,
                status,
                pair: p,
            }
        })
        .collect();

    // The order pairs start in decides when the last one ends (`scenario::order`), on
    // what they took in past runs here. Reports keep the plan's order.
    let history_path = history::path(&cache_root);
    let keys: Vec<String> = contexts.iter().map(|c| history::key(&c.pair)).collect();
    let mut history = History::load(&history_path);
    let estimates: Vec<f64> = contexts
        .iter()
        .map(|c| c.pair.scenario.expected_cost().as_secs_f64())
        .collect();
    let contexts = history::start_order(contexts, &keys, &estimates, &history, at_once);
    let multi2 = multi.clone();
    let reports: Vec<(usize, PairReport)> = futures::stream::iter(contexts)
        .map(|(i, ctx)| {
            let multi = multi2.clone();
            async move {
                let report = run_pair(ctx).await;
                let _ = crate::evidence::bundle::write_json(
                    &report.run_dir.join(crate::evidence::bundle::VERDICT),
                    &report,
                );
                let line = pair_line(&report);
                // Last: what QEMU and the timeline wrote is filtered in place, and the
                // counts recorded, before the reports are rendered from the folder.
                if let Err(e) = redact::finish_folder(&report.run_dir) {
                    tracing::warn!("cannot redact {}: {e:#}", report.run_dir.display());
                }
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
    let runs: Vec<(String, &PairReport)> =
        reports.iter().map(|(i, r)| (keys[*i].clone(), r)).collect();
    history.record(&runs, crate::unix::now());
    if let Err(e) = history.save(&history_path) {
        tracing::warn!(
            "cannot keep the pairs' durations in {}: {e:#}",
            history_path.display()
        );
    }
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}

/// Every file of the bundle is filtered: the top by every pattern of the run, each pair
/// folder by the plan's, its target's and (once generated) the pair's keys. The
/// redactor of each target's pair folders.
fn redactors(
    opts: &RunOptions,
    specs: &BTreeMap<String, Arc<BootSpec>>,
) -> anyhow::Result<BTreeMap<String, redact::Redactor>> {
    let all: Vec<String> = opts
        .redact
        .iter()
        .chain(specs.values().flat_map(|s| s.redact.iter()))
        .cloned()
        .collect();
    redact::register(&opts.evidence, redact::Redactor::new(&all)?);
    let mut redactors: BTreeMap<String, redact::Redactor> = BTreeMap::new();
    for (target, spec) in specs {
        let patterns: Vec<&String> = opts.redact.iter().chain(&spec.redact).collect();
        redactors.insert(target.clone(), redact::Redactor::new(&patterns)?);
    }
    Ok(redactors)
}

/// Prepare every target the pairs use, one at a time (builds of different recipes share
/// the rootfs cache), each once.
async fn prepare_targets(
    pairs: &[RunPair],
    multi: &MultiProgress,
) -> anyhow::Result<BTreeMap<String, Arc<BootSpec>>> {
    let mut specs: BTreeMap<String, Arc<BootSpec>> = BTreeMap::new();
    for pair in pairs {
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
        let boot_spec = targets::prepare(&spec, &prep).await?;
        bar.finish_and_clear();
        specs.insert(pair.target.clone(), Arc::new(boot_spec));
    }
    Ok(specs)
}

/// The pair's line on the terminal (and so in a CI log): its verdict, whether as
/// planned, and what went wrong; with the pair's redaction.
fn pair_line(report: &PairReport) -> String {
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
            crate::check::Verdict::Pass | crate::check::Verdict::Reproduced { .. } => String::new(),
            v => format!("\n    {v}"),
        }
    );
    // The terminal (and so a CI log) gets the pair's redaction too.
    redact::redact_text(&report.run_dir, &line)
}

/// The exit code of a run from its pairs' reports. A definite verdict that is not the
/// one the plan expects gives 1 whatever else happened (the errors are listed beside it
/// in the report): `git bisect` can mark that revision. Else an error in a scenario
/// gives 2, an infrastructure error 3, and 0 when every verdict is as planned.
pub fn exit_code(reports: &[PairReport]) -> i32 {
    use crate::check::Verdict;
    use crate::error::{ErrorClass, exit};
    let definite_mismatch = reports
        .iter()
        .any(|r| !r.matches_plan && !matches!(r.verdict, Verdict::Error { .. }));
    let class_of = |c: ErrorClass| {
        reports
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Error { class, .. } if class == c))
    };
    if definite_mismatch {
        exit::MISMATCH
    } else if class_of(ErrorClass::Usage) {
        exit::USAGE
    } else if class_of(ErrorClass::Infrastructure) {
        exit::INFRA
    } else {
        exit::OK
    }
}

fn spinner(msg: String) -> ProgressBar {
    let bar = crate::progress::spinner();
    bar.set_message(msg);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;
    use crate::error::{ErrorClass, exit};
    use crate::scenario::Expected;

    fn report(verdict: Verdict, expected: Expected) -> PairReport {
        let matches_plan = verdict.matches(&expected);
        PairReport {
            id: "t/s".into(),
            repetition: None,
            target_name: "t".into(),
            target: "image:x".into(),
            scenario: "s".into(),
            scenario_path: "s.yaml".into(),
            milestones: Vec::new(),
            focus_unit: None,
            report: Default::default(),
            started_unix: 0.0,
            expected,
            verdict,
            matches_plan,
            outcomes: Vec::new(),
            probes: Vec::new(),
            boots: Vec::new(),
            duration_secs: 0.0,
            run_dir: "t__s".into(),
        }
    }

    fn fail() -> Verdict {
        Verdict::Fail {
            expectation: "e".into(),
            expected: "x".into(),
            seen: "y".into(),
            note: None,
            evidence: None,
        }
    }

    fn error(class: ErrorClass) -> Verdict {
        Verdict::Error {
            message: "QEMU died".into(),
            class,
        }
    }

    /// Issue 10: a definite failure is never hidden behind another pair's error.
    #[test]
    fn a_failure_beats_an_error() {
        let reports = [
            report(fail(), Expected::Pass),
            report(error(ErrorClass::Infrastructure), Expected::Pass),
        ];
        assert_eq!(exit_code(&reports), exit::MISMATCH);
        // A pass where a reproduction was expected is definite too.
        let missed = Expected::Reproduced(crate::scenario::Reproduction {
            failing: vec!["e".into()],
            seen: None,
        });
        let reports = [
            report(Verdict::Pass, missed),
            report(error(ErrorClass::Usage), Expected::Pass),
        ];
        assert_eq!(exit_code(&reports), exit::MISMATCH);
    }

    /// The error class travels with the verdict: a scenario's mistake is 2, the
    /// infrastructure's 3; a usage error beats an infrastructure error.
    #[test]
    fn errors_exit_by_their_class() {
        let ok = report(Verdict::Pass, Expected::Pass);
        assert_eq!(exit_code(std::slice::from_ref(&ok)), exit::OK);
        let usage = report(error(ErrorClass::Usage), Expected::Pass);
        let infra = report(error(ErrorClass::Infrastructure), Expected::Pass);
        assert_eq!(exit_code(&[ok.clone(), usage.clone()]), exit::USAGE);
        assert_eq!(exit_code(&[ok, infra.clone()]), exit::INFRA);
        assert_eq!(exit_code(&[infra, usage]), exit::USAGE);
    }

    /// An error verdict from before schema 3 has no class: it reads as infrastructure.
    #[test]
    fn an_old_error_verdict_is_infrastructure() {
        let v: Verdict =
            serde_json::from_str(r#"{"verdict": "error", "message": "QEMU exited"}"#).unwrap();
        assert_eq!(v, error_with("QEMU exited", ErrorClass::Infrastructure));
    }

    fn error_with(message: &str, class: ErrorClass) -> Verdict {
        Verdict::Error {
            message: message.into(),
            class,
        }
    }
}
