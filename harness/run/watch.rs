//! Following the guest's journal while a boot happens, so waits end on events.
//!
//! One `journalctl -b -f -o json` per boot streams every entry of the boot, history
//! first. Each entry is kept (journal expectations search them) and wakes every waiter;
//! a waiter re-reads the state it cares about only when an entry concerns it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use crate::guest::{Guest, LineStream};

/// The journal command the watcher runs in the guest.
/// `stdbuf -oL`: journalctl writes through stdio, which a pipe would block-buffer and so
/// hold entries back for seconds.
/// Only the fields the runner reads are sent (journalctl adds the `__` ones), which keeps
/// the replay of the boot so far short on a slow guest.
pub const JOURNAL_FOLLOW: &str = "stdbuf -oL journalctl -b -f -n all -o json --no-pager \
    --output-fields=MESSAGE,UNIT,_SYSTEMD_UNIT,_PID,JOB_RESULT,MESSAGE_ID";

/// One journal entry, reduced to what the runner uses.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// `__MONOTONIC_TIMESTAMP`: µs since the guest booted.
    pub mono_us: u64,
    /// `UNIT` (set by PID 1 on unit lifecycle messages), else `_SYSTEMD_UNIT`.
    pub unit: Option<String>,
    /// Whether PID 1 wrote it (a unit or job state change).
    pub from_manager: bool,
    /// `MESSAGE`.
    pub message: String,
    /// `JOB_RESULT`, on job completion messages.
    pub job_result: Option<String>,
}

impl Entry {
    /// Parse one line of `journalctl -o json`; `None` for a line that is not an entry.
    pub fn parse(line: &str) -> Option<Entry> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let mono_us = field("__MONOTONIC_TIMESTAMP")?.parse().ok()?;
        let from_manager = field("_PID").as_deref() == Some("1");
        let unit = if from_manager {
            field("UNIT").or_else(|| field("_SYSTEMD_UNIT"))
        } else {
            field("_SYSTEMD_UNIT").or_else(|| field("UNIT"))
        };
        // MESSAGE may be an array of bytes when it is not valid UTF-8.
        let message = match v.get("MESSAGE") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(bytes)) => String::from_utf8_lossy(
                &bytes
                    .iter()
                    .filter_map(|b| b.as_u64().map(|b| b as u8))
                    .collect::<Vec<u8>>(),
            )
            .into_owned(),
            _ => String::new(),
        };
        Some(Entry {
            mono_us,
            unit,
            from_manager,
            message,
            job_result: field("JOB_RESULT"),
        })
    }
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

    /// Entries from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Seen> {
        let all = self.entries.lock().expect("journal lock");
        all.get(from..).map(<[Seen]>::to_vec).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_manager_entry() {
        let line = r#"{"__MONOTONIC_TIMESTAMP":"23456789","_PID":"1","UNIT":"deploy-proxy.service","MESSAGE":"deploy-proxy.service: Failed with result 'timeout'.","JOB_RESULT":"timeout","_SYSTEMD_UNIT":"init.scope"}"#;
        let e = Entry::parse(line).expect("an entry");
        assert_eq!(e.mono_us, 23_456_789);
        assert!(e.from_manager);
        assert_eq!(e.unit.as_deref(), Some("deploy-proxy.service"));
        assert_eq!(e.job_result.as_deref(), Some("timeout"));
    }

    #[test]
    fn service_output_is_attributed_to_its_unit() {
        let line = r#"{"__MONOTONIC_TIMESTAMP":"5","_PID":"812","_SYSTEMD_UNIT":"deploy-proxy.service","MESSAGE":[104,105]}"#;
        let e = Entry::parse(line).expect("an entry");
        assert!(!e.from_manager);
        assert_eq!(e.unit.as_deref(), Some("deploy-proxy.service"));
        assert_eq!(e.message, "hi");
        assert!(Entry::parse("not json").is_none());
    }
}
