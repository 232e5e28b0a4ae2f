//! The schema of a pair's `timeline.jsonl`: what the runner did and saw, one event a
//! line, `{"t_secs": 12.3, "event": "ssh up", "detail": "..."}` timed from the pair's
//! start. [`RunEvent`] is the one list of events: the runner records them (and its
//! progress line shows them), and `bench` reads them back by kind, so each name is
//! written once, here.

use serde::{Deserialize, Serialize};

macro_rules! run_events {
    ($($(#[$doc:meta])* $variant:ident = $name:literal),* $(,)?) => {
        /// What happened, as a timeline line names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum RunEvent {
            $($(#[$doc])* $variant,)*
        }

        impl RunEvent {
            /// Every event, in the order a pair usually lives them.
            pub const ALL: &[RunEvent] = &[$(RunEvent::$variant),*];

            /// Its name in `timeline.jsonl`.
            pub fn name(self) -> &'static str {
                match self {
                    $(RunEvent::$variant => $name,)*
                }
            }

            /// The event a line names; `None` for a name this version does not know.
            pub fn parse(name: &str) -> Option<RunEvent> {
                match name {
                    $($name => Some(RunEvent::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

run_events! {
    /// The pair began (detail: its id).
    PairStarted = "pair started",
    /// A phase began (detail: its name).
    Phase = "phase",
    /// An action of the phase ran.
    Action = "action",
    /// A restart action's `systemctl` returned.
    Restart = "restart",
    /// SSH answered on a boot (detail: how long it took, the pinned host key).
    SshUp = "ssh up",
    /// The journal is followed and the guest clock mapped: the watch is live.
    Watching = "watching",
    /// The recorder's relay spoke (detail: since when it watched).
    Recorder = "recorder",
    /// An expectation held (detail: `id: what was seen`), at its decision.
    Held = "held",
    /// An expectation failed (detail: `id: what was seen`), at its decision.
    Failed = "failed",
    /// The journal stream stopped replaying the boot's history, at that moment.
    JournalCaughtUp = "journal caught up",
    /// Every unit's state was kept from the boot's idle moment.
    UnitsReadIdle = "units read at the idle moment",
    /// Every unit's state must be read at the phase's end (detail: why not earlier).
    UnitsReadAtEnd = "units read at the phase's end",
    /// Every unit's state kept from the idle moment, with the units PID 1 reported
    /// changed since re-read at the phase's end.
    UnitsReadDelta = "units re-read where changed",
    /// The last phase waited for PID 1's job queue to empty before its evidence.
    BootSettled = "boot settled",
    /// A boot's evidence was collected (detail: the phase).
    EvidenceCollected = "evidence collected",
    /// A failed expectation ended the pair early.
    Stopped = "stopped",
    /// Every VM of the pair has stopped.
    TornDown = "torn down",
    /// The base image was hashed again after the pair.
    BaseImageChecked = "base image checked",
    /// The scenario was wrong (detail: the error).
    ScenarioError = "scenario error",
    /// The infrastructure failed (detail: the error).
    InfrastructureError = "infrastructure error",
    /// The pair's verdict (detail: its word).
    Verdict = "verdict",
}

/// One line of `timeline.jsonl`, as written.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// Seconds since the pair started (host clock).
    pub t_secs: f64,
    /// [`RunEvent::name`].
    pub event: &'static str,
    /// What the event says, in words.
    pub detail: &'a str,
}

/// One line of `timeline.jsonl`, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Seconds since the pair started (host clock).
    pub t_secs: f64,
    /// The event; `None` when another version wrote a name this one does not know.
    pub event: Option<RunEvent>,
    /// What the event says.
    pub detail: String,
}

/// The entries of a timeline's text; lines that do not parse are skipped (a torn last
/// line of an interrupted run).
pub fn parse(text: &str) -> Vec<Entry> {
    #[derive(Deserialize)]
    struct Raw {
        t_secs: f64,
        event: String,
        #[serde(default)]
        detail: String,
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<Raw>(l).ok())
        .map(|r| Entry {
            t_secs: r.t_secs,
            event: RunEvent::parse(&r.event),
            detail: r.detail,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_its_event() {
        for e in RunEvent::ALL {
            assert_eq!(RunEvent::parse(e.name()), Some(*e));
        }
        assert_eq!(RunEvent::parse("no such event"), None);
    }

    #[test]
    fn the_reference_run_timelines_name_only_known_events() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
        let mut lines = 0;
        for dir in std::fs::read_dir(&root).expect("the reference run") {
            let path = dir.expect("an entry").path().join("timeline.jsonl");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let entries = parse(&text);
            assert_eq!(entries.len(), text.lines().count(), "{}", path.display());
            for e in &entries {
                assert!(e.event.is_some(), "{}: {e:?}", path.display());
            }
            lines += entries.len();
        }
        assert!(lines > 50, "only {lines} lines read");
    }
}
