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
use crate::guest::systemd;
use crate::target::Gate;

use super::clock::GuestClock;
use super::expect::ProbeRecord;
use super::watch::Journal;

/// The longest gap between two reads while a start job runs.
pub const READ_EVERY: Duration = Duration::from_secs(2);
/// The gap between reads when no start job runs (a later restart may queue one).
const IDLE_READ_EVERY: Duration = Duration::from_secs(10);
/// How long the watcher's own session may take to connect (the guest is up).
const SESSION_CONNECT: Duration = Duration::from_secs(20);
/// A gate probe's own limit: a gate that hangs is recorded as `timed out`.
const GATE_PROBE_SECS: u32 = 2;
/// Journal lines kept per stalled unit.
const STALL_LINES: usize = 5;

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
    persist: Duration,
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
        persist: setup.persist,
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
        PhaseWatch {
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
    let mut gates: Vec<GateSeen> = setup
        .gates
        .iter()
        .map(|g| GateSeen {
            gate: g.clone(),
            last: "not probed yet".into(),
            healthy: false,
            unhealthy_streak: 0,
        })
        .collect();
    let mut seen_entries = 0usize;
    let mut manager_lines: Vec<(u64, String)> = Vec::new();
    let mut busy = true;
    loop {
        if own.as_ref().is_some_and(|t| t.is_finished())
            && let Some(task) = own.take()
        {
            match task.await {
                Ok(Ok(session)) => {
                    *own_session.lock().expect("session lock") = Some(session.clone());
                    guest = session;
                }
                Ok(Err(e)) => {
                    tracing::info!("the wait-cycle watcher reads on the main session: {e:#}")
                }
                Err(e) => tracing::warn!("the watcher's session task failed: {e}"),
            }
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
                let mut s = state.lock().expect("cycle watch lock");
                s.reads.push(read.at);
                s.probes.extend(read.probes.iter().cloned());
                s.last_graph = read.graph.clone();
                s.last_read = read.recorded.clone();
                for stall in read.stalls.iter().cloned() {
                    let lines = last_lines(&setup.journal, &stall.unit);
                    match s.stalls.iter_mut().find(|x| x.unit == stall.unit) {
                        Some(x) => {
                            *x = Stall {
                                last_lines: lines,
                                ..stall
                            }
                        }
                        None => s.stalls.push(Stall {
                            last_lines: lines,
                            ..stall
                        }),
                    }
                }
                let mut say = None;
                match (
                    &read.cycle,
                    tracker.observe(read.at, read.cycle_units(), read.formed),
                ) {
                    (Some(found), Some(formed)) => {
                        // The first cycle confirmed is the boot's; it still stands while
                        // the reads show those same units.
                        match &s.confirmed {
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
                        }
                    }
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
                s.error = None;
                drop(s);
                if let Some(line) = say {
                    (setup.status)(&line);
                }
            }
            Err(e) => {
                tracing::debug!("wait-for read failed: {e:#}");
                state.lock().expect("cycle watch lock").error = Some(format!("{e:#}"));
            }
        }
        tx.send_modify(|n| *n += 1);

        // systemd's own ordering cycles, from PID 1's lines so far.
        let fresh = setup.journal.since(seen_entries);
        seen_entries += fresh.len();
        manager_lines.extend(
            fresh
                .iter()
                .filter(|x| {
                    x.entry.from_manager
                        && (x.entry.message.contains("ordering cycle")
                            || x.entry.message.contains("Found dependency on"))
                })
                .map(|x| (x.entry.mono_us, x.entry.message.clone())),
        );
        let ordering = live::ordering_cycles(manager_lines.iter().map(|(t, m)| (*t, m.as_str())));
        if !ordering.is_empty() {
            state.lock().expect("cycle watch lock").ordering = ordering;
        }

        // Sleep until PID 1 logs about a job, or the read interval passes.
        let wake = Instant::now() + if busy { READ_EVERY } else { IDLE_READ_EVERY };
        // PID 1 logs a job as it starts running and as it ends; queued jobs are not
        // logged, which is what the interval is for.
        let mut checked = seen_entries;
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
    let snap = recorded.snapshot();
    let jobs = &recorded.jobs;
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
    Ok(Read {
        at,
        busy: jobs
            .iter()
            .any(|j| j.job_type == "start" && j.state == "running"),
        stalls: live::stalls(&snap, persist),
        graph,
        cycle,
        formed,
        probes,
        recorded: recorded.clone(),
    })
}

/// Probe a gate URL from inside the guest: `(answer, status, healthy)`. TLS is not
/// verified: the question is whether, and with what, the URL answers.
async fn probe_gate(guest: &Guest, url: &str) -> anyhow::Result<(String, Option<u16>, bool)> {
    let cmd = format!(
        "curl -sk -o /dev/null -w '%{{http_code}}' --max-time {GATE_PROBE_SECS} {}",
        crate::guest::shell::quote(url)
    );
    let out = guest.exec(&cmd).await?;
    let code = out.stdout.trim().parse::<u16>().ok().filter(|c| *c > 0);
    Ok(match (out.status, code) {
        (0, Some(c)) => (c.to_string(), Some(c), (200..300).contains(&c)),
        (7, _) => ("refused".into(), None, false),
        (28, _) => ("timed out".into(), None, false),
        (n, _) => (format!("curl exit {n}"), None, false),
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
