//! What a boot's wait-cycle watcher works on: its setup and the state it folds its
//! reads into. Below both the handle ([`super::cycles`]) and the watcher
//! ([`super::cycle_watch`]) and its helpers, so they import it and not each other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::ProbeRecord;
use crate::check::WaitForGraph;
use crate::check::live::{Confirmed, OrderingCycle, RecordedRead, Stall};
use crate::guest::Guest;
use crate::guest::recorder::Recorder;
use crate::guest::systemd::sources::Gate;

use super::clock::GuestClock;
use super::watch::Journal;

/// The longest gap between two reads while a start job runs.
pub const READ_EVERY: Duration = Duration::from_secs(2);
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
pub(super) struct WatchState {
    pub(super) reads: Vec<Instant>,
    pub(super) confirmed: Option<Confirmed>,
    /// The last read that still showed the confirmed cycle.
    pub(super) cycle_last_seen: Option<Instant>,
    /// Per unit, the longest stall seen.
    pub(super) stalls: Vec<Stall>,
    pub(super) ordering: Vec<OrderingCycle>,
    pub(super) probes: Vec<ProbeRecord>,
    pub(super) probes_taken: usize,
    /// Each gate probe on the guest's clock, by gated unit (for gate honesty).
    pub(super) gate_probes: Vec<(String, crate::check::honesty::GateProbe)>,
    pub(super) last_graph: WaitForGraph,
    pub(super) last_read: RecordedRead,
    /// The read that confirmed the cycle.
    pub(super) confirming_read: Option<RecordedRead>,
    pub(super) error: Option<String>,
    pub(super) source: WatchSource,
    /// The guest's clock, for dating what the reads saw.
    pub(super) clock: Option<GuestClock>,
    /// When userspace began (PID 1's `UserspaceTimestampMonotonic`), guest µs.
    pub(super) userspace_us: Option<u64>,
    /// Per unit, when its latest start job seen running began (guest µs).
    pub(super) starts: std::collections::BTreeMap<String, u64>,
    /// When the recorder's stream ended, and why, if it did.
    pub(super) recorder_ended: Option<(Instant, String)>,
    /// Per (U, W): W's job seen waiting on U's running start job, first and last (guest µs).
    pub(super) waits: std::collections::BTreeMap<(String, String), (u64, u64)>,
    /// Edges inferred at the last judgement (see [`crate::check::infer`]).
    pub(super) inferred: Vec<crate::check::infer::InferredEdge>,
    /// Why inference could not run, if it could not.
    pub(super) inference_gap: Option<String>,
    /// The listener read of the last judgement (`PORT UNIT PID` lines), kept for the
    /// boot's evidence until the harness changes the guest.
    pub(super) listeners: Option<String>,
}

impl WatchState {
    /// The waits seen, as the inference takes them.
    pub(super) fn waits_seen(&self) -> Vec<crate::check::infer::WaitSeen> {
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
