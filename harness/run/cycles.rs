//! Watching for wait cycles while a boot runs.
//!
//! One task per boot, on its own SSH session so it never waits behind an expectation's
//! command. It re-reads the job queue whenever PID 1 logs about a job, and at least every
//! [`READ_EVERY`] while a start job runs; it probes each declared gate's URL itself while
//! the gated unit's start job runs; and it hands each read to the pure logic in
//! [`crate::check::live`], which confirms a cycle once it has lasted `persist`. This file
//! is the handle on what the watcher found; `cycle_watch` is the watcher itself.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::check::WaitForGraph;
use crate::check::live::{Confirmed, OrderingCycle, PhaseWatch, RecordedRead, Stall};
use crate::guest::Guest;
use crate::guest::recorder::Recorder;
use crate::guest::systemd::sources::Gate;

use crate::check::ProbeRecord;

use super::watch_state::WatchState;
pub use super::watch_state::{READ_EVERY, WatchSetup, WatchSource};

/// How long the watcher's own session may take to connect (the guest is up).
const SESSION_CONNECT: Duration = Duration::from_secs(20);

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
    let task = tokio::spawn(super::cycle_watch::run(setup, state, own_session, poke, tx));
    (cycles, CycleWatcher { task })
}

impl Cycles {
    /// A watcher that never reads, for tests of what consults it with no guest to read:
    /// no cycle stands, and waiting for its next read ends at once.
    #[cfg(test)]
    pub(super) fn idle(persist: Duration) -> Cycles {
        let (_, news) = watch::channel(0u64);
        Cycles {
            state: Arc::default(),
            poke: Arc::default(),
            own_session: Arc::default(),
            news,
            gates: Vec::new(),
            declared: Vec::new(),
            persist,
            recorder: None,
        }
    }

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

    /// `unit`'s declared gate, with every probe of its URL the watcher made on this boot
    /// (on the guest's clock), or `None` when no gate is declared for it.
    pub fn gate_of(&self, unit: &str) -> Option<(Gate, Vec<crate::check::honesty::GateProbe>)> {
        let gate = self.declared.iter().find(|g| g.unit == unit)?.clone();
        let probes = self
            .lock()
            .gate_probes
            .iter()
            .filter(|(u, _)| u == unit)
            .map(|(_, p)| p.clone())
            .collect();
        Some((gate, probes))
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
        if rec.with(|l| l.net_untraced.is_some()) {
            self.lock().inference_gap = Some(
                "the recorder could not trace the guest's TCP connection attempts (its reason is in the serial log)"
                    .into(),
            );
            return;
        }
        if rec.with(|l| l.net_hello.is_none()) {
            self.lock().inference_gap = Some("the netwatch never spoke".into());
            return;
        }
        let listeners = match crate::guest::listeners::read(guest).await {
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
