//! A gate's story in one boot: the harness's own probes of the gate's URL beside the
//! gated unit's journal lines, on the guest's monotonic clock. The gate-honesty checks
//! judge the unit's words ("healthy", "decision=commit", its start's end) against these
//! probes; the report shows both so a reader can judge them too. Pure: built from
//! `waitfor-boot-N.json`'s probes and `journal-boot-N.json`'s text.

use serde::Serialize;

use crate::check::ProbeRecord;
use crate::guest::systemd::journal::Entry;

/// Most rows drawn per gate and boot; past it the middle is left out, and said so.
pub const MAX_ROWS: usize = 40;
/// How long after its last probe's answer the gated unit's lines are still shown: the
/// probe right after a start ended is the one that shows whether the gate let go early.
const TAIL_US: u64 = 2_000_000;

/// One gated unit's probes and journal lines in one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateTimeline {
    /// The gated unit.
    pub unit: String,
    /// The URL the harness probed.
    pub url: String,
    /// Probes and lines, oldest first, at most [`MAX_ROWS`].
    pub rows: Vec<Row>,
    /// Rows left out of the middle to keep [`MAX_ROWS`].
    pub left_out: usize,
}

/// One moment of a [`GateTimeline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Guest monotonic µs: a probe's send, a line's timestamp.
    pub at_us: u64,
    /// What happened then.
    pub what: RowKind,
}

/// A probe by the harness, or a line in the unit's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// The harness probed the gate's URL.
    Probe {
        /// When the answer came back (guest µs).
        answered_us: u64,
        /// The answer in a word (`200`, `refused`, `timed out`).
        answer: String,
        /// Whether it was 2xx.
        healthy: bool,
    },
    /// The unit (or PID 1 about the unit) logged a line.
    Journal {
        /// Whether PID 1 wrote it (start, end, failure of the unit's jobs).
        from_manager: bool,
        /// The line.
        message: String,
    },
}

/// The timelines of every gate the harness probed in one boot, from the boot's gate
/// probes (those without guest times, from runs before they were kept, are left out) and
/// its journal (`journalctl -o json` lines). A gate's lines run from its unit's first
/// line to [`TAIL_US`] after its last probe's answer.
pub fn build(probes: &[ProbeRecord], journal: &str) -> Vec<GateTimeline> {
    let mut gates: Vec<(String, String)> = Vec::new();
    for p in probes {
        if let (Some(unit), Some(_)) = (&p.gate_of, p.guest_us)
            && !gates.iter().any(|(u, _)| u == unit)
        {
            gates.push((unit.clone(), p.url.clone()));
        }
    }
    if gates.is_empty() {
        return Vec::new();
    }
    let entries: Vec<Entry> = journal.lines().filter_map(Entry::parse).collect();
    gates
        .into_iter()
        .map(|(unit, url)| one(&unit, url, probes, &entries))
        .collect()
}

fn one(unit: &str, url: String, probes: &[ProbeRecord], entries: &[Entry]) -> GateTimeline {
    let mut rows: Vec<Row> = probes
        .iter()
        .filter(|p| p.gate_of.as_deref() == Some(unit))
        .filter_map(|p| {
            let (sent, answered) = p.guest_us?;
            Some(Row {
                at_us: sent,
                what: RowKind::Probe {
                    answered_us: answered,
                    answer: p.excerpt.clone(),
                    healthy: p.status.is_some_and(|c| (200..300).contains(&c)),
                },
            })
        })
        .collect();
    let last = rows
        .iter()
        .filter_map(|r| match &r.what {
            RowKind::Probe { answered_us, .. } => Some(*answered_us),
            RowKind::Journal { .. } => None,
        })
        .max()
        .unwrap_or(0);
    rows.extend(
        entries
            .iter()
            .filter(|e| e.unit.as_deref() == Some(unit) && e.mono_us <= last + TAIL_US)
            .map(|e| Row {
                at_us: e.mono_us,
                what: RowKind::Journal {
                    from_manager: e.from_manager,
                    message: e.message.clone(),
                },
            }),
    );
    // A line and a probe at one µs: the line first (the probe answered after it).
    rows.sort_by_key(|r| (r.at_us, matches!(r.what, RowKind::Probe { .. })));
    let left_out = rows.len().saturating_sub(MAX_ROWS);
    if left_out > 0 {
        let head = MAX_ROWS / 2;
        rows.drain(head..head + left_out);
    }
    GateTimeline {
        unit: unit.to_string(),
        url,
        rows,
        left_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/gate-timeline/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn probes(name: &str) -> Vec<ProbeRecord> {
        #[derive(serde::Deserialize)]
        struct File {
            gate_probes: Vec<ProbeRecord>,
        }
        serde_json::from_str::<File>(&fixture(name))
            .expect("waitfor record")
            .gate_probes
    }

    #[test]
    fn probes_and_lines_in_guest_order() {
        let t = build(
            &probes("dishonest.waitfor.json"),
            &fixture("dishonest.journal.jsonl"),
        );
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.unit, "deploy-proxy.service");
        assert!(t.rows.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        let probes = t
            .rows
            .iter()
            .filter(|r| matches!(r.what, RowKind::Probe { .. }))
            .count();
        assert!(probes >= 1, "{t:#?}");
        // Only deploy-proxy's lines (the fixture keeps traefik's too), up to the tail: its
        // two starts, each begun, decided and finished, and the restart between them.
        let lines = t.rows.len() - probes;
        assert_eq!(lines, 11, "{t:#?}");
        let line = |needle: &str| {
            t.rows.iter().position(|r| match &r.what {
                RowKind::Journal { message, .. } => message.contains(needle),
                _ => false,
            })
        };
        // The dishonest gate commits, then a probe of the harness finds the URL refused.
        let commit = line("decision=commit").expect("the decision line is shown");
        let refused = t.rows.iter().position(|r| {
            matches!(&r.what, RowKind::Probe { healthy: false, .. })
                && r.at_us >= t.rows[commit].at_us
        });
        assert!(refused.is_some(), "{t:#?}");
        // Nothing of the unit past the tail after the last probe.
        let last_answer = t
            .rows
            .iter()
            .filter_map(|r| match &r.what {
                RowKind::Probe { answered_us, .. } => Some(*answered_us),
                _ => None,
            })
            .max()
            .unwrap();
        assert!(t.rows.iter().all(|r| r.at_us <= last_answer + TAIL_US));
    }

    #[test]
    fn long_timelines_keep_head_and_tail() {
        let mut ps = probes("dishonest.waitfor.json");
        let first = ps[0].clone();
        let (sent, answered) = first.guest_us.unwrap();
        ps = (0..100u64)
            .map(|i| ProbeRecord {
                guest_us: Some((sent + i * 1000, answered + i * 1000)),
                ..first.clone()
            })
            .collect();
        let t = &build(&ps, "")[0];
        assert_eq!(t.rows.len(), MAX_ROWS);
        assert_eq!(t.left_out, 100 - MAX_ROWS);
        assert_eq!(t.rows[0].at_us, sent);
        assert_eq!(t.rows.last().unwrap().at_us, sent + 99 * 1000);
    }

    #[test]
    fn probes_without_guest_times_draw_nothing() {
        let mut ps = probes("dishonest.waitfor.json");
        for p in &mut ps {
            p.guest_us = None;
        }
        assert!(build(&ps, &fixture("dishonest.journal.jsonl")).is_empty());
    }
}
