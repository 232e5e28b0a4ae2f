//! Running one (target, scenario) pair on its own overlay: phases, actions,
//! expectations, and the verdict.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::check::{self, BootRecord, ExpectationOutcome, PairReport, ProbeRecord, Verdict};
use crate::error::{infra, usage};
use crate::guest::{Guest, SshKey};
use crate::scenario::{
    Action, Expectation, ExpectationKind, Expected, Phase, PhaseStart, ProbeFrom, RunPair,
};
use crate::targets::BootSpec;
use crate::vm::{AccelChoice, Vm};

use super::boot;
use super::clock::GuestClock;
use super::cycles::{self, CycleWatcher, Cycles};
use super::expect::{self, Live};
use super::lost;
use super::record;
use super::watch::{Follower, Journal};

/// How long a clean reboot may take to bring QEMU down (`-no-reboot` makes it exit).
const REBOOT_EXIT: Duration = Duration::from_secs(120);

/// Everything one pair needs that is shared with other pairs.
pub struct PairContext {
    /// The pair.
    pub pair: RunPair,
    /// Its target, prepared.
    pub spec: Arc<BootSpec>,
    /// What its folder's files must not show (the plan's and the target's patterns;
    /// the pair adds its keys).
    pub redactor: crate::evidence::redact::Redactor,
    /// The accelerator for every VM of the run.
    pub accel: AccelChoice,
    /// Virtual CPUs for each VM, and why (see [`crate::vm::config::vcpus`]).
    pub vcpus: (u32, String),
    /// This pair's folder in the evidence bundle.
    pub run_dir: PathBuf,
    /// Keep overlays afterwards.
    pub keep: bool,
    /// How long to wait for SSH after each boot.
    pub ssh_timeout: Duration,
    /// Run the naive baseline poller beside the runner (`run::baseline`).
    pub baseline_poll: bool,
    /// Where the progress line goes.
    pub status: Arc<dyn Fn(&str) + Send + Sync>,
}

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
        timeline: record::Timeline::new(&ctx.run_dir, origin),
    };
    state.timeline.event("pair started", &ctx.pair.id);
    // Hashed before the first QEMU starts: a "before" taken while a VM runs could
    // already hold a write the run made, and the comparison would miss it.
    let base_before = record::base_checksum(ctx.spec.base_disk().map(Path::to_path_buf)).await;
    record::identity_evidence(&ctx.run_dir, &ctx.spec, &base_before, None);
    let result = execute(&ctx, origin, &mut state).await;
    // Every VM of the pair is gone by now; the base image must read as it did before.
    state
        .timeline
        .event("torn down", "every VM of the pair has stopped");
    let base_after = record::base_checksum(ctx.spec.base_disk().map(Path::to_path_buf)).await;
    state
        .timeline
        .event("base image checked", "sha256 after the pair");
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
                    crate::error::ErrorClass::Usage => "scenario error",
                    crate::error::ErrorClass::Infrastructure => "infrastructure error",
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
    state.timeline.event("verdict", verdict.word());
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

struct PairState {
    outcomes: Vec<ExpectationOutcome>,
    probes: Vec<ProbeRecord>,
    boots: Vec<BootRecord>,
    timeline: record::Timeline,
}

/// A booted guest with its journal follower, clock and wait-cycle watcher.
struct Up {
    vm: Vm,
    guest: Guest,
    journal: Journal,
    _follower: Follower,
    clock: GuestClock,
    cycles: Cycles,
    _watcher: CycleWatcher,
    /// The boot's recorder, when the guest runs one (dropped last: it ends the stream).
    recorder: Option<(
        crate::guest::recorder::Recorder,
        crate::guest::recorder::RecorderTask,
    )>,
    baseline: Option<super::baseline::Baseline>,
    /// Per unit the scenario awaits: whether its start job ending `done` means active.
    start_done_means_active: std::collections::HashMap<String, bool>,
    /// Whether the harness changed the guest on this boot (see [`Up::touched`]).
    acted: bool,
    /// Whether the timeline says when the journal stream caught up with this boot.
    caught_up_logged: bool,
    /// Every unit's state at the end of this boot's last phase, for its plot; cleared
    /// by [`Up::touched`].
    last_units: Option<record::UnitsRead>,
    /// The end-of-phase reads made at the boot's first idle moment (with a recorder).
    idle: Option<super::idle::IdleRead>,
}

impl Up {
    /// The harness changed the guest (an action, a fault): what was read of it before
    /// (the unit types, the last phase's unit states) may be stale.
    fn touched(&mut self) {
        self.acted = true;
        self.last_units = None;
        self.cycles.forget_listeners();
    }
}

async fn execute(ctx: &PairContext, origin: Instant, state: &mut PairState) -> anyhow::Result<()> {
    let scenario = &ctx.pair.scenario;
    let faults: Vec<&str> = ctx.spec.faults.keys().map(String::as_str).collect();
    check_faults(&ctx.pair, &faults)?;
    let key = SshKey::generate()?.require_host_key(boot::requires_host_key(&ctx.spec));
    crate::evidence::redact::add_key(&ctx.run_dir, &key);
    let forwards = host_ports(&scenario.phases);
    let mut up: Option<Up> = None;
    let mut finished = false;

    for phase in &scenario.phases {
        (ctx.status)(&format!("phase {}", phase.name));
        state.timeline.event("phase", &phase.name);
        let start = match (phase.start, up.is_some()) {
            (PhaseStart::ColdBoot, _) | (_, false) => {
                if let Some(old) = up.take() {
                    finish_boot(ctx, &old, None).await;
                }
                let mut config = boot::vm_config(
                    &ctx.spec,
                    &key,
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
                let fresh = connect(ctx, vm, &key, phase, origin, state).await?;
                up = Some(fresh);
                qemu_started
            }
            (PhaseStart::Reboot | PhaseStart::PowerCycle, true) => {
                let current = up.take().expect("checked above");
                let vm = cycle(ctx, current, phase.start, &phase.boot, &key).await?;
                let qemu_started = Instant::now() - vm.uptime();
                up = Some(connect(ctx, vm, &key, phase, origin, state).await?);
                qemu_started
            }
            (PhaseStart::Continue, true) => Instant::now(),
        };

        let mut phase_t0 = start;
        for action in &phase.actions {
            let current = up.take().expect("a phase runs on a booted guest");
            up = Some(act(ctx, current, action, &key, phase, origin, state).await?);
            if phase.start == PhaseStart::Continue {
                phase_t0 = Instant::now();
            }
        }

        let current = up.as_mut().expect("a phase runs on a booted guest");
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
        let live = Live {
            recorder: current.recorder.as_ref().map(|(r, _)| r.clone()),
            vm: &current.vm,
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
        };
        let mut failed = false;
        let mut decided: Vec<(usize, ExpectationOutcome)> = Vec::new();
        let boot_index = current.vm.boot_index();
        let timeline = &mut state.timeline;
        super::turns::check_phase(&live, phase, phase_t0, &mut |index, awaited| {
            let exp = &phase.expect[index];
            let outcome = outcome(exp, awaited, origin, &ctx.run_dir, &phase.name, boot_index);
            timeline.event_at(
                awaited.decided,
                if outcome.held { "held" } else { "failed" },
                &format!("{}: {}", outcome.id, outcome.seen),
            );
            failed |= !outcome.held;
            decided.push((index, outcome));
        })
        .await?;
        if !current.caught_up_logged
            && let Some(at) = current
                .journal
                .caught_up(&current.clock, Duration::from_secs(1))
        {
            current.caught_up_logged = true;
            state.timeline.event_at(
                at,
                "journal caught up",
                &format!("boot {}: the stream is live", current.vm.boot_index()),
            );
        }
        decided.sort_by_key(|(i, _)| *i);
        state.outcomes.extend(decided.into_iter().map(|(_, o)| o));
        state.probes.append(&mut live.take_probes());
        state.probes.append(&mut current.cycles.take_probes());
        let stop = failed && !needs_more(&ctx.pair.expected, &state.outcomes);
        let is_last = stop || std::ptr::eq(phase, scenario.phases.last().expect("a phase"));
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
                        "boot settled",
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
                None => Box::pin(record::phase_evidence(
                    &current.guest,
                    current.recorder.as_ref().map(|(r, _)| r),
                    &current.clock,
                    &ctx.run_dir,
                    &phase.name,
                    scenario,
                )),
            };
            finish_boot(ctx, current, Some(units)).await;
            state.timeline.event("evidence collected", &phase.name);
            finished = true;
        } else {
            current.last_units = match idle {
                Some(read) => Some(read),
                None => {
                    record::phase_evidence(
                        &current.guest,
                        current.recorder.as_ref().map(|(r, _)| r),
                        &current.clock,
                        &ctx.run_dir,
                        &phase.name,
                        scenario,
                    )
                    .await
                }
            };
        }
        if stop {
            state
                .timeline
                .event("stopped", "an expectation failed; later phases skipped");
            break;
        }
    }
    if let Some(last) = up.take() {
        if !finished {
            finish_boot(ctx, &last, None).await;
        }
        drop(last);
    }
    Ok(())
}

/// Every unit's state read at the boot's first idle moment, when PID 1 reported no job
/// and no unit change from then to this phase's end (so it is the state at that end),
/// written as the phase's units file; `None` when it must be read now.
async fn idle_units(
    ctx: &PairContext,
    up: &mut Up,
    phase: &str,
    state: &mut PairState,
) -> Option<record::UnitsRead> {
    let idle = up.idle.as_mut()?.if_unchanged().await.and_then(|i| {
        i.units
            .clone()
            .ok_or_else(|| "the idle read of every unit failed".to_string())
    });
    let mut read = match idle {
        Ok(read) => read,
        Err(why) => {
            state.timeline.event("units read at the phase's end", &why);
            return None;
        }
    };
    read.when = format!(
        "the end of phase {phase} (read at the boot's first idle moment, {:.1} s; PID 1 \
         reported no job and no unit change from then to the phase's end)",
        read.at_us as f64 / 1e6
    );
    record::write_units(&ctx.run_dir, phase, &read);
    state.timeline.event(
        "units read at the idle moment",
        &format!(
            "every unit's state read at guest {:.1} s from {}, unchanged to the end of phase {phase}",
            read.at_us as f64 / 1e6,
            read.by.words()
        ),
    );
    Some(read)
}

/// How long a pair that ends while its boot still starts units waits for the boot to
/// finish before its last evidence is read.
const BOOT_SETTLE: Duration = Duration::from_secs(10);

/// The end of phase's read of every unit, running beside a boot's other last reads.
type UnitsReading<'a> = std::pin::Pin<Box<dyn Future<Output = Option<record::UnitsRead>> + 'a>>;

/// Collect a boot's evidence before it ends: its journal, critical chain, plot and
/// wait-for graph. The plot is drawn from `units` (the last phase's read, beside these),
/// else from the boot's last phase if nothing acted since, else from a read made now.
async fn finish_boot(ctx: &PairContext, up: &Up, units: Option<UnitsReading<'_>>) {
    let index = up.vm.boot_index();
    let guest = up.cycles.session().unwrap_or_else(|| up.guest.clone());
    let focus = ctx.pair.scenario.focus_unit.as_ref().map(|u| u.as_str());
    let units = async {
        match (units, &up.last_units) {
            (Some(reading), _) => reading.await,
            (None, Some(read)) => Some(read.clone()),
            (None, None) => {
                let named = ctx.pair.scenario.named_units();
                let recorder = up.recorder.as_ref().map(|(r, _)| r);
                let when = "the end of the boot";
                record::every_unit(&up.guest, recorder, &up.clock, &named, when).await
            }
        }
    };
    // Unit states on the main session, the journal on the wait-cycle watcher's, whose own
    // reads are short: the states and the journal do not queue behind each other.
    let listeners = up.cycles.listeners_read();
    let journal_head = up
        .idle
        .as_ref()
        .and_then(|i| i.journal())
        .map(str::to_string);
    record::boot_evidence(
        &guest,
        &ctx.run_dir,
        index,
        focus,
        units,
        listeners,
        journal_head,
    )
    .await;
    let (json, dot) = up.cycles.evidence();
    record::waitfor_evidence(&ctx.run_dir, index, &json, &dot);
    record::signals_evidence(&ctx.run_dir, index, &up.journal, &up.clock);
    if let Some((recorder, _)) = &up.recorder {
        record::recorder_evidence(&ctx.run_dir, index, recorder, &up.clock);
        record::connections_evidence(&ctx.run_dir, index, recorder);
    }
    if let Some(b) = &up.baseline {
        let _ = record::write_json(
            &ctx.run_dir.join(format!("baseline-boot-{index}.json")),
            &b.evidence(),
        );
    }
}

/// Wait for SSH on the VM's current boot, then start watching it.
async fn connect(
    ctx: &PairContext,
    vm: Vm,
    key: &SshKey,
    phase: &Phase,
    origin: Instant,
    state: &mut PairState,
) -> anyhow::Result<Up> {
    // Read from QEMU's start: the relay's writes wait for a reader.
    let recorder = boot::has_recorder(&ctx.spec)
        .then(|| crate::guest::recorder::Recorder::start(vm.run_dir()));
    (ctx.status)(&format!(
        "phase {}: waiting for SSH on {}",
        phase.name,
        vm.ssh_addr()
    ));
    let (guest, took) = boot::connect(&vm, key, ctx.ssh_timeout).await?;
    let qemu_started = Instant::now() - vm.uptime();
    state.boots.push(BootRecord {
        index: vm.boot_index(),
        phase: phase.name.clone(),
        to_ssh_secs: took.as_secs_f64(),
        at_secs: qemu_started.saturating_duration_since(origin).as_secs_f64(),
    });
    state.timeline.event(
        "ssh up",
        &format!(
            "boot {} after {:.1}s; {}",
            vm.boot_index(),
            took.as_secs_f64(),
            guest.host_key().describe()
        ),
    );
    let awaited: Vec<String> = ctx
        .pair
        .scenario
        .phases
        .iter()
        .flat_map(|p| p.expect.iter())
        .filter_map(|e| e.kind.awaited().map(|u| u.unit.as_str().to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let baseline = ctx
        .baseline_poll
        .then(|| super::baseline::Baseline::start(&guest, awaited.clone(), origin));
    // All take SSH round trips, slow on a busy TCG guest: overlap them. The unit types
    // are read now so that no unit wait needs a round trip before the journal decides it.
    let session = cycles::open_session(&guest);
    let types = async {
        let states = crate::guest::systemd::unit_snapshot(&guest, &awaited).await?;
        // By the name the scenario uses (an alias's Id is another name), in call order.
        // A unit systemd has not loaded has no type to go by: systemctl decides it.
        anyhow::Ok(
            awaited
                .iter()
                .cloned()
                .zip(
                    states
                        .iter()
                        .map(|s| s.load_state == "loaded" && s.start_done_means_active()),
                )
                .collect::<std::collections::HashMap<_, _>>(),
        )
    };
    let named = ctx.pair.scenario.named_units();
    let (clock, followed, types) = tokio::join!(
        super::timed("connect: the clock", GuestClock::sample(&guest)),
        super::timed(
            "connect: the journal follow",
            Journal::follow(&guest, &named)
        ),
        super::timed("connect: the unit types", types)
    );
    let (clock, (journal, follower), start_done_means_active) = (clock?, followed?, types?);
    state.timeline.event(
        "watching",
        &format!(
            "journal followed; guest clock mapped within ±{:.0} ms",
            clock.uncertainty.as_secs_f64() * 1000.0
        ),
    );
    let (cycles, watcher) = cycles::start(cycles::WatchSetup {
        guest: guest.clone(),
        session: Some(session),
        journal: journal.clone(),
        clock,
        gates: ctx.spec.gates.clone(),
        persist: persist_of(&ctx.pair.scenario),
        status: ctx.status.clone(),
        recorder: recorder.as_ref().map(|(r, _)| r.clone()),
    });
    let idle = recorder
        .as_ref()
        .map(|(r, _)| super::idle::IdleRead::start(r.clone(), guest.clone(), clock, named.clone()));
    if let Some((r, _)) = &recorder {
        state.timeline.event(
            "recorder",
            &boot::recorder_summary(r, Instant::now() - vm.uptime()),
        );
    }
    Ok(Up {
        vm,
        guest,
        journal,
        _follower: follower,
        clock,
        cycles,
        _watcher: watcher,
        recorder,
        baseline,
        start_done_means_active,
        acted: false,
        caught_up_logged: false,
        last_units: None,
        idle,
    })
}

/// Reboot cleanly or cut the power, with the phase's boot options (and boot faults
/// injected first). Returns the VM on its new boot, not yet connected.
async fn cycle(
    ctx: &PairContext,
    up: Up,
    how: PhaseStart,
    opts: &crate::scenario::BootOptions,
    key: &SshKey,
) -> anyhow::Result<Vm> {
    let mut up = up;
    for fault in &opts.faults {
        inject_fault(ctx, &up.guest, fault).await?;
        up.touched();
    }
    finish_boot(ctx, &up, None).await;
    let Up { mut vm, guest, .. } = up;
    vm.set_cmdline(boot::cmdline(&ctx.spec, key, opts));
    if how == PhaseStart::Reboot {
        // The connection drops as the guest goes down; QEMU exits (-no-reboot).
        crate::guest::systemd::reboot(&guest).await;
        drop(guest);
        tokio::time::timeout(REBOOT_EXIT, vm.exited())
            .await
            .map_err(|_| {
                infra(format!(
                    "the guest did not go down within {}s of `systemctl reboot`",
                    REBOOT_EXIT.as_secs()
                ))
            })?;
    } else {
        drop(guest);
    }
    vm.power_cycle().await?;
    Ok(vm)
}

/// Run one action; reboots and power cycles hand back a reconnected guest.
async fn act(
    ctx: &PairContext,
    up: Up,
    action: &Action,
    key: &SshKey,
    phase: &Phase,
    origin: Instant,
    state: &mut PairState,
) -> anyhow::Result<Up> {
    state.timeline.event("action", &format!("{action:?}"));
    let how = match action {
        Action::Reboot => PhaseStart::Reboot,
        Action::PowerCycle => PhaseStart::PowerCycle,
        _ => {
            // The guest going away during an action is a loss the scenario did not ask for.
            let during = format!("phase {}, action {action:?}", phase.name);
            let work = run_action(ctx, &up, action, phase, state);
            lost::guarded(&up.vm, &up.journal, &during, work).await?;
            let mut up = up;
            up.touched();
            return Ok(up);
        }
    };
    let vm = cycle(ctx, up, how, &phase.boot, key).await?;
    connect(ctx, vm, key, phase, origin, state).await
}

/// Run an action that keeps the guest on its boot.
async fn run_action(
    ctx: &PairContext,
    up: &Up,
    action: &Action,
    phase: &Phase,
    state: &mut PairState,
) -> anyhow::Result<()> {
    match action {
        Action::Run(r) => {
            (ctx.status)(&format!("phase {}: running {}", phase.name, r.cmd));
            let out = up.guest.exec(&r.cmd).await?;
            if out.status != r.status {
                return Err(usage(format!(
                    "scenario {}: action `{}` exited {} (it declares status {}): {}",
                    ctx.pair.scenario.path.display(),
                    r.cmd,
                    out.status,
                    r.status,
                    out.stderr.trim()
                )));
            }
        }
        Action::Write(w) => {
            up.guest
                .write_file(&w.path, w.content.as_bytes(), w.mode.unwrap_or(0o644))
                .await?;
        }
        Action::Restart(r) => {
            (ctx.status)(&format!("phase {}: restarting {}", phase.name, r.unit));
            // A failing restart is the system under test's business: expectations judge it.
            let status =
                crate::guest::systemd::restart(&up.guest, r.unit.as_str(), r.no_block).await?;
            state
                .timeline
                .event("restart", &format!("{} exited {status}", r.unit));
        }
        Action::Fault(name) => inject_fault(ctx, &up.guest, name).await?,
        Action::Link(l) => {
            up.vm
                .set_link(matches!(l, crate::scenario::LinkState::Up))
                .await?
        }
        Action::Sleep(d) => tokio::time::sleep(d.0).await,
        // `act` cycles the VM itself; these never get here.
        Action::Reboot | Action::PowerCycle => {}
    }
    Ok(())
}

async fn inject_fault(ctx: &PairContext, guest: &Guest, name: &str) -> anyhow::Result<()> {
    let fault = ctx.spec.faults.get(name).ok_or_else(|| {
        usage(format!(
            "target {} defines no fault {name:?}",
            ctx.pair.target
        ))
    })?;
    (ctx.status)(&format!("injecting fault {name}"));
    let out = guest.exec(&fault.run).await?;
    if out.status != 0 {
        return Err(infra(format!(
            "fault {name} (`{}`) exited {}: {}",
            fault.run,
            out.status,
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Every fault a scenario names must exist on the target, before anything boots: a usage
/// error at the line that names the first missing one.
pub fn check_faults(pair: &RunPair, faults: &[&str]) -> anyhow::Result<()> {
    for phase in &pair.scenario.phases {
        for r in &phase.fault_refs {
            if !faults.contains(&r.name.as_str()) {
                return Err(usage(format!(
                    "{}:{}:{}: phase {:?} names fault {:?}, which target {} does not define (it defines: {})",
                    pair.scenario.path.display(),
                    r.line,
                    r.col,
                    phase.name,
                    r.name,
                    pair.target,
                    if faults.is_empty() {
                        "none".to_string()
                    } else {
                        faults.join(", ")
                    }
                )));
            }
        }
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

fn outcome(
    exp: &Expectation,
    a: &expect::Awaited,
    origin: Instant,
    run_dir: &Path,
    phase: &str,
    boot_index: u32,
) -> ExpectationOutcome {
    let mut o = ExpectationOutcome::of(exp, a.eval.clone());
    o.changed_at = a.changed.map(|c| c.saturating_duration_since(origin));
    o.decided_at = Some(a.decided.saturating_duration_since(origin));
    o.evidence = Some(run_dir.join(crate::evidence::bundle::evidence_file(
        exp.kind.spec().evidence(),
        phase,
        boot_index,
    )));
    o
}

/// How long a cycle must last to count: the scenario's first `wait_cycle: ... persist:`,
/// or the default.
fn persist_of(scenario: &crate::scenario::Scenario) -> Duration {
    scenario
        .expectations()
        .find_map(|e| {
            if let ExpectationKind::WaitCycle(w) = &e.kind {
                Some(w.persist.0)
            } else {
                None
            }
        })
        .unwrap_or(crate::scenario::DEFAULT_PERSIST)
}

/// Whether a failing run must still go on: a reproduction needs every listed id evaluated.
fn needs_more(expected: &Expected, outcomes: &[ExpectationOutcome]) -> bool {
    match expected {
        Expected::Pass => false,
        Expected::Reproduced(r) => r
            .failing
            .iter()
            .any(|id| !outcomes.iter().any(|o| &o.id == id)),
    }
}
