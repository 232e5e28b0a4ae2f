//! Following the guest's journal while a boot happens, so waits end on events.
//!
//! One `journalctl -b -f -o json` per boot streams every entry of the boot, history
//! first. Each entry is kept (journal expectations search them) and wakes every waiter;
//! a waiter re-reads the state it cares about only when an entry concerns it.
//!
//! PID 1's unit signals are kept beside the entries: unit waits decide from them first
//! (`check::units::held_by_signals`). They arrive within milliseconds of a change, well
//! ahead of the journal's entry about it. A boot with a connected recorder has them from
//! its first seconds of userspace (the recorder's unit events, so a unit that became
//! active before SSH answered is decided the moment the watch begins, with no round
//! trip); any other boot has them from `busctl monitor`, on the journal's SSH channel
//! (its stderr, so no second handshake), from the moment the watch begins.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::guest::recorder::Recorder;
use crate::guest::{Guest, LineStream};

pub use crate::guest::systemd::journal::{Entry, JOURNAL_FOLLOW};
use crate::guest::systemd::signals::{UnitChange, follow_command};

/// A unit signal with the host instant it arrived at.
#[derive(Debug, Clone)]
pub struct SeenChange {
    /// The change.
    pub change: UnitChange,
    /// When the harness received it.
    pub received: Instant,
}

/// An entry with the host instant it arrived at.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The entry.
    pub entry: Entry,
    /// When the harness received it.
    pub received: Instant,
}

/// The journal of the current boot as it streams in.
#[derive(Clone)]
pub struct Journal {
    entries: Arc<Mutex<Vec<Seen>>>,
    count: watch::Receiver<usize>,
    changes: Arc<Mutex<Vec<SeenChange>>>,
    /// Entries and unit signals together: what wakes a waiter on either.
    arrivals: watch::Receiver<usize>,
}

/// A place in the journal and the unit signals: how many of each were looked at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    entries: usize,
    changes: usize,
}

/// Keeps the follower alive; dropping it stops the stream in the guest.
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Journal {
    /// Start following the journal of the guest's current boot, and PID 1's signals
    /// about `units`: from the `recorder` when it is connected to PID 1, else from
    /// `busctl monitor`.
    pub async fn follow(
        guest: &Guest,
        units: &[String],
        recorder: Option<&Recorder>,
    ) -> anyhow::Result<(Journal, Follower)> {
        let recorder = recorder
            .filter(|r| r.with(|l| l.connected.is_some() && l.ended.is_none()))
            .cloned();
        // busctl's stdout goes to the channel's stderr, its own messages nowhere. A guest
        // without it (or without --json) sends no signals: the journal decides alone.
        let cmd = match follow_command(units).filter(|_| recorder.is_none()) {
            Some(signals) => format!("{signals} 1>&2 2>/dev/null & exec {JOURNAL_FOLLOW}"),
            None => JOURNAL_FOLLOW.to_string(),
        };
        let (stream, signals) = guest.stream_lines_and_json_stderr(&cmd).await?;
        let journal = Journal::empty();
        let (tx, count) = watch::channel(0usize);
        let (arrived, arrivals) = watch::channel(0usize);
        let journal = Journal {
            count,
            arrivals,
            ..journal
        };
        let task = tokio::spawn(pump(
            stream,
            signals,
            recorder.map(|r| (r, units.to_vec())),
            journal.clone(),
            Senders { tx, arrived },
        ));
        Ok((journal, Follower { task }))
    }

    fn empty() -> Journal {
        Journal {
            entries: Arc::default(),
            count: watch::channel(0).1,
            changes: Arc::default(),
            arrivals: watch::channel(0).1,
        }
    }

    /// A journal with fixed entries (for tests and re-evaluation from recorded data).
    pub fn fixed(entries: Vec<Entry>) -> Journal {
        let now = Instant::now();
        let seen: Vec<Seen> = entries
            .into_iter()
            .map(|entry| Seen {
                entry,
                received: now,
            })
            .collect();
        let (_tx, count) = watch::channel(seen.len());
        let (_tx, arrivals) = watch::channel(seen.len());
        Journal {
            entries: Arc::new(Mutex::new(seen)),
            count,
            arrivals,
            ..Journal::empty()
        }
    }

    /// Narrow `clock` with every entry and unit signal that has arrived: each was
    /// received after the guest time it carries.
    pub fn tighten(&self, clock: &mut super::clock::GuestClock) {
        let all = self.entries.lock().expect("journal lock");
        for s in all.iter() {
            clock.bound_by(s.entry.mono_us, s.received);
        }
        drop(all);
        let changes = self.changes.lock().expect("signals lock");
        for c in changes.iter() {
            if let Some(us) = c.change.number("StateChangeTimestampMonotonic") {
                clock.bound_by(us, c.received);
            }
        }
    }

    /// `f` over every unit signal that has arrived, in order, without copying them.
    pub fn scan_changes<R>(&self, f: impl FnOnce(&[SeenChange]) -> R) -> R {
        let all = self.changes.lock().expect("signals lock");
        f(&all)
    }

    /// Where the entries and unit signals end now, for [`Journal::wait_about`].
    pub fn cursor(&self) -> Cursor {
        Cursor {
            entries: self.len(),
            changes: self.scan_changes(<[_]>::len),
        }
    }

    /// Wait until PID 1 says something about `unit` past `at` (a manager entry in the
    /// journal, or a signal), or until `until`; `at` moves past all that was looked at.
    /// The one way a unit wait sleeps. A stream that ended waits out `until`.
    pub async fn wait_about(&self, unit: &str, at: &mut Cursor, until: Instant) {
        let mut arrivals = self.clone();
        loop {
            // Counted before the scan: an arrival during it wakes the next round.
            let arrived = arrivals.arrived();
            let (entry, entries) = self.scan(|all| {
                let fresh = all.get(at.entries..).unwrap_or_default();
                let about = fresh
                    .iter()
                    .any(|s| s.entry.from_manager && s.entry.unit.as_deref() == Some(unit));
                (about, all.len())
            });
            let (change, changes) = self.scan_changes(|all| {
                let fresh = all.get(at.changes..).unwrap_or_default();
                (fresh.iter().any(|c| c.change.unit == unit), all.len())
            });
            *at = Cursor { entries, changes };
            if entry || change {
                return;
            }
            tokio::select! {
                alive = arrivals.arrived_after(arrived) => if !alive {
                    tokio::time::sleep_until(until.into()).await;
                    return;
                },
                _ = tokio::time::sleep_until(until.into()) => return,
            }
        }
    }

    /// How many entries and unit signals have arrived, together.
    pub fn arrived(&self) -> usize {
        *self.arrivals.borrow()
    }

    /// Wait until more than `seen` entries and signals have arrived together. Returns
    /// false if the stream ended.
    pub async fn arrived_after(&mut self, seen: usize) -> bool {
        self.arrivals.wait_for(|n| *n > seen).await.is_ok()
    }

    /// How many entries have arrived.
    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Whether nothing has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` over every entry that has arrived, without copying them.
    pub fn scan<R>(&self, f: impl FnOnce(&[Seen]) -> R) -> R {
        let all = self.entries.lock().expect("journal lock");
        f(&all)
    }

    /// When the stream caught up with the boot: the arrival of the first entry that came
    /// within `lag` of being written (by `clock`). Before it, the stream was replaying the
    /// boot's history, and no decision could be faster than that replay.
    pub fn caught_up(
        &self,
        clock: &super::clock::GuestClock,
        lag: std::time::Duration,
    ) -> Option<Instant> {
        self.scan(|all| {
            all.iter()
                .find(|s| {
                    s.received
                        .saturating_duration_since(clock.to_host(s.entry.mono_us))
                        < lag
                })
                .map(|s| s.received)
        })
    }

    /// Entries from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Seen> {
        let all = self.entries.lock().expect("journal lock");
        all.get(from..).map(<[Seen]>::to_vec).unwrap_or_default()
    }

    /// Wait until an entry from index `*seen` on satisfies `wanted`, or until `until`;
    /// `*seen` moves past every entry looked at. The one way every waiter sleeps: woken
    /// by the journal, bounded by a deadline or retry interval. A stream that ended (the
    /// guest went away) waits out `until`.
    pub async fn wait_for(
        &self,
        seen: &mut usize,
        until: Instant,
        wanted: impl Fn(&Entry) -> bool,
    ) {
        loop {
            let mut journal = self.clone();
            let arrived = tokio::select! {
                alive = journal.changed_after(*seen) => alive,
                _ = tokio::time::sleep_until(until.into()) => return,
            };
            if !arrived {
                tokio::time::sleep_until(until.into()).await;
                return;
            }
            let fresh = self.since(*seen);
            *seen += fresh.len();
            if fresh.iter().any(|s| wanted(&s.entry)) {
                return;
            }
        }
    }

    /// Whether the stream has ended (the guest or its SSH server went away).
    pub fn ended(&self) -> bool {
        self.count.has_changed().is_err()
    }

    /// Wait until more than `seen` entries have arrived. Returns false if the stream
    /// ended (the guest went away), so the caller stops waiting on it.
    async fn changed_after(&mut self, seen: usize) -> bool {
        self.count.wait_for(|n| *n > seen).await.is_ok()
    }
}

struct Senders {
    tx: watch::Sender<usize>,
    arrived: watch::Sender<usize>,
}

impl Journal {
    /// Take one line of the guest's stream, as it arrives: a unit signal (busctl's JSON)
    /// or a journal entry (journalctl's JSON). False when it is neither.
    fn take(
        &self,
        senders: &Senders,
        line: &str,
        is_signal: bool,
        first_signal: &mut bool,
    ) -> bool {
        let received = Instant::now();
        if is_signal {
            let Some(change) = UnitChange::parse(line) else {
                return false;
            };
            if *first_signal {
                *first_signal = false;
                tracing::debug!("unit signals: the first arrived ({})", change.unit);
            }
            self.changes
                .lock()
                .expect("signals lock")
                .push(SeenChange { change, received });
        } else if let Some(entry) = Entry::parse(line) {
            tracing::trace!(mono_us = entry.mono_us, "journal: {}", entry.message);
            let n = {
                let mut all = self.entries.lock().expect("journal lock");
                all.push(Seen { entry, received });
                all.len()
            };
            senders.tx.send_replace(n);
        } else {
            return false;
        }
        true
    }
}

/// A journal fed by hand, line by line, as a guest's stream feeds it: run/'s tests
/// replay streams recorded from real boots through it.
#[cfg(test)]
pub(crate) struct Replay {
    journal: Journal,
    senders: Senders,
    first_signal: bool,
}

#[cfg(test)]
impl Replay {
    /// An empty stream.
    pub(crate) fn new() -> Replay {
        let (tx, count) = watch::channel(0usize);
        let (arrived, arrivals) = watch::channel(0usize);
        Replay {
            journal: Journal {
                count,
                arrivals,
                ..Journal::empty()
            },
            senders: Senders { tx, arrived },
            first_signal: true,
        }
    }

    /// The journal its lines arrive in.
    pub(crate) fn journal(&self) -> Journal {
        self.journal.clone()
    }

    /// One line of the stream: a journal entry, or a unit signal when `is_signal`.
    pub(crate) fn line(&mut self, line: &str, is_signal: bool) -> bool {
        let took = self
            .journal
            .take(&self.senders, line, is_signal, &mut self.first_signal);
        if took {
            self.senders.arrived.send_modify(|n| *n += 1);
        }
        took
    }
}

async fn pump(
    mut stream: LineStream,
    mut signals: tokio::sync::mpsc::Receiver<String>,
    recorded: Option<(Recorder, Vec<String>)>,
    journal: Journal,
    senders: Senders,
) {
    let mut signals_open = true;
    let mut first_signal = true;
    let (mut recorder, units) = recorded.unzip();
    let units = units.unwrap_or_default();
    let mut recorded_from = 0;
    loop {
        if let Some(r) = &recorder {
            let fresh = r.since(recorded_from);
            recorded_from += fresh.len();
            let changes: Vec<SeenChange> = fresh
                .into_iter()
                .filter_map(|(received, e)| {
                    let change = e.unit_change().filter(|c| units.contains(&c.unit))?;
                    Some(SeenChange { change, received })
                })
                .collect();
            if !changes.is_empty() {
                journal
                    .changes
                    .lock()
                    .expect("signals lock")
                    .extend(changes);
                senders.arrived.send_modify(|n| *n += 1);
            }
        }
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let (line, is_signal) = tokio::select! {
            line = stream.next_line() => match line {
                Some(line) => (line, false),
                None => break,
            },
            line = signals.recv(), if signals_open => match line {
                Some(line) => (line, true),
                None => {
                    signals_open = false;
                    tracing::debug!("the unit signals ended");
                    continue;
                }
            },
            () = async { recorder.as_mut().expect("guarded").wait_news(far).await },
                if recorder.is_some() => continue,
        };
        if journal.take(&senders, &line, is_signal, &mut first_signal) {
            senders.arrived.send_modify(|n| *n += 1);
        }
    }
    tracing::debug!("journal stream ended: {:?}", stream.end());
}
