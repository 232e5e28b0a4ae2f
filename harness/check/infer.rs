//! Waits nobody declared, inferred from what the guest did. Pure.
//!
//! pxgate was a health gate that polled a URL served, through the proxy, by a unit
//! ordered after the gated one; nobody had declared it. Its trace is plain to see
//! without a declaration: while U's start job runs, connections to some port are refused
//! (by U itself, or by a local reverse proxy on U's behalf), a unit W that is queued
//! behind U's job later listens on that port. An edge U → W is inferred when all three
//! hold:
//!
//! - W's job waited in the queue on U's running start job, from `a` to `b`;
//! - between `a` and `b`, connection attempts to port P were refused or reset (the
//!   netwatch's `reset` events, from any unit but W);
//! - W listens on P at the end of the phase.
//!
//! Together with systemd's own edge (W waits for U), that is a wait cycle for as long as
//! both held: from the first such refusal to the last (or to the end of the wait).

use serde::{Deserialize, Serialize};

use crate::guest::recorder::net::{Attempt, Connection};

/// W's job waited on U's running start job, as the watch saw it (guest µs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitSeen {
    /// U: the unit whose start job ran.
    pub on: String,
    /// W: the unit whose job waited for it.
    pub waiter: String,
    /// When the watch first saw it.
    pub from_us: u64,
    /// When the watch last saw it.
    pub to_us: u64,
}

/// A unit listening on a TCP port at the end of a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The port.
    pub port: u16,
    /// The unit whose process listens (from its cgroup).
    pub unit: String,
}

/// An inferred edge U → W and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InferredEdge {
    /// U, whose start waited.
    pub from: String,
    /// W, which serves the port and was queued behind U.
    pub to: String,
    /// The port W listens on.
    pub port: u16,
    /// Who was refused: `unit (command)`, each once.
    pub who: Vec<String>,
    /// The addresses they tried.
    pub daddrs: Vec<String>,
    /// How many refusals or resets.
    pub refused: usize,
    /// The first and last of them (guest µs).
    pub first_us: u64,
    /// See `first_us`.
    pub last_us: u64,
    /// When W's wait on U was seen (guest µs).
    pub wait_from_us: u64,
    /// See `wait_from_us`.
    pub wait_to_us: u64,
}

impl InferredEdge {
    /// How long U and W waited on each other: while W was queued behind U and the
    /// refusals went on.
    pub fn cycle_us(&self) -> u64 {
        let start = self.first_us.max(self.wait_from_us);
        let end = self.last_us.min(self.wait_to_us);
        end.saturating_sub(start)
    }

    /// The cycle in words, with its evidence.
    pub fn describe(&self) -> String {
        let secs = |us: u64| us as f64 / 1e6;
        format!(
            "{} (start running) waits for {} (inferred: {} refused or reset {} times on port {} ({}) from {:.1} s to {:.1} s after boot; {} listens on {} at the phase's end) and {} (start waiting, queued behind {}'s start job from {:.1} s) waits for {}",
            self.from,
            self.to,
            self.who.join(", "),
            self.refused,
            self.port,
            self.daddrs.join(", "),
            secs(self.first_us),
            secs(self.last_us),
            self.to,
            self.port,
            self.to,
            self.from,
            secs(self.wait_from_us),
            self.from
        )
    }
}

/// The edges the evidence supports, longest cycle first.
pub fn infer(
    waits: &[WaitSeen],
    conns: &[Connection],
    listeners: &[Listener],
) -> Vec<InferredEdge> {
    let mut out = Vec::new();
    for w in waits {
        for l in listeners.iter().filter(|l| l.unit == w.waiter) {
            let refused: Vec<&Connection> = conns
                .iter()
                .filter(|c| {
                    c.kind == Attempt::Reset
                        && c.dport == l.port
                        && (w.from_us..=w.to_us).contains(&c.at_us)
                        && c.unit.as_deref() != Some(w.waiter.as_str())
                })
                .collect();
            let (Some(first), Some(last)) = (refused.first(), refused.last()) else {
                continue;
            };
            let mut who: Vec<String> = refused
                .iter()
                .map(|c| format!("{} ({})", c.unit.as_deref().unwrap_or("no unit"), c.comm))
                .collect();
            who.sort();
            who.dedup();
            let mut daddrs: Vec<String> = refused.iter().map(|c| c.daddr.clone()).collect();
            daddrs.sort();
            daddrs.dedup();
            out.push(InferredEdge {
                from: w.on.clone(),
                to: w.waiter.clone(),
                port: l.port,
                who,
                daddrs,
                refused: refused.len(),
                first_us: first.at_us,
                last_us: last.at_us,
                wait_from_us: w.from_us,
                wait_to_us: w.to_us,
            });
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.cycle_us()));
    out.dedup_by(|a, b| a.from == b.from && a.to == b.to && a.port == b.port);
    out
}

/// `PORT UNIT PID` lines (the listener read's evidence file) as listeners.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            let port = w.next()?.parse().ok()?;
            let unit = w.next()?.to_string();
            (unit != "-").then_some(Listener { port, unit })
        })
        .collect()
}
