//! The wait-cycle watcher's own probes of the declared gates' URLs, from inside the
//! guest: while a gated start runs (paced), and once at once when it ends. Each is
//! recorded for the evidence and, on the guest's clock, for the gate-honesty checks.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::check::ProbeRecord;
use crate::check::live::GateSeen;
use crate::guest::Guest;
use crate::guest::recorder::{Queue, Recorder};
use crate::guest::systemd::sources::Gate;

use super::clock::GuestClock;
use super::watch_state::WatchState;

/// A gate probe's own limit: a gate that hangs is recorded as `timed out`.
const GATE_PROBE: Duration = Duration::from_secs(2);
/// The shortest gap between two probes of a gate while the recorder drives the reads
/// (they come at every change of the queue; a probe is an SSH round trip).
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// When the recorder-driven watch probes the gates.
#[derive(Default)]
pub(super) struct Pacing {
    /// The last round of probes of running gated starts.
    pub(super) last_probe: Option<Instant>,
    /// The gates whose start ran at the last round.
    running_before: Vec<usize>,
}

impl Pacing {
    /// Probe the gates whose start runs (an SSH round trip each, so at most every
    /// [`PROBE_EVERY`], not at every change), and at once a gate whose start just ended:
    /// whether its URL serves right after is what its honesty is judged on.
    pub(super) async fn probe(
        &mut self,
        guest: &Guest,
        gates: &mut [GateSeen],
        (queue, ended): (&Queue, &[String]),
        clock: &GuestClock,
        state: &Mutex<WatchState>,
    ) -> Vec<ProbeRecord> {
        let due = self.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
        let running: Vec<usize> = gates
            .iter()
            .enumerate()
            .filter(|(_, g)| queue.start_running(&g.gate.unit))
            .map(|(n, _)| n)
            .collect();
        // Ended since the last round: seen running then and not now, or a job of the
        // gated unit removed among the events just folded (a start that began and ended
        // between two rounds).
        let mut to_probe: Vec<usize> = (0..gates.len())
            .filter(|n| !running.contains(n))
            .filter(|n| self.running_before.contains(n) || ended.contains(&gates[*n].gate.unit))
            .collect();
        self.running_before = running.clone();
        if due && !running.is_empty() {
            self.last_probe = Some(Instant::now());
            to_probe.extend(running);
        }
        let mut probes = Vec::new();
        for n in to_probe {
            match probe_gate(guest, &mut gates[n], clock, state).await {
                Ok(record) => probes.push(record),
                Err(e) => {
                    state.lock().expect("cycle watch lock").error =
                        Some(format!("probing {}: {e:#}", gates[n].gate.url))
                }
            }
        }
        probes
    }
}

/// Probe `g`'s URL from inside the guest, note the answer on `g` and (on the guest's
/// clock) in `state` for the gate-honesty checks, and return the probe's record. TLS is
/// not verified: the question is whether, and with what, the URL answers.
pub(super) async fn probe_gate(
    guest: &Guest,
    g: &mut GateSeen,
    clock: &GuestClock,
    state: &Mutex<WatchState>,
) -> anyhow::Result<ProbeRecord> {
    use super::probe::{self, Answer, Tls};
    let sent = Instant::now();
    let answer = probe::from_guest(guest, &g.gate.url, Tls::Insecure, GATE_PROBE).await?;
    let answered = Instant::now();
    let status = match &answer {
        Answer::Http { status, .. } => Some(*status),
        Answer::None { .. } => None,
    };
    let healthy = status.is_some_and(|c| (200..300).contains(&c));
    g.record(answer.word(), healthy);
    let (sent_us, answered_us) = (clock.to_guest_us(sent), clock.to_guest_us(answered));
    state.lock().expect("cycle watch lock").gate_probes.push((
        g.gate.unit.clone(),
        crate::check::honesty::GateProbe {
            sent_us,
            answered_us,
            healthy,
            answer: answer.word(),
        },
    ));
    Ok(ProbeRecord {
        at_unix: crate::run::record::unix_now(),
        from: "guest".into(),
        gate_of: Some(g.gate.unit.clone()),
        url: g.gate.url.clone(),
        status,
        excerpt: answer.word(),
        guest_us: Some((sent_us, answered_us)),
    })
}

/// One of the recorder's gate probe answers, as the watcher folds it into its gates.
pub(super) struct RecorderAnswer {
    /// When it reached the host.
    pub(super) arrived: Instant,
    /// The gate probed.
    pub(super) gate: Gate,
    /// The answer in the words of the watcher's own probes.
    pub(super) word: String,
    /// Whether it was a 2xx status.
    pub(super) healthy: bool,
}

/// Take the recorder's gate probes (made in the guest from early userspace, before SSH
/// could) from index `from` on into the watch's state, beside the watcher's own: the
/// gate-honesty checks judge both, so a gated start that ended before SSH answered is
/// still judged on a probe of the harness's. Returned in arrival order, for the
/// recorder-driven watch to fold into its gates between the queue's events: a cycle
/// through a gate is confirmed from the recorder's probes as from its own.
pub(super) fn take_recorder_probes(
    rec: &Recorder,
    from: &mut usize,
    clock: &GuestClock,
    state: &Mutex<WatchState>,
) -> Vec<RecorderAnswer> {
    // Called at every turn of the watcher's loop: nothing is copied or locked unless an
    // answer came in since the last call.
    let fresh: Vec<(Instant, Gate, crate::guest::recorder::net::GateAnswer)> = rec.with(|l| {
        let new = l.gate_answers.get(*from..).unwrap_or_default();
        *from += new.len();
        new.iter()
            .filter_map(|(at, a)| Some((*at, l.probed_gates.get(a.gate)?.clone(), a.clone())))
            .collect()
    });
    if fresh.is_empty() {
        return Vec::new();
    }
    let mut answers = Vec::with_capacity(fresh.len());
    let mut s = state.lock().expect("cycle watch lock");
    for (arrived, gate, a) in fresh {
        let word = a.shown_word();
        answers.push(RecorderAnswer {
            arrived,
            gate: gate.clone(),
            word: word.clone(),
            healthy: a.healthy(),
        });
        s.gate_probes.push((
            gate.unit.clone(),
            crate::check::honesty::GateProbe {
                sent_us: a.sent_us,
                answered_us: a.answered_us,
                healthy: a.healthy(),
                answer: word.clone(),
            },
        ));
        let ago = Instant::now().saturating_duration_since(clock.to_host(a.answered_us));
        s.probes.push(ProbeRecord {
            at_unix: crate::run::record::unix_now() - ago.as_secs_f64(),
            from: "guest".into(),
            gate_of: Some(gate.unit.clone()),
            url: gate.url.clone(),
            status: a.status(),
            excerpt: format!("{word} (probed by the recorder)"),
            guest_us: Some((a.sent_us, a.answered_us)),
        });
    }
    answers
}
