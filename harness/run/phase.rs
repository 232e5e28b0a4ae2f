//! One phase of a pair: bring its boot up (or keep the one running), run its actions,
//! check its expectations in turns, and read the evidence of its end.

use std::time::{Duration, Instant};

use crate::check::timeline::RunEvent;
use crate::check::{self, ExpectationOutcome};
use crate::guest::SshKey;
use crate::scenario::{Phase, PhaseStart};
use crate::vm::Vm;

use super::actions::act;
use super::boot;
use super::context::{PairContext, PairState, needs_more, outcome};
use super::expect::Live;
use super::record;
use super::units_read;
use super::up::{UnitsReading, Up, connect, cycle, finish_boot};

/// What every phase of a pair shares.
pub(super) struct PhaseRun<'a> {
    /// The pair.
    pub ctx: &'a PairContext,
    /// The pair's SSH key.
    pub key: &'a SshKey,
    /// The guest ports host probes need forwarded.
    pub forwards: &'a [u16],
    /// When the pair began.
    pub origin: Instant,
}

/// How a phase ended.
pub(super) struct Ended {
    /// A failed expectation ends the pair here.
    pub stop: bool,
    /// The boot's last evidence was collected (the pair's last phase).
    pub collected: bool,
}

/// Run `phase` on the pair's guest (`up`, booted here when the phase asks for a boot or
/// none is running).
pub(super) async fn run_phase(
    run: &PhaseRun<'_>,
    up: &mut Option<Up>,
    phase: &Phase,
    state: &mut PairState,
) -> anyhow::Result<Ended> {
    let ctx = run.ctx;
    state.timeline.event(RunEvent::Phase, &phase.name);
    let start = start(run, up, phase, state).await?;
    let mut phase_t0 = start;
    for action in &phase.actions {
        let current = up.take().expect("a phase runs on a booted guest");
        *up = Some(act(ctx, current, action, run.key, phase, run.origin, state).await?);
        if phase.start == PhaseStart::Continue {
            phase_t0 = Instant::now();
        }
    }
    let current = up.as_mut().expect("a phase runs on a booted guest");
    let failed = check(run, current, phase, (start, phase_t0), state).await?;
    let stop = failed && !needs_more(&ctx.pair.expected, &state.outcomes);
    let is_last = stop || std::ptr::eq(phase, ctx.pair.scenario.phases.last().expect("a phase"));
    end(ctx, current, phase, is_last, state).await;
    if stop {
        state.timeline.event(
            RunEvent::Stopped,
            "an expectation failed; later phases skipped",
        );
    }
    Ok(Ended {
        stop,
        collected: is_last,
    })
}

/// Boot (or cycle) the guest when the phase asks for it; when the phase's time starts.
async fn start(
    run: &PhaseRun<'_>,
    up: &mut Option<Up>,
    phase: &Phase,
    state: &mut PairState,
) -> anyhow::Result<Instant> {
    let (ctx, key, origin) = (run.ctx, run.key, run.origin);
    let forwards = run.forwards.to_vec();
    Ok(match (phase.start, up.is_some()) {
        (PhaseStart::ColdBoot, _) | (_, false) => {
            if let Some(old) = up.take() {
                finish_boot(ctx, &old, None).await;
            }
            let mut config = boot::vm_config(
                &ctx.spec,
                key,
                &phase.boot,
                ctx.accel.clone(),
                ctx.run_dir.clone(),
                forwards.clone(),
                ctx.keep,
            )?;
            config.set_vcpus(ctx.vcpus.clone());
            (ctx.status)(&format!("phase {}: starting QEMU", phase.name));
            let vm = Vm::start(config).await?;
            record::vm_evidence(&vm, &ctx.run_dir)?;
            let qemu_started = Instant::now() - vm.uptime();
            let fresh = connect(ctx, vm, key, phase, origin, state).await?;
            *up = Some(fresh);
            qemu_started
        }
        (PhaseStart::Reboot | PhaseStart::PowerCycle, true) => {
            let current = up.take().expect("checked above");
            let vm = cycle(ctx, current, phase.start, &phase.boot, key).await?;
            let qemu_started = Instant::now() - vm.uptime();
            *up = Some(connect(ctx, vm, key, phase, origin, state).await?);
            qemu_started
        }
        (PhaseStart::Continue, true) => Instant::now(),
    })
}

/// What the phase's expectations can use on `current`.
fn live<'a>(ctx: &'a PairContext, current: &'a Up, phase: &Phase, start: Instant) -> Live<'a> {
    // A start PID 1 logged before the phase's actions ended does not decide a wait:
    // the actions may have changed the unit in ways the stream has not brought yet.
    let journal_floor_us = if phase.actions.is_empty() && phase.start != PhaseStart::Continue {
        0
    } else {
        current.clock.to_guest_us(Instant::now()) + current.clock.uncertainty.as_micros() as u64
    };
    // The unit types were read at connect: after an action (which may have added
    // or changed units and reloaded systemd) they may be stale, so systemctl decides.
    let means_active = if current.acted {
        std::collections::HashMap::new()
    } else {
        current.start_done_means_active.clone()
    };
    Live {
        recorder: current.recorder.as_ref().map(|(r, _)| r.clone()),
        vm: Some(&current.vm),
        guest: &current.guest,
        journal: current.journal.clone(),
        clock: std::sync::Mutex::new(current.clock),
        status: ctx.status.as_ref(),
        probes: Default::default(),
        cycles: current.cycles.clone(),
        phase_started: start,
        qemu_started: Instant::now() - current.vm.uptime(),
        journal_floor_us,
        start_done_means_active: means_active.clone(),
        early: super::early::EarlyDecisions::watch(
            current.journal.clone(),
            phase
                .expect
                .iter()
                .filter_map(|e| e.kind.awaited())
                .filter(|u| check::units::decidable_by_journal(u))
                .cloned()
                .collect(),
            means_active,
            journal_floor_us,
        ),
    }
}

/// Check the phase's expectations in turns, recording each outcome as it is decided;
/// whether any failed.
async fn check(
    run: &PhaseRun<'_>,
    current: &mut Up,
    phase: &Phase,
    (start, phase_t0): (Instant, Instant),
    state: &mut PairState,
) -> anyhow::Result<bool> {
    let (ctx, origin) = (run.ctx, run.origin);
    let live = live(ctx, current, phase, start);
    let mut failed = false;
    let mut decided: Vec<(usize, ExpectationOutcome)> = Vec::new();
    let boot_index = current.vm.boot_index();
    let timeline = &mut state.timeline;
    super::turns::check_phase(&live, phase, phase_t0, &mut |index, awaited| {
        let exp = &phase.expect[index];
        let outcome = outcome(exp, awaited, origin, &ctx.run_dir, &phase.name, boot_index);
        timeline.event_at(
            awaited.decided,
            if outcome.held {
                RunEvent::Held
            } else {
                RunEvent::Failed
            },
            &format!("{}: {}", outcome.id, outcome.seen),
        );
        failed |= !outcome.held;
        decided.push((index, outcome));
    })
    .await?;
    state.probes.append(&mut live.take_probes());
    drop(live);
    if !current.caught_up_logged
        && let Some(at) = current
            .journal
            .caught_up(&current.clock, Duration::from_secs(1))
    {
        current.caught_up_logged = true;
        state.timeline.event_at(
            at,
            RunEvent::JournalCaughtUp,
            &format!("boot {}: the stream is live", current.vm.boot_index()),
        );
    }
    decided.sort_by_key(|(i, _)| *i);
    state.outcomes.extend(decided.into_iter().map(|(_, o)| o));
    state.probes.append(&mut current.cycles.take_probes());
    Ok(failed)
}

/// Read the evidence of the phase's end: every unit's state, and on the pair's last
/// phase the boot's journal, plot, critical chain and wait-for graph.
async fn end(
    ctx: &PairContext,
    current: &mut Up,
    phase: &Phase,
    is_last: bool,
    state: &mut PairState,
) {
    let idle = idle_units(ctx, current, &phase.name, state).await;
    if is_last {
        // The pair ends here: its last evidence on both sessions at once.
        // The boot still starts units (and no wait cycle holds it): let it finish
        // first, so the boot's last evidence is of its end.
        if idle.is_none()
            && current.cycles.standing().is_none()
            && let Some((recorder, _)) = &current.recorder
        {
            let mut recorder = recorder.clone();
            if !recorder.with(|l| l.queue.is_empty()) {
                let settled = super::idle::queue_empty(&mut recorder, BOOT_SETTLE).await;
                state.timeline.event(
                    RunEvent::BootSettled,
                    &if settled {
                        "PID 1's job queue emptied; the boot's evidence is read now".to_string()
                    } else {
                        format!(
                            "PID 1's job queue still held jobs after {} s; the boot's evidence is read anyway",
                            BOOT_SETTLE.as_secs()
                        )
                    },
                );
            }
        }
        let current = &*current;
        let units: UnitsReading = match idle {
            Some(read) => Box::pin(async move { Some(read) }),
            None => Box::pin(end_units(ctx, current, phase)),
        };
        finish_boot(ctx, current, Some(units)).await;
        state
            .timeline
            .event(RunEvent::EvidenceCollected, &phase.name);
    } else {
        current.last_units = match idle {
            Some(read) => Some(read),
            None => end_units(ctx, current, phase).await,
        };
    }
}

/// Every unit's state read now, as the phase's end (through the recorder, else SSH).
async fn end_units(ctx: &PairContext, up: &Up, phase: &Phase) -> Option<units_read::UnitsRead> {
    units_read::phase_evidence(
        &up.guest,
        up.recorder.as_ref().map(|(r, _)| r),
        &up.clock,
        &ctx.run_dir,
        &phase.name,
        &ctx.pair.scenario,
    )
    .await
}

/// Every unit's state read at the boot's first idle moment, when PID 1 reported no job
/// and no unit change from then to this phase's end (so it is the state at that end),
/// written as the phase's units file; `None` when it must be read now.
async fn idle_units(
    ctx: &PairContext,
    up: &mut Up,
    phase: &str,
    state: &mut PairState,
) -> Option<units_read::UnitsRead> {
    let idle = up.idle.as_mut()?.if_unchanged().await.and_then(|i| {
        i.units
            .clone()
            .ok_or_else(|| "the idle read of every unit failed".to_string())
    });
    let mut read = match idle {
        Ok(read) => read,
        Err(why) => return changed_units(ctx, up, phase, state, why).await,
    };
    read.when = format!(
        "the end of phase {phase} (read at the boot's first idle moment, {:.1} s; PID 1 \
         reported no job and no unit change from then to the phase's end)",
        read.at_us as f64 / 1e6
    );
    units_read::write_units(&ctx.run_dir, phase, &read);
    state.timeline.event(
        RunEvent::UnitsReadIdle,
        &format!(
            "every unit's state read at guest {:.1} s from {}, unchanged to the end of phase {phase}",
            read.at_us as f64 / 1e6,
            read.by.words()
        ),
    );
    Some(read)
}

/// Every unit's state from the boot's last idle read, with the units PID 1 reported
/// changed since re-read now (`units_read::delta`); `None` when that cannot be (no idle
/// read completed, the recorder stopped, PID 1 reloaded, or the re-read failed), and
/// every unit must be read now, for `why`.
async fn changed_units(
    ctx: &PairContext,
    up: &Up,
    phase: &str,
    state: &mut PairState,
    why: String,
) -> Option<units_read::UnitsRead> {
    let recorder = up.recorder.as_ref().map(|(r, _)| r);
    let (Some((base, changed)), Some(recorder)) = (
        up.idle.as_ref().and_then(|i| i.changed_since_read()),
        recorder,
    ) else {
        state.timeline.event(RunEvent::UnitsReadAtEnd, &why);
        return None;
    };
    let base_us = base.at_us;
    let mut read = match units_read::delta(recorder, &up.clock, base, &changed, "").await {
        Ok(read) => read,
        Err(e) => {
            state.timeline.event(
                RunEvent::UnitsReadAtEnd,
                &format!("{why}; the re-read of the changed units failed: {e}"),
            );
            return None;
        }
    };
    read.when = format!(
        "the end of phase {phase} (every unit read at the boot's idle moment, {:.1} s; \
         the {} PID 1 reported changed since re-read at {:.1} s)",
        base_us as f64 / 1e6,
        changed.len(),
        read.at_us as f64 / 1e6
    );
    units_read::write_units(&ctx.run_dir, phase, &read);
    state.timeline.event(
        RunEvent::UnitsReadDelta,
        &format!(
            "{why}: every unit's state from the idle read at guest {:.1} s, and the {} units PID 1 reported changed since ({}) re-read from {}",
            base_us as f64 / 1e6,
            changed.len(),
            changed.join(", "),
            read.by.words()
        ),
    );
    Some(read)
}

/// How long a pair that ends while its boot still starts units waits for the boot to
/// finish before its last evidence is read.
const BOOT_SETTLE: Duration = Duration::from_secs(10);
