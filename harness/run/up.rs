//! A booted guest: bringing its boot up to a live watch (SSH, clock, journal, recorder,
//! wait-cycle watcher), cycling it, and collecting a boot's last evidence.

use std::time::{Duration, Instant};

use crate::check::BootRecord;
use crate::check::timeline::RunEvent;
use crate::error::infra;
use crate::guest::{Guest, SshKey};
use crate::scenario::{Phase, PhaseStart};
use crate::vm::Vm;

use super::boot;
use super::clock::GuestClock;
use super::context::{PairContext, PairState, persist_of};
use super::cycles::{self, CycleWatcher, Cycles};
use super::fault::inject_fault;
use super::record;
use super::units_read;
use super::watch::{Follower, Journal};

/// How long a clean reboot may take to bring QEMU down (`-no-reboot` makes it exit).
const REBOOT_EXIT: Duration = Duration::from_secs(120);

/// A booted guest with its journal follower, clock and wait-cycle watcher.
pub(super) struct Up {
    pub(super) vm: Vm,
    pub(super) guest: Guest,
    pub(super) journal: Journal,
    pub(super) _follower: Follower,
    pub(super) clock: GuestClock,
    pub(super) cycles: Cycles,
    pub(super) _watcher: CycleWatcher,
    /// The boot's recorder, when the guest runs one (dropped last: it ends the stream).
    pub(super) recorder: Option<(
        crate::guest::recorder::Recorder,
        crate::guest::recorder::RecorderTask,
    )>,
    pub(super) baseline: Option<super::baseline::Baseline>,
    /// Per unit the scenario awaits: whether its start job ending `done` means active.
    pub(super) start_done_means_active: std::collections::HashMap<String, bool>,
    /// Whether the harness changed the guest on this boot (see [`Up::touched`]).
    pub(super) acted: bool,
    /// Whether the timeline says when the journal stream caught up with this boot.
    pub(super) caught_up_logged: bool,
    /// Every unit's state at the end of this boot's last phase, for its plot; cleared
    /// by [`Up::touched`].
    pub(super) last_units: Option<units_read::UnitsRead>,
    /// The end-of-phase reads made at the boot's first idle moment (with a recorder).
    pub(super) idle: Option<super::idle::IdleRead>,
}

impl Up {
    /// The harness changed the guest (an action, a fault): what was read of it before
    /// (the unit types, the last phase's unit states) may be stale.
    pub(super) fn touched(&mut self) {
        self.acted = true;
        self.last_units = None;
        self.cycles.forget_listeners();
    }
}

/// The end of phase's read of every unit, running beside a boot's other last reads.
pub(super) type UnitsReading<'a> =
    std::pin::Pin<Box<dyn Future<Output = Option<units_read::UnitsRead>> + 'a>>;

/// Collect a boot's evidence before it ends: its journal, critical chain, plot and
/// wait-for graph. The plot is drawn from `units` (the last phase's read, beside these),
/// else from the boot's last phase if nothing acted since, else from a read made now.
pub(super) async fn finish_boot(ctx: &PairContext, up: &Up, units: Option<UnitsReading<'_>>) {
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
                units_read::every_unit(&up.guest, recorder, &up.clock, &named, when).await
            }
        }
    };
    // The journal on the wait-cycle watcher's session, whose own reads are short, the
    // listeners on the main one, unit states through the recorder (else on the main
    // session too): the slow reads do not queue behind each other.
    let listeners = up.cycles.listeners_read();
    let journal_head = up
        .idle
        .as_ref()
        .and_then(|i| i.journal())
        .map(str::to_string);
    let sessions = record::Sessions {
        journal: &guest,
        listeners: &up.guest,
    };
    record::boot_evidence(
        sessions,
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
pub(super) async fn connect(
    ctx: &PairContext,
    vm: Vm,
    key: &SshKey,
    phase: &Phase,
    origin: Instant,
    state: &mut PairState,
) -> anyhow::Result<Up> {
    // Read from QEMU's start: the relay's writes wait for a reader.
    let recorder = boot::has_recorder(&ctx.spec)
        .then(|| crate::guest::recorder::Recorder::start(vm.run_dir(), &ctx.spec.gates));
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
        RunEvent::SshUp,
        &format!(
            "boot {} after {:.1}s; {}",
            vm.boot_index(),
            took.as_secs_f64(),
            guest.host_key().describe()
        ),
    );
    let awaited = awaited_units(&ctx.pair.scenario);
    let baseline = ctx
        .baseline_poll
        .then(|| super::baseline::Baseline::start(&guest, awaited.clone(), origin));
    // All take SSH round trips, slow on a busy TCG guest: overlap them. The unit types
    // are read now so that no unit wait needs a round trip before the journal decides it;
    // the wait-cycle watcher does not wait for them.
    let session = cycles::open_session(&guest);
    let named = ctx.pair.scenario.named_units();
    let watching = async {
        let (clock, followed) = tokio::join!(
            super::timed("connect: the clock", GuestClock::sample(&guest)),
            super::timed(
                "connect: the journal follow",
                Journal::follow(&guest, &named, recorder.as_ref().map(|(r, _)| r))
            ),
        );
        let (clock, (journal, follower)) = (clock?, followed?);
        state.timeline.event(
            RunEvent::Watching,
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
        anyhow::Ok((clock, journal, follower, cycles, watcher))
    };
    let (watching, types) = tokio::join!(
        watching,
        super::timed(
            "connect: the unit types",
            start_done_means_active(&guest, &awaited)
        )
    );
    let (clock, journal, follower, cycles, watcher) = watching?;
    let start_done_means_active = types?;
    let idle = recorder
        .as_ref()
        .map(|(r, _)| super::idle::IdleRead::start(r.clone(), guest.clone(), clock, named.clone()));
    if let Some((r, _)) = &recorder {
        state.timeline.event(
            RunEvent::Recorder,
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

/// The units the scenario's waits await, each once, sorted.
fn awaited_units(scenario: &crate::scenario::Scenario) -> Vec<String> {
    scenario
        .phases
        .iter()
        .flat_map(|p| p.expect.iter())
        .filter_map(|e| e.kind.awaited().map(|u| u.unit.as_str().to_string()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Per awaited unit, by the name the scenario uses (an alias's Id is another name),
/// whether PID 1 ending its start job `done` means it is active. A unit systemd has not
/// loaded has no type to go by: systemctl decides it.
async fn start_done_means_active(
    guest: &Guest,
    awaited: &[String],
) -> anyhow::Result<std::collections::HashMap<String, bool>> {
    let states = crate::guest::systemd::unit_snapshot(guest, awaited).await?;
    Ok(awaited
        .iter()
        .cloned()
        .zip(
            states
                .iter()
                .map(|s| s.load_state == "loaded" && s.start_done_means_active()),
        )
        .collect())
}

/// Reboot cleanly or cut the power, with the phase's boot options (and boot faults
/// injected first). Returns the VM on its new boot, not yet connected.
pub(super) async fn cycle(
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
