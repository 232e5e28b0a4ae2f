//! Gate honesty: a gated start (and what is ordered after it) judged against the
//! harness's own probes of the gate's URL, not against what the gate says of itself.
//!
//! A gate that ends its start job, or logs its decision, before its URL serves lets
//! consumers start on a proxy that is not there. The harness probes the URL itself
//! while the gated start runs and once right after it ends. A moment (the start's end, a
//! consumer's start, the gate's decision line) is honest when no probe *sent* at or
//! after it found the URL unhealthy: a refusal seen after the moment means the gate
//! was not serving then. It is shown as seen healthy when a probe *answered* healthy at
//! or before it, else as bracketed between the last unhealthy probe before it and the
//! first healthy one after (the probes' resolution).

/// One probe of a gate's URL by the harness, on the guest's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateProbe {
    /// When the probe was sent (guest µs).
    pub sent_us: u64,
    /// When its answer came back (guest µs).
    pub answered_us: u64,
    /// Whether the URL answered 2xx.
    pub healthy: bool,
    /// The answer in a word or two (`200`, `refused`, `timed out`).
    pub answer: String,
}

/// What the probes say of one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Honesty {
    /// A probe answered healthy at or before the moment.
    SeenHealthy(String),
    /// The last probe before the moment was unhealthy and the first after it healthy,
    /// with no unhealthy probe sent after it: the gate turned healthy in between.
    Bracketed(String),
    /// A probe sent at or after the moment found the URL unhealthy.
    Unhealthy(String),
    /// No probe answered healthy at all: the harness cannot say.
    NotSeen(String),
}

impl Honesty {
    /// Whether the moment passes (not checked counts apart, as not passing).
    pub fn holds(&self) -> bool {
        matches!(self, Honesty::SeenHealthy(_) | Honesty::Bracketed(_))
    }

    /// What was seen, in words.
    pub fn words(&self) -> &str {
        match self {
            Honesty::SeenHealthy(w)
            | Honesty::Bracketed(w)
            | Honesty::Unhealthy(w)
            | Honesty::NotSeen(w) => w,
        }
    }
}

/// How soon after a moment a healthy probe must have been sent to bracket it: the
/// watcher's probe right after a gated start ends goes out well within this.
pub const BRACKET: std::time::Duration = std::time::Duration::from_secs(2);

fn secs(us: u64) -> String {
    format!("{:.3}s", us as f64 / 1e6)
}

/// Judge `what`, which happened at `at_us` (guest clock), against `probes` of `url`.
pub fn judge(what: &str, at_us: u64, url: &str, probes: &[GateProbe]) -> Honesty {
    if let Some(p) = probes
        .iter()
        .filter(|p| !p.healthy && p.sent_us >= at_us)
        .min_by_key(|p| p.sent_us)
    {
        return Honesty::Unhealthy(format!(
            "{what} at {}, but the harness's probe of {url} sent at {} still found it {}",
            secs(at_us),
            secs(p.sent_us),
            p.answer
        ));
    }
    if let Some(p) = probes
        .iter()
        .filter(|p| p.healthy && p.answered_us <= at_us)
        .min_by_key(|p| p.answered_us)
    {
        return Honesty::SeenHealthy(format!(
            "{what} at {}, after the harness saw {url} healthy at {}",
            secs(at_us),
            secs(p.answered_us)
        ));
    }
    let after = probes
        .iter()
        .filter(|p| p.healthy)
        .min_by_key(|p| p.answered_us);
    let before = probes
        .iter()
        .filter(|p| !p.healthy && p.sent_us < at_us)
        .max_by_key(|p| p.answered_us);
    match after {
        // A healthy answer long after the moment says nothing of the moment itself.
        Some(h) if h.sent_us > at_us + BRACKET.as_micros() as u64 => Honesty::NotSeen(format!(
            "{what} at {}: the harness's first probe of {url} after it was sent {} later (healthy), too late to say",
            secs(at_us),
            secs(h.sent_us - at_us)
        )),
        Some(h) => Honesty::Bracketed(format!(
            "{what} at {}, with no unhealthy probe of {url} after it: the harness saw it {} and healthy at {}",
            secs(at_us),
            before.map_or("unprobed before".to_string(), |b| format!(
                "{} at {}",
                b.answer,
                secs(b.answered_us)
            )),
            secs(h.answered_us)
        )),
        None => Honesty::NotSeen(format!(
            "{what} at {}: the harness never saw {url} healthy ({} probe(s))",
            secs(at_us),
            probes.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:8082/ping";

    fn probe(sent: f64, answered: f64, answer: &str) -> GateProbe {
        GateProbe {
            sent_us: (sent * 1e6) as u64,
            answered_us: (answered * 1e6) as u64,
            healthy: answer == "200",
            answer: answer.into(),
        }
    }

    #[test]
    fn a_refusal_sent_after_the_moment_is_caught() {
        // The gate ended its start at 20 s; the harness's probe right after was refused.
        let probes = [probe(18.0, 18.4, "refused"), probe(20.2, 20.6, "refused")];
        let h = judge("start ended", 20_000_000, URL, &probes);
        assert!(!h.holds(), "{h:?}");
        assert!(
            h.words().contains("sent at 20.200s still found it refused"),
            "{h:?}"
        );
    }

    #[test]
    fn a_refusal_sent_before_the_moment_but_answered_after_is_not_held_against_it() {
        let probes = [probe(19.8, 20.3, "refused"), probe(20.4, 20.7, "200")];
        let h = judge("start ended", 20_000_000, URL, &probes);
        assert!(matches!(h, Honesty::Bracketed(_)), "{h:?}");
    }

    #[test]
    fn healthy_before_the_moment_is_seen_healthy() {
        let probes = [probe(18.0, 18.4, "refused"), probe(19.0, 19.3, "200")];
        let h = judge("a consumer started", 20_000_000, URL, &probes);
        assert!(matches!(h, Honesty::SeenHealthy(_)), "{h:?}");
        assert!(h.words().contains("healthy at 19.300s"), "{h:?}");
    }

    #[test]
    fn a_healthy_probe_long_after_the_moment_does_not_bracket_it() {
        // Recorded on the dishonest gate's cold boot: its start ended at 19.8 s, before
        // SSH answered; the harness's only probe came 12 s later, healthy.
        let h = judge(
            "start ended",
            19_800_000,
            URL,
            &[probe(32.0, 32.155, "200")],
        );
        assert!(matches!(h, Honesty::NotSeen(_)) && !h.holds(), "{h:?}");
        assert!(h.words().contains("too late to say"), "{h:?}");
    }

    #[test]
    fn never_healthy_is_not_seen() {
        let h = judge(
            "start ended",
            20_000_000,
            URL,
            &[probe(18.0, 18.4, "refused")],
        );
        assert!(matches!(h, Honesty::NotSeen(_)) && !h.holds(), "{h:?}");
        assert!(!judge("start ended", 1, URL, &[]).holds());
    }
}
