//! Watching for wait cycles while a boot runs.
//!
//! One task per boot, on its own SSH session so it never waits behind an expectation's
//! command. It re-reads the job queue whenever PID 1 logs about a job, and at least every
//! [`READ_EVERY`] while a start job runs; it probes each declared gate's URL itself while
//! the gated unit's start job runs; and it hands each read to the pure logic in
//! [`crate::check::live`], which confirms a cycle once it has lasted `persist`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::check::WaitForGraph;
use crate::check::live::{
    self, Confirmed, CycleTracker, GateSeen, OrderingCycle, PhaseWatch, RecordedRead, Stall,
};
use crate::guest::Guest;
use crate::guest::recorder::{Queue, Recorder};
use crate::guest::systemd;
use crate::guest::systemd::sources::Gate;

use super::clock::GuestClock;
use super::watch::Journal;
use crate::check::ProbeRecord;

/// The longest gap between two reads while a start job runs.
pub const READ_EVERY: Duration = Duration::from_secs(2);
/// The gap between reads when no start job runs (a later restart may queue one).
const IDLE_READ_EVERY: Duration = Duration::from_secs(10);
/// How long the watcher's own session may take to connect (the guest is up).
const SESSION_CONNECT: Duration = Duration::from_secs(20);
/// A gate probe's own limit: a gate that hangs is recorded as `timed out`.
const GATE_PROBE: Duration = Duration::from_secs(2);
/// Journal lines kept per stalled unit.
const STALL_LINES: usize = 5;
/// The shortest gap between two probes of a gate while the recorder drives the reads
/// (they come at every change of the queue; a probe is an SSH round trip).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the watcher waits, once SSH is up, for the recorder's first read of the queue.
const RECORDER_GRACE: Duration = Duration::from_secs(3);

/// Where the watcher's reads of the job queue came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WatchSource {
    /// `systemctl list-jobs` over SSH, from when SSH answered.
    #[default]
    Ssh,
    /// The recorder's stream of PID 1's changes, from early userspace.
    Recorder,
}

/// What the watcher has seen so far in this boot.
#[derive(Debug, Default)]
struct WatchState {
    reads: Vec<Instant>,
    confirmed: Option<Confirmed>,
    /// The last read that still showed the confirmed cycle.
    cycle_last_seen: Option<Instant>,
    /// Per unit, the longest stall seen.
    stalls: Vec<Stall>,
    ordering: Vec<OrderingCycle>,
    probes: Vec<ProbeRecord>,
    probes_taken: usize,
    last_graph: WaitForGraph,
    last_read: RecordedRead,
    /// The read that confirmed the cycle.
    confirming_read: Option<RecordedRead>,
    error: Option<String>,
    source: WatchSource,
    /// The guest's clock, for dating what the reads saw.
    clock: Option<GuestClock>,
    /// When userspace began (PID 1's `UserspaceTimestampMonotonic`), guest µs.
    userspace_us: Option<u64>,
    /// Per unit, when its latest start job seen running began (guest µs).
    starts: std::collections::BTreeMap<String, u64>,
    /// When the recorder's stream ended, and why, if it did.
    recorder_ended: Option<(Instant, String)>,
    /// Per (U, W): W's job seen waiting on U's running start job, first and last (guest µs).
    waits: std::collections::BTreeMap<(String, String), (u64, u64)>,
    /// Edges inferred at the last judgement (see [`crate::check::infer`]).
    inferred: Vec<crate::check::infer::InferredEdge>,
    /// Why inference could not run, if it could not.
    inference_gap: Option<String>,
    /// The listener read of the last judgement (`PORT UNIT PID` lines), kept for the
    /// boot's evidence until the harness changes the guest.
    listeners: Option<String>,
}

impl WatchState {
    /// The waits seen, as the inference takes them.
    fn waits_seen(&self) -> Vec<crate::check::infer::WaitSeen> {
        self.waits
            .iter()
            .map(|((on, waiter), (from, to))| crate::check::infer::WaitSeen {
                on: on.clone(),
                waiter: waiter.clone(),
                from_us: *from,
                to_us: *to,
            })
            .collect()
    }
}

/// A handle on a boot's watcher: what it found, and a way to wait for news.
#[derive(Clone)]
pub struct Cycles {
    state: Arc<Mutex<WatchState>>,
    /// Wakes the watcher for a read now.
    poke: Arc<tokio::sync::Notify>,
    /// The watcher's own session, once open.
    own_session: Arc<Mutex<Option<Guest>>>,
    news: watch::Receiver<u64>,
    gates: Vec<String>,
    declared: Vec<Gate>,
    persist: Duration,
    recorder: Option<Recorder>,
}

/// Keeps the watcher running; dropping it stops the task (and its SSH session).
pub struct CycleWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CycleWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything the watcher task needs.
pub struct WatchSetup {
    /// The boot's main channel: the watcher reads through it until its own session is
    /// open, and for good if that cannot be opened.
    pub guest: Guest,
    /// The watcher's own session, being opened (see [`open_session`]).
    pub session: Option<tokio::task::JoinHandle<anyhow::Result<Guest>>>,
    /// The boot's journal stream.
    pub journal: Journal,
    /// Guest monotonic time on the host clock.
    pub clock: GuestClock,
    /// The target's declared gates.
    pub gates: Vec<Gate>,
    /// How long a cycle must last to count.
    pub persist: Duration,
    /// Where progress lines go.
    pub status: Arc<dyn Fn(&str) + Send + Sync>,
    /// The boot's recorder, when its guest runs one: reads come from it, from early
    /// userspace on, and SSH only probes the gates.
    pub recorder: Option<Recorder>,
}

/// Start watching the boot.
pub fn start(setup: WatchSetup) -> (Cycles, CycleWatcher) {
    let state = Arc::new(Mutex::new(WatchState::default()));
    let (tx, news) = watch::channel(0u64);
    let own_session = Arc::new(Mutex::new(None));
    let poke = Arc::new(tokio::sync::Notify::new());
    let cycles = Cycles {
        state: state.clone(),
        poke: poke.clone(),
        own_session: own_session.clone(),
        news,
        gates: setup.gates.iter().map(|g| g.unit.clone()).collect(),
        declared: setup.gates.clone(),
        persist: setup.persist,
        recorder: setup.recorder.clone(),
    };
    let task = tokio::spawn(run(setup, state, own_session, poke, tx));
    (cycles, CycleWatcher { task })
}

impl Cycles {
    /// The confirmed cycle, if one has been (it may have broken since).
    pub fn confirmed(&self) -> Option<Confirmed> {
        self.lock().confirmed.clone()
    }

    /// The confirmed cycle while it still stands: the latest read showed it.
    pub fn standing(&self) -> Option<Confirmed> {
        let s = self.lock();
        let last = s.reads.last()?;
        s.confirmed
            .clone()
            .filter(|_| s.cycle_last_seen.as_ref() == Some(last))
    }

    /// A second session to the guest (the watcher's, once open): evidence collected at
    /// the end of a boot can run on it beside the main one.
    pub fn session(&self) -> Option<Guest> {
        self.own_session.lock().expect("session lock").clone()
    }

    /// The persistence in use.
    pub fn persist(&self) -> Duration {
        self.persist
    }

    /// Wait for the watcher's next read. False when the watcher has stopped.
    pub async fn next_read(&mut self) -> bool {
        let seen = *self.news.borrow_and_update();
        self.news.wait_for(|n| *n > seen).await.is_ok()
    }

    /// Ask for a read now and wait for one to finish (at most `limit`): a judgement over a
    /// phase includes the queue as it is at the phase's end.
    pub async fn read_now(&mut self, limit: Duration) {
        let seen = *self.news.borrow_and_update();
        self.poke.notify_one();
        let _ = tokio::time::timeout(limit, self.news.wait_for(|n| *n > seen)).await;
    }

    /// Infer the waits nobody declared from what the boot did so far: which unit listens
    /// on which port now (one SSH read), the netwatch's refused connections, and the
    /// waits the queue showed. Needs the recorder (its netwatch); without one, says so.
    pub async fn infer_now(&self, guest: &Guest) {
        let Some(rec) = &self.recorder else {
            self.lock().inference_gap =
                Some("no recorder in this guest, so no connection attempts to infer from".into());
            return;
        };
        if rec.with(|l| l.net_hello.is_none()) {
            self.lock().inference_gap = Some("the netwatch never spoke".into());
            return;
        }
        let listeners = match crate::run::record::listeners(guest).await {
            Ok(text) => {
                let parsed = crate::check::infer::parse_listeners(&text);
                self.lock().listeners = Some(text);
                parsed
            }
            Err(e) => {
                self.lock().inference_gap = Some(format!("the listener read failed: {e:#}"));
                return;
            }
        };
        let conns: Vec<_> = rec.with(|l| l.connections.iter().map(|(_, c)| c.clone()).collect());
        let mut s = self.lock();
        let waits = s.waits_seen();
        s.inferred = crate::check::infer::infer(&waits, &conns, &listeners);
        s.inference_gap = None;
    }

    /// The listener read of the last judgement, if nothing changed the guest since.
    pub fn listeners_read(&self) -> Option<String> {
        self.lock().listeners.clone()
    }

    /// The harness changed the guest: the listener read may be stale.
    pub fn forget_listeners(&self) {
        self.lock().listeners = None;
    }

    /// No inference for this judgement, and why (the outcome says so).
    pub fn no_inference(&self, why: &str) {
        let mut s = self.lock();
        s.inferred.clear();
        s.inference_gap = Some(why.to_string());
    }

    /// Gate probes made since the last call, for the pair's evidence.
    pub fn take_probes(&self) -> Vec<ProbeRecord> {
        let mut s = self.lock();
        let fresh = s.probes[s.probes_taken..].to_vec();
        s.probes_taken = s.probes.len();
        fresh
    }

    /// What the watcher saw from `since` on, timed from `origin` (QEMU start).
    pub fn phase_watch(&self, since: Instant, origin: Instant) -> PhaseWatch {
        let s = self.lock();
        let reads: Vec<&Instant> = s.reads.iter().filter(|r| **r >= since).collect();
        let secs = |i: &Instant| i.saturating_duration_since(origin).as_secs_f64();
        let since_unix = crate::run::record::unix_now() - since.elapsed().as_secs_f64();
        let gate_probes = self
            .gates
            .iter()
            .map(|unit| {
                let n = s
                    .probes
                    .iter()
                    .filter(|p| p.gate_of.as_ref() == Some(unit) && p.at_unix >= since_unix)
                    .count();
                (unit.clone(), n)
            })
            .collect();
        let cycle = s
            .confirmed
            .as_ref()
            .filter(|_| s.cycle_last_seen.is_some_and(|l| l >= since))
            .map(|c| c.message.clone());
        let host_secs = |us: u64| {
            s.clock.map(|c| {
                c.to_host(us)
                    .saturating_duration_since(origin)
                    .as_secs_f64()
            })
        };
        let began: Vec<(String, Option<f64>)> = self
            .gates
            .iter()
            .chain(s.stalls.iter().map(|st| &st.unit))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|u| (u.clone(), s.starts.get(u).and_then(|us| host_secs(*us))))
            .collect();
        let recorder_ended = s
            .recorder_ended
            .as_ref()
            .map(|(at, why)| (secs(at), why.clone()));
        PhaseWatch {
            source: match s.source {
                WatchSource::Ssh => "ssh".into(),
                WatchSource::Recorder => "recorder".into(),
            },
            userspace_secs: s.userspace_us.and_then(host_secs),
            starts: began,
            recorder_ended,
            inferred: s
                .inferred
                .iter()
                .map(|e| (e.describe(), e.cycle_us() as f64 / 1e6))
                .collect(),
            inference_gap: s.inference_gap.clone(),
            disagreements: s
                .inferred
                .iter()
                .flat_map(|e| {
                    self.declared
                        .iter()
                        .filter(|g| g.unit == e.from && g.served_by != e.to)
                        .map(|g| {
                            format!(
                                "the declared gate says {}'s start waits on {} (served by {}), but its refused connections point to {} (port {})",
                                g.unit, g.url, g.served_by, e.to, e.port
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            reads: reads.len() as u32,
            first_read_secs: reads.first().map(|i| secs(i)),
            last_read_secs: reads.last().map(|i| secs(i)),
            gates_declared: self.gates.len(),
            gate_probes,
            cycle,
            stalls: s.stalls.clone(),
            ordering: s.ordering.clone(),
            error: s.error.clone(),
        }
    }

    /// The evidence of this boot: the last graph, the confirmed cycle, stalls, systemd's
    /// ordering cycles and the gate probes.
    pub fn evidence(&self) -> (serde_json::Value, String) {
        let s = self.lock();
        #[derive(Serialize)]
        struct Record<'a> {
            reads: usize,
            persist_secs: f64,
            gates_declared: usize,
            confirmed: Option<&'a Confirmed>,
            last_graph: &'a WaitForGraph,
            last_read: &'a RecordedRead,
            confirming_read: Option<&'a RecordedRead>,
            stalls: &'a [Stall],
            ordering_cycles: &'a [OrderingCycle],
            gate_probes: &'a [ProbeRecord],
            inferred: &'a [crate::check::infer::InferredEdge],
            waits: Vec<crate::check::infer::WaitSeen>,
            error: Option<&'a str>,
        }
        let json = serde_json::to_value(Record {
            reads: s.reads.len(),
            persist_secs: self.persist.as_secs_f64(),
            gates_declared: self.gates.len(),
            confirmed: s.confirmed.as_ref(),
            last_graph: &s.last_graph,
            last_read: &s.last_read,
            confirming_read: s.confirming_read.as_ref(),
            stalls: &s.stalls,
            ordering_cycles: &s.ordering,
            gate_probes: &s.probes,
            inferred: &s.inferred,
            waits: s.waits_seen(),
            error: s.error.as_deref(),
        })
        .unwrap_or_default();
        let dot = match &s.confirmed {
            Some(c) => c.graph.to_dot("wait-for", Some(&c.cycle)),
            None => s.last_graph.to_dot("wait-for", None),
        };
        (json, dot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().expect("cycle watch lock")
    }
}

/// Start opening the watcher's own session as soon as the guest answers, so reads never
/// wait behind an expectation's command; on a loaded host the handshake takes a while.
pub fn open_session(guest: &Guest) -> tokio::task::JoinHandle<anyhow::Result<Guest>> {
    let main = guest.clone();
    tokio::spawn(async move { main.another_session(SESSION_CONNECT).await })
}

async fn run(
    setup: WatchSetup,
    state: Arc<Mutex<WatchState>>,
    own_session: Arc<Mutex<Option<Guest>>>,
    poke: Arc<tokio::sync::Notify>,
    tx: watch::Sender<u64>,
) {
    let mut setup = setup;
    if let Some(mut rec) = setup.recorder.take() {
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
        }
    }
    follow_ssh(setup, state, own_session, poke, tx).await
}

/// The recorder drives the reads: every change PID 1 sent since early userspace is
/// replayed in order (each arrival is one read), then each new one as it comes, and a
/// read every [`READ_EVERY`] while nothing changes, so a cycle that stands still is
/// confirmed. SSH only probes the declared gates. Returns when the recorder's stream
/// ends, so the SSH reads take over (and the gap shows in the watch's window).
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
    let mut last_probe: Option<Instant> = None;
    let mut ordering = OrderingWatch::default();
    let known_from = rec.with(|l| l.queue_known).unwrap_or_else(Instant::now);
    loop {
        if let Some(session) = take_session(&mut own, own_session).await {
            guest = session;
        }
        setup.journal.tighten(&mut clock);
        let fresh = rec.since(folded);
        folded += fresh.len();
        let mut i = 0;
        while i < fresh.len() {
            let at = fresh[i].0;
            while i < fresh.len() && fresh[i].0 == at {
                queue.apply(&fresh[i].1);
                i += 1;
            }
            if at >= known_from {
                let read = assess(
                    recorder_read(&queue, &gates, at, &clock),
                    at,
                    &clock,
                    setup.persist,
                );
                absorb(state, &mut tracker, read, setup);
            }
        }
        {
            let mut s = state.lock().expect("cycle watch lock");
            s.userspace_us = queue.userspace_us;
            s.clock = Some(clock);
        }
        // Probe the gates whose start runs (an SSH round trip each, so not at every change).
        let due = last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
        let gated_running: Vec<usize> = gates
            .iter()
            .enumerate()
            .filter(|(_, g)| queue.start_running(&g.gate.unit))
            .map(|(n, _)| n)
            .collect();
        let mut probes = Vec::new();
        if due && !gated_running.is_empty() {
            last_probe = Some(Instant::now());
            for n in gated_running {
                match probe_gate(&guest, &gates[n].gate.url).await {
                    Ok((answer, status, healthy)) => {
                        probes.push(ProbeRecord {
                            at_unix: crate::run::record::unix_now(),
                            from: "guest".into(),
                            gate_of: Some(gates[n].gate.unit.clone()),
                            url: gates[n].gate.url.clone(),
                            status,
                            excerpt: answer.clone(),
                        });
                        gates[n].record(answer, healthy);
                    }
                    Err(e) => {
                        state.lock().expect("cycle watch lock").error =
                            Some(format!("probing {}: {e:#}", gates[n].gate.url))
                    }
                }
            }
        }
        // A read now: the probes' answers, or the passing of time on a still queue.
        let at = Instant::now();
        let mut read = assess(
            recorder_read(&queue, &gates, at, &clock),
            at,
            &clock,
            setup.persist,
        );
        read.probes = probes;
        absorb(state, &mut tracker, read, setup);
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
        let wake = match (confirming, last_probe) {
            (true, Some(t)) => t + PROBE_EVERY,
            _ => Instant::now() + READ_EVERY,
        };
        tokio::select! {
            _ = rec.wait_news(wake) => {}
            _ = poke.notified() => {}
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

/// systemd's own ordering cycles, from PID 1's lines so far.
#[derive(Default)]
struct OrderingWatch {
    seen_entries: usize,
    lines: Vec<(u64, String)>,
}

impl OrderingWatch {
    fn update(&mut self, journal: &Journal, state: &Mutex<WatchState>) {
        let fresh = journal.since(self.seen_entries);
        self.seen_entries += fresh.len();
        self.lines.extend(
            fresh
                .iter()
                .filter(|x| {
                    x.entry.from_manager
                        && (x.entry.message.contains("ordering cycle")
                            || x.entry.message.contains("Found dependency on"))
                })
                .map(|x| (x.entry.mono_us, x.entry.message.clone())),
        );
        let ordering = live::ordering_cycles(self.lines.iter().map(|(t, m)| (*t, m.as_str())));
        if !ordering.is_empty() {
            state.lock().expect("cycle watch lock").ordering = ordering;
        }
    }
}

/// Fold one read into what the watcher has seen; a line for the user when a cycle forms
/// or is confirmed.
fn absorb(state: &Mutex<WatchState>, tracker: &mut CycleTracker, read: Read, setup: &WatchSetup) {
    let mut s = state.lock().expect("cycle watch lock");
    s.reads.push(read.at);
    s.probes.extend(read.probes.iter().cloned());
    for u in &read.recorded.units {
        if read
            .recorded
            .jobs
            .iter()
            .any(|j| j.unit == u.id && j.job_type == "start" && j.state == "running")
            && let Some(us) = u.inactive_exit_us
        {
            s.starts.insert(u.id.clone(), us);
        }
    }
    let now_us = read.recorded.now_us;
    for w in read.recorded.jobs.iter().filter(|j| j.state == "waiting") {
        for on in &w.waiting_for {
            let running_start = read
                .recorded
                .jobs
                .iter()
                .any(|j| j.id == on.id && j.job_type == "start" && j.state == "running");
            if running_start {
                s.waits
                    .entry((on.unit.clone(), w.unit.clone()))
                    .and_modify(|(_, to)| *to = now_us)
                    .or_insert((now_us, now_us));
            }
        }
    }
    s.last_graph = read.graph.clone();
    s.last_read = read.recorded.clone();
    for stall in read.stalls.iter().cloned() {
        // The unit's last lines scan the whole journal: at most once every 2 s of the
        // stall, not at every read (the recorder makes hundreds in a boot).
        match s.stalls.iter_mut().find(|x| x.unit == stall.unit) {
            Some(x) if stall.running_secs < x.running_secs + 2 => {
                x.running_secs = x.running_secs.max(stall.running_secs);
                x.blocked = stall.blocked;
            }
            Some(x) => {
                *x = Stall {
                    last_lines: last_lines(&setup.journal, &stall.unit),
                    ..stall
                }
            }
            None => s.stalls.push(Stall {
                last_lines: last_lines(&setup.journal, &stall.unit),
                ..stall
            }),
        }
    }
    let mut say = None;
    match (
        &read.cycle,
        tracker.observe(read.at, read.cycle_units(), read.formed),
    ) {
        (Some(found), Some(formed)) => match &s.confirmed {
            None => {
                tracing::info!("wait cycle confirmed: {}", found.message);
                say = Some(format!("wait cycle: {}", found.message));
                s.confirmed = Some(Confirmed {
                    formed,
                    confirmed: read.at,
                    ..found.clone()
                });
                s.confirming_read = Some(read.recorded.clone());
                s.cycle_last_seen = Some(read.at);
            }
            Some(c) if c.units == found.units => s.cycle_last_seen = Some(read.at),
            Some(_) => {}
        },
        (Some(found), None) => {
            if let Some(c) = &s.confirmed
                && c.units == found.units
            {
                s.cycle_last_seen = Some(read.at);
            }
            say = Some(format!(
                "wait cycle forming: {} (confirmed after {:.0} s)",
                found.cycle.units().join(" → "),
                setup.persist.as_secs_f64()
            ));
        }
        _ => {}
    }
    drop(s);
    if let Some(line) = say {
        (setup.status)(&line);
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
    let mut busy = true;
    loop {
        if let Some(session) = take_session(&mut own, &own_session).await {
            guest = session;
        }
        match read_once(
            &guest,
            &mut gates,
            &mut clock,
            &setup.journal,
            setup.persist,
        )
        .await
        {
            Ok(read) => {
                busy = read.busy;
                state.lock().expect("cycle watch lock").clock = Some(clock);
                absorb(&state, &mut tracker, read, &setup);
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

/// One read's result.
struct Read {
    at: Instant,
    busy: bool,
    graph: WaitForGraph,
    cycle: Option<Confirmed>,
    formed: Option<Instant>,
    stalls: Vec<Stall>,
    probes: Vec<ProbeRecord>,
    recorded: RecordedRead,
}

impl Read {
    fn cycle_units(&self) -> Option<BTreeSet<String>> {
        self.cycle.as_ref().map(|c| c.units.clone())
    }
}

/// One read over SSH: the queue, the states of the units whose jobs run, and a probe of
/// each gate whose start runs.
async fn read_once(
    guest: &Guest,
    gates: &mut [GateSeen],
    clock: &mut GuestClock,
    journal: &Journal,
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
        if gated_running {
            let (answer, status, healthy) = probe_gate(guest, &g.gate.url).await?;
            probes.push(ProbeRecord {
                at_unix: crate::run::record::unix_now(),
                from: "guest".into(),
                gate_of: Some(g.gate.unit.clone()),
                url: g.gate.url.clone(),
                status,
                excerpt: answer.clone(),
            });
            g.record(answer, healthy);
        }
    }
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

/// The wait-for graph of a read, its cycle (dated from the guest's clock) and stalls.
fn assess(recorded: RecordedRead, at: Instant, clock: &GuestClock, persist: Duration) -> Read {
    let snap = recorded.snapshot();
    let graph = live::graph(&snap);
    let cycle = graph.find_cycle().map(|cycle| {
        let units: BTreeSet<String> = cycle.edges.iter().map(|e| e.waiter.clone()).collect();
        let blocked: BTreeSet<String> = graph
            .waiting_on(&units)
            .into_iter()
            .filter(|u| !units.contains(u))
            .collect();
        Confirmed {
            message: live::describe(&cycle, &snap),
            breaks: live::breaks_at_us(&cycle, &snap).map(|(u, us)| (u, clock.to_host(us))),
            formed: at,
            formed_from_guest: live::formed_us(&cycle, &snap).is_some(),
            confirmed: at,
            units,
            blocked,
            graph: graph.clone(),
            cycle,
        }
    });
    let formed = cycle
        .as_ref()
        .and_then(|c| live::formed_us(&c.cycle, &snap))
        .map(|us| clock.to_host(us));
    let busy = recorded
        .jobs
        .iter()
        .any(|j| j.job_type == "start" && j.state == "running");
    let stalls = live::stalls(&snap, persist);
    Read {
        at,
        busy,
        stalls,
        graph,
        cycle,
        formed,
        probes: Vec::new(),
        recorded,
    }
}

/// Probe a gate URL from inside the guest: `(answer, status, healthy)`. TLS is not
/// verified: the question is whether, and with what, the URL answers.
async fn probe_gate(guest: &Guest, url: &str) -> anyhow::Result<(String, Option<u16>, bool)> {
    let answer =
        super::probe::from_guest(guest, url, super::probe::Tls::Insecure, GATE_PROBE).await?;
    Ok(match &answer {
        super::probe::Answer::Http { status, .. } => {
            (answer.word(), Some(*status), (200..300).contains(status))
        }
        _ => (answer.word(), None, false),
    })
}

/// The unit's last journal lines (its own output, not PID 1's).
fn last_lines(journal: &Journal, unit: &str) -> Vec<String> {
    let all = journal.since(0);
    let mut lines: Vec<String> = all
        .iter()
        .rev()
        .filter(|s| !s.entry.from_manager && s.entry.unit.as_deref() == Some(unit))
        .take(STALL_LINES)
        .map(|s| s.entry.message.clone())
        .collect();
    lines.reverse();
    lines
}
