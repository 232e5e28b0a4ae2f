//! The wait-cycle watcher itself: one task per boot that follows the recorder's stream
//! (or, without one, reads the job queue over SSH), probes the declared gates while their
//! start jobs run, and folds every read into the boot's [`super::cycles::Cycles`] state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::check::ProbeRecord;
use crate::check::live::{CycleTracker, GateSeen, RecordedRead};
use crate::guest::Guest;
use crate::guest::recorder::{Queue, Recorder};
use crate::guest::systemd;
use crate::guest::systemd::sources::Gate;

use super::clock::GuestClock;
use super::cycle_reads::{Judge, OrderingWatch, Read, absorb, assess};
use super::gate_probe::{PROBE_EVERY, Pacing, RecorderAnswer, probe_gate, take_recorder_probes};
use super::watch::Journal;
use super::watch_state::{READ_EVERY, WatchSetup, WatchSource, WatchState};

/// The gap between reads when no start job runs (a later restart may queue one).
const IDLE_READ_EVERY: Duration = Duration::from_secs(10);
/// How long the watcher waits, once SSH is up, for the recorder's first read of the queue.
const RECORDER_GRACE: Duration = Duration::from_secs(3);

pub(super) async fn run(
    setup: WatchSetup,
    state: Arc<Mutex<WatchState>>,
    own_session: Arc<Mutex<Option<Guest>>>,
    poke: Arc<tokio::sync::Notify>,
    tx: watch::Sender<u64>,
) {
    let mut setup = setup;
    if let Some(mut rec) = setup.recorder.take() {
        // From here the watcher probes the gates over SSH itself.
        rec.stop_probes();
        let until = Instant::now() + RECORDER_GRACE;
        while rec.with(|l| l.queue_known.is_none() && l.ended.is_none()) && Instant::now() < until {
            rec.wait_news(until).await;
        }
        if rec.with(|l| l.queue_known.is_some()) {
            state.lock().expect("cycle watch lock").source = WatchSource::Recorder;
            follow_recorder(&mut setup, rec, &state, &own_session, &poke, &tx).await;
        } else {
            let why = rec.with(|l| {
                l.ended
                    .as_ref()
                    .map(|(_, w)| w.clone())
                    .unwrap_or_else(|| "no read of the queue yet".into())
            });
            tracing::info!("the recorder gave no queue ({why}): the watch reads over SSH");
            // For the honesty checks; the SSH reads probe the gates themselves.
            let _ = take_recorder_probes(&rec, &mut 0, &setup.clock, &state);
        }
    }
    follow_ssh(setup, state, own_session, poke, tx).await
}

/// The recorder drives the reads: every change PID 1 sent since early userspace, and
/// every answer of the recorder's own gate probes, is replayed in arrival order (each
/// arrival is one read), then each new one as it comes, and a read every [`READ_EVERY`]
/// while nothing changes, so a cycle that stands still is confirmed. A cycle through a
/// gate that formed before SSH answered is thus confirmed on the replay, not on two
/// more probes over SSH. SSH only probes the declared gates from then on. Returns when
/// the recorder's stream ends, so the SSH reads take over (and the gap shows in the
/// watch's window).
async fn follow_recorder(
    setup: &mut WatchSetup,
    mut rec: Recorder,
    state: &Arc<Mutex<WatchState>>,
    own_session: &Arc<Mutex<Option<Guest>>>,
    poke: &Arc<tokio::sync::Notify>,
    tx: &watch::Sender<u64>,
) {
    let mut guest = setup.guest.clone();
    let mut own = setup.session.take();
    let mut clock = setup.clock;
    let mut tracker = CycleTracker::new(setup.persist);
    let mut gates = unprobed(&setup.gates);
    let mut queue = Queue::default();
    let mut folded = 0usize;
    let mut pacing = Pacing::default();
    let mut ordering = OrderingWatch::default();
    let mut recorder_probes = 0usize;
    let mut replayed = false;
    let known_from = rec.with(|l| l.queue_known).unwrap_or_else(Instant::now);
    loop {
        if let Some(session) = take_session(&mut own, own_session).await {
            guest = session;
        }
        setup.journal.tighten(&mut clock);
        let answers = take_recorder_probes(&rec, &mut recorder_probes, &clock, state);
        let fresh = rec.since(folded);
        folded += fresh.len();
        let folding = Folding {
            clock: &clock,
            known_from,
            judge: setup.judge(),
            state,
        };
        folding.fold((&fresh, &answers), &mut queue, &mut gates, &mut tracker);
        if !replayed {
            // The replay's end is a read now, before the first probe over SSH (a round
            // trip or two on a busy guest): a cycle that has lasted `persist` by now on
            // the recorder's answers is confirmed at once.
            replayed = true;
            folding.read_now((&queue, &gates), &mut tracker, Instant::now(), Vec::new());
        }
        {
            let mut s = state.lock().expect("cycle watch lock");
            s.userspace_us = queue.userspace_us;
            s.clock = Some(clock);
        }
        let ended: Vec<String> = fresh
            .iter()
            .filter_map(|(_, e)| match e {
                crate::guest::recorder::Event::JobRemoved { unit, .. } => Some(unit.clone()),
                _ => None,
            })
            .collect();
        let probes = pacing
            .probe(&guest, &mut gates, (&queue, &ended), &clock, state)
            .await;
        // A read now: the probes' answers, or the passing of time on a still queue.
        let folding = Folding {
            clock: &clock,
            known_from,
            judge: setup.judge(),
            state,
        };
        folding.read_now((&queue, &gates), &mut tracker, Instant::now(), probes);
        tx.send_modify(|n| *n += 1);
        ordering.update(&setup.journal, state);

        if let Some((at, why)) = rec.with(|l| l.ended.clone()) {
            // What arrived before the end was folded above.
            if rec.since(folded).is_empty() {
                let line = format!("the recorder stopped: {why}; the watch goes on over SSH");
                (setup.status)(&line);
                state.lock().expect("cycle watch lock").recorder_ended = Some((at, why));
                setup.guest = guest;
                setup.clock = clock;
                return;
            }
        }
        // A gate that just failed is probed and read again as soon as allowed: a cycle
        // through it counts from the second read that shows it, and waiting the whole
        // read interval for that read only delays the verdict.
        let confirming = gates
            .iter()
            .any(|g| g.unhealthy_streak == 1 && queue.start_running(&g.gate.unit));
        let wake = match (confirming, pacing.last_probe) {
            (true, Some(t)) => t + PROBE_EVERY,
            _ => Instant::now() + READ_EVERY,
        };
        tokio::select! {
            _ = rec.wait_news(wake) => {}
            _ = poke.notified() => {}
        }
    }
}

/// What folding the recorder's events into reads needs.
struct Folding<'a> {
    clock: &'a GuestClock,
    /// Events before the queue's first reading only build the queue up.
    known_from: Instant,
    judge: Judge<'a>,
    state: &'a Mutex<WatchState>,
}

impl Folding<'_> {
    /// A read at `at` with no new event: the gates' latest answers (the `probes` just
    /// made), or the passing of time on a still queue, which is how a cycle that stands
    /// still lasts long enough to be confirmed.
    fn read_now(
        &self,
        (queue, gates): (&Queue, &[GateSeen]),
        tracker: &mut CycleTracker,
        at: Instant,
        probes: Vec<ProbeRecord>,
    ) {
        let mut read = assess(
            recorder_read(queue, gates, at, self.clock),
            at,
            self.clock,
            self.judge.persist,
        );
        read.probes = probes;
        absorb(self.state, tracker, read, &self.judge);
    }

    /// Apply `fresh` events to `queue` and the recorder's probe `answers` to `gates`,
    /// merged in arrival order, one read per arrival time.
    fn fold(
        &self,
        (fresh, answers): (
            &[(Instant, crate::guest::recorder::Event)],
            &[RecorderAnswer],
        ),
        queue: &mut Queue,
        gates: &mut [GateSeen],
        tracker: &mut CycleTracker,
    ) {
        let (mut i, mut k) = (0, 0);
        while i < fresh.len() || k < answers.len() {
            let at = match (fresh.get(i), answers.get(k)) {
                (Some(e), Some(a)) => e.0.min(a.arrived),
                (Some(e), None) => e.0,
                (None, Some(a)) => a.arrived,
                (None, None) => break,
            };
            while i < fresh.len() && fresh[i].0 == at {
                queue.apply(&fresh[i].1);
                i += 1;
            }
            while k < answers.len() && answers[k].arrived == at {
                let a = &answers[k];
                if let Some(g) = gates.iter_mut().find(|g| g.gate == a.gate) {
                    g.record(a.word.clone(), a.healthy);
                }
                k += 1;
            }
            if at >= self.known_from {
                let read = assess(
                    recorder_read(queue, gates, at, self.clock),
                    at,
                    self.clock,
                    self.judge.persist,
                );
                absorb(self.state, tracker, read, &self.judge);
            }
        }
    }
}

fn unprobed(gates: &[Gate]) -> Vec<GateSeen> {
    gates
        .iter()
        .map(|g| GateSeen {
            gate: g.clone(),
            last: "not probed yet".into(),
            healthy: false,
            unhealthy_streak: 0,
        })
        .collect()
}

/// The watcher's own session once it is open (the main one until then).
async fn take_session(
    own: &mut Option<tokio::task::JoinHandle<anyhow::Result<Guest>>>,
    own_session: &Arc<Mutex<Option<Guest>>>,
) -> Option<Guest> {
    if !own.as_ref().is_some_and(|t| t.is_finished()) {
        return None;
    }
    match own.take()?.await {
        Ok(Ok(session)) => {
            *own_session.lock().expect("session lock") = Some(session.clone());
            Some(session)
        }
        Ok(Err(e)) => {
            tracing::info!("the wait-cycle watcher reads on the main session: {e:#}");
            None
        }
        Err(e) => {
            tracing::warn!("the watcher's session task failed: {e}");
            None
        }
    }
}

/// A read from the recorder's queue: the jobs, the states of the units whose jobs run.
fn recorder_read(
    queue: &Queue,
    gates: &[GateSeen],
    at: Instant,
    clock: &GuestClock,
) -> RecordedRead {
    let jobs = queue.jobs();
    let units = jobs
        .iter()
        .filter(|j| j.state == "running")
        .filter_map(|j| queue.unit_state(&j.unit))
        .collect();
    RecordedRead {
        jobs,
        units,
        gates: gates.to_vec(),
        now_us: clock.to_guest_us(at),
    }
}

async fn follow_ssh(
    mut setup: WatchSetup,
    state: Arc<Mutex<WatchState>>,
    own_session: Arc<Mutex<Option<Guest>>>,
    poke: Arc<tokio::sync::Notify>,
    tx: watch::Sender<u64>,
) {
    // Read on the main session until the watcher's own is open.
    let mut guest = setup.guest.clone();
    let mut own = setup.session.take();
    let mut clock = setup.clock;
    let mut tracker = CycleTracker::new(setup.persist);
    let mut gates = unprobed(&setup.gates);
    let mut ordering = OrderingWatch::default();
    let mut running_before: Vec<String> = Vec::new();
    let mut busy = true;
    loop {
        if let Some(session) = take_session(&mut own, &own_session).await {
            guest = session;
        }
        match read_once(
            &guest,
            (&mut gates, &mut running_before),
            &mut clock,
            (&setup.journal, &state),
            setup.persist,
        )
        .await
        {
            Ok(read) => {
                busy = read.busy;
                state.lock().expect("cycle watch lock").clock = Some(clock);
                absorb(&state, &mut tracker, read, &setup.judge());
                state.lock().expect("cycle watch lock").error = None;
            }
            Err(e) => {
                tracing::debug!("wait-for read failed: {e:#}");
                state.lock().expect("cycle watch lock").error = Some(format!("{e:#}"));
            }
        }
        tx.send_modify(|n| *n += 1);
        ordering.update(&setup.journal, &state);

        // Sleep until PID 1 logs about a job, or the read interval passes.
        let wake = Instant::now() + if busy { READ_EVERY } else { IDLE_READ_EVERY };
        // PID 1 logs a job as it starts running and as it ends; queued jobs are not
        // logged, which is what the interval is for.
        let mut checked = ordering.seen_entries;
        tokio::select! {
            _ = setup.journal.wait_for(&mut checked, wake, |e| e.from_manager && e.unit.is_some()) => {}
            _ = poke.notified() => {}
        }
    }
}

async fn read_once(
    guest: &Guest,
    (gates, running_before): (&mut [GateSeen], &mut Vec<String>),
    clock: &mut GuestClock,
    (journal, state): (&Journal, &Mutex<WatchState>),
    persist: Duration,
) -> anyhow::Result<Read> {
    let jobs = systemd::list_jobs(guest).await?;
    let running: Vec<&str> = jobs
        .iter()
        .filter(|j| j.state == "running")
        .map(|j| j.unit.as_str())
        .collect();
    let units = systemd::unit_snapshot(guest, &running).await?;
    let mut probes = Vec::new();
    for g in gates.iter_mut() {
        let gated_running = jobs
            .iter()
            .any(|j| j.unit == g.gate.unit && j.job_type == "start" && j.state == "running");
        // A gated start that just ended is probed once more (see follow_recorder).
        let just_ended = !gated_running && running_before.contains(&g.gate.unit);
        if gated_running || just_ended {
            probes.push(probe_gate(guest, g, clock, state).await?);
        }
    }
    *running_before = gates
        .iter()
        .filter(|g| {
            jobs.iter()
                .any(|j| j.unit == g.gate.unit && j.job_type == "start" && j.state == "running")
        })
        .map(|g| g.gate.unit.clone())
        .collect();
    let at = Instant::now();
    journal.tighten(clock);
    let recorded = RecordedRead {
        jobs,
        units,
        gates: gates.to_vec(),
        now_us: clock.to_guest_us(at),
    };
    let mut read = assess(recorded, at, clock, persist);
    read.probes = probes;
    Ok(read)
}

#[cfg(test)]
#[path = "cycle_watch_tests.rs"]
mod tests;
