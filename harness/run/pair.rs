//! Running one (target, scenario) pair on its own overlay: phases, actions,
//! expectations, and the verdict.

use std::path::Path;
use std::time::Instant;

use crate::check::timeline::RunEvent;
use crate::check::{self, PairReport, Verdict};
use crate::error::infra;
use crate::guest::SshKey;
use crate::scenario::{Phase, ProbeFrom};

use super::boot;
use super::phase::{PhaseRun, run_phase};
use super::record;
use super::up::{Up, finish_boot};

pub use super::context::PairContext;
use super::context::PairState;
pub use super::fault::check_faults;

/// Run one pair to its verdict. Never returns an error: infrastructure failures become
/// an `error` verdict, so the other pairs go on.
pub async fn run_pair(ctx: PairContext) -> PairReport {
    crate::evidence::redact::register(&ctx.run_dir, ctx.redactor.clone());
    let origin = Instant::now();
    let started_unix = record::unix_now();
    let mut state = PairState {
        outcomes: Vec::new(),
        probes: Vec::new(),
        boots: Vec::new(),
        timeline: record::Timeline::new(&ctx.run_dir, origin, Some(ctx.status.clone())),
    };
    state.timeline.event(RunEvent::PairStarted, &ctx.pair.id);
    // Hashed before the first QEMU starts: a "before" taken while a VM runs could
    // already hold a write the run made, and the comparison would miss it.
    let base_before = record::base_checksum(ctx.spec.base_disk().map(Path::to_path_buf)).await;
    record::identity_evidence(&ctx.run_dir, &ctx.spec, &base_before, None);
    let result = execute(&ctx, origin, &mut state).await;
    // Every VM of the pair is gone by now; the base image must read as it did before.
    state
        .timeline
        .event(RunEvent::TornDown, "every VM of the pair has stopped");
    let base_after = record::base_checksum(ctx.spec.base_disk().map(Path::to_path_buf)).await;
    state
        .timeline
        .event(RunEvent::BaseImageChecked, "sha256 after the pair");
    record::identity_evidence(&ctx.run_dir, &ctx.spec, &base_before, Some(&base_after));
    let result = result.and_then(|()| match (&base_before, &base_after) {
        (Ok(b), Ok(a)) if b != a => Err(infra(format!(
            "the base image {} changed during the run (sha256 {b} before, {a} after)",
            ctx.spec.base_disk().unwrap_or(Path::new("?")).display()
        ))),
        _ => Ok(()),
    });
    let verdict = match result {
        Ok(()) => check::verdict(&state.outcomes, &ctx.pair.expected),
        Err(e) => {
            state.timeline.event(
                match crate::error::class(&e) {
                    crate::error::ErrorClass::Usage => RunEvent::ScenarioError,
                    crate::error::ErrorClass::Infrastructure => RunEvent::InfrastructureError,
                },
                &format!("{e:#}"),
            );
            Verdict::Error {
                message: format!("{e:#}"),
                class: crate::error::class(&e),
            }
        }
    };
    let matches_plan = verdict.matches(&ctx.pair.expected);
    state.timeline.event(RunEvent::Verdict, verdict.word());
    PairReport {
        id: ctx.pair.id.clone(),
        repetition: ctx.pair.repetition,
        target_name: ctx.pair.target_name.clone(),
        target: ctx.pair.target.clone(),
        scenario: ctx.pair.scenario.name.clone(),
        scenario_path: ctx.pair.scenario.path.clone(),
        milestones: ctx.pair.scenario.milestones.clone(),
        focus_unit: ctx
            .pair
            .scenario
            .focus_unit
            .as_ref()
            .map(|u| u.as_str().to_string()),
        report: ctx.pair.scenario.report.clone(),
        started_unix,
        expected: ctx.pair.expected.clone(),
        verdict,
        matches_plan,
        outcomes: state.outcomes,
        probes: state.probes,
        boots: state.boots,
        duration_secs: origin.elapsed().as_secs_f64(),
        run_dir: ctx.run_dir.clone(),
    }
}

async fn execute(ctx: &PairContext, origin: Instant, state: &mut PairState) -> anyhow::Result<()> {
    let scenario = &ctx.pair.scenario;
    let faults: Vec<&str> = ctx.spec.faults.keys().map(String::as_str).collect();
    check_faults(&ctx.pair, &faults)?;
    let key = SshKey::generate()?.require_host_key(boot::requires_host_key(&ctx.spec));
    crate::evidence::redact::add_key(&ctx.run_dir, &key);
    let forwards = host_ports(&scenario.phases);
    let run = PhaseRun {
        ctx,
        key: &key,
        forwards: &forwards,
        origin,
    };
    let mut up: Option<Up> = None;
    let mut collected = false;
    for phase in &scenario.phases {
        let ended = run_phase(&run, &mut up, phase, state).await?;
        collected = ended.collected;
        if ended.stop {
            break;
        }
    }
    if let Some(last) = up.take() {
        if !collected {
            finish_boot(ctx, &last, None).await;
        }
        drop(last);
    }
    Ok(())
}

/// Guest ports that host probes need forwarded.
fn host_ports(phases: &[Phase]) -> Vec<u16> {
    let mut ports = Vec::new();
    for h in phases
        .iter()
        .flat_map(|p| p.expect.iter().flat_map(|e| e.kind.probes()))
    {
        if h.from == ProbeFrom::Host
            && let Some(port) = reqwest::Url::parse(&h.url)
                .ok()
                .and_then(|u| u.port_or_known_default())
            && !ports.contains(&port)
        {
            ports.push(port);
        }
    }
    ports
}
