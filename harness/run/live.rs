//! What an expectation awaits with: the live guest and its boot's streams ([`Live`]),
//! and what awaiting gives back ([`Awaited`]). Below every kind's awaiting, so those
//! import it and not the dispatcher in `expect`.

use std::time::Instant;

use crate::check::{Evaluation, ProbeRecord};
use crate::guest::Guest;
use crate::vm::Vm;

use super::clock::GuestClock;
use super::cycles::Cycles;
use super::watch::Journal;

/// What a live expectation can use.
pub struct Live<'a> {
    /// The VM (host forwards, QMP); none for a guest played back from a recording.
    pub vm: Option<&'a Vm>,
    /// The SSH channel.
    pub guest: &'a Guest,
    /// The journal of the current boot, streaming.
    pub journal: Journal,
    /// Guest monotonic time on the host clock, narrowed by what the stream brings
    /// (behind a lock: the phase's observations run side by side).
    pub clock: std::sync::Mutex<GuestClock>,
    /// Where the progress line goes.
    pub status: &'a (dyn Fn(&str) + Send + Sync),
    /// Every probe the harness made, for the evidence.
    pub probes: std::sync::Mutex<Vec<ProbeRecord>>,
    /// The boot's wait-cycle watcher.
    pub cycles: Cycles,
    /// When the phase began (its wait-cycle invariant covers reads from then on).
    pub phase_started: Instant,
    /// When QEMU started this boot (reports time reads from it).
    pub qemu_started: Instant,
    /// Guest time (µs) from which a start in PID 1's journal decides a unit wait: 0 on a
    /// phase that booted and did nothing else, else when the phase's actions ended.
    pub journal_floor_us: u64,
    /// Per unit the scenario awaits, whether PID 1 ending its start job with `done` means
    /// it is active (from its type, read once when the boot's watch began).
    pub start_done_means_active: std::collections::HashMap<String, bool>,
    /// The phase's watch that decides plain "active" waits ahead of their turn.
    pub early: super::early::EarlyDecisions,
    /// The boot's recorder, when it has one: unit states read through it, not over SSH.
    pub recorder: Option<crate::guest::recorder::Recorder>,
}

impl Live<'_> {
    /// The clock, narrowed first by every entry and signal that has arrived.
    pub(super) fn tightened(&self) -> GuestClock {
        let mut clock = self.clock.lock().expect("clock lock");
        self.journal.tighten(&mut clock);
        *clock
    }

    /// The probes made so far, taken for the pair's evidence.
    pub fn take_probes(&self) -> Vec<ProbeRecord> {
        std::mem::take(&mut *self.probes.lock().expect("probes lock"))
    }
}

/// The result of awaiting one expectation: the evaluation, and the host instants of the
/// change (as the guest timestamped it) and of the decision.
#[derive(Debug, Clone)]
pub struct Awaited {
    /// Whether it held, and what was seen.
    pub eval: Evaluation,
    /// When the guest says the awaited state was reached.
    pub changed: Option<Instant>,
    /// When the harness decided.
    pub decided: Instant,
}

impl Awaited {
    pub(super) fn now(eval: Evaluation) -> Awaited {
        Awaited {
            eval,
            changed: None,
            decided: Instant::now(),
        }
    }
}
