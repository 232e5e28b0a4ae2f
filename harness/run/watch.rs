//! Following the guest's journal while a boot happens, so waits end on events.
//!
//! One `journalctl -b -f -o json` per boot streams every entry of the boot, history
//! first. Each entry is kept (journal expectations search them) and wakes every waiter;
//! a waiter re-reads the state it cares about only when an entry concerns it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use crate::guest::{Guest, LineStream};

pub use crate::guest::systemd::journal::{Entry, JOURNAL_FOLLOW};

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
    /// Start following the journal of the guest's current boot.
    pub async fn follow(guest: &Guest) -> anyhow::Result<(Journal, Follower)> {
        let stream = guest.stream_lines(JOURNAL_FOLLOW).await?;
        let entries = Arc::new(Mutex::new(Vec::new()));
        let (tx, count) = watch::channel(0usize);
        let task = tokio::spawn(pump(stream, entries.clone(), tx));
        Ok((Journal { entries, count }, Follower { task }))
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
        Journal {
            entries: Arc::new(Mutex::new(seen)),
            count,
        }
    }

    /// Narrow `clock` with every entry that has arrived.
    pub fn tighten(&self, clock: &mut super::clock::GuestClock) {
        let all = self.entries.lock().expect("journal lock");
        for s in all.iter() {
            clock.bound_by(s.entry.mono_us, s.received);
        }
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
    pub async fn changed_after(&mut self, seen: usize) -> bool {
        self.count.wait_for(|n| *n > seen).await.is_ok()
    }
}

async fn pump(mut stream: LineStream, entries: Arc<Mutex<Vec<Seen>>>, tx: watch::Sender<usize>) {
    while let Some(line) = stream.next_line().await {
        let received = Instant::now();
        if let Some(entry) = Entry::parse(&line) {
            tracing::trace!(mono_us = entry.mono_us, "journal: {}", entry.message);
            let n = {
                let mut all = entries.lock().expect("journal lock");
                all.push(Seen { entry, received });
                all.len()
            };
            tx.send_replace(n);
        }
    }
    tracing::debug!("journal stream ended: {:?}", stream.end());
}
