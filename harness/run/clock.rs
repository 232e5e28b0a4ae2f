//! One clock for a run: the guest's monotonic microseconds mapped onto the harness's
//! `Instant`, so "when the guest says it happened" and "when we decided" can be
//! subtracted.

use std::time::{Duration, Instant};

use crate::guest::Guest;

/// A shell that prints the `now at` line of `/proc/timer_list` for each line it reads,
/// with builtins only (no process start per read).
const CLOCK_READER: &str = "while read -r _; do n=; { for i in 1 2 3 4 5 6; do read -r l || break; \
    case $l in 'now at '*) n=$l; break;; esac; done; } < /proc/timer_list; echo \"$n\"; done";
/// Clock reads per sample: the tightest round trip is kept.
const CLOCK_ROUNDS: usize = 8;

/// Maps guest `CLOCK_MONOTONIC` (µs since the guest booted) onto host instants.
///
/// The host instant at which the guest clock read zero is known to lie in an interval:
/// a clock read over SSH bounds it on both sides (the read happened between sending and
/// receiving), and every journal entry bounds it from above (an entry cannot arrive before
/// it was written). Under TCG an SSH round trip can take seconds, while a journal entry
/// arrives within milliseconds, so the entries make the mapping tight.
#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    /// Earliest possible host instant of guest time zero.
    zero_earliest: Instant,
    /// Latest possible host instant of guest time zero.
    zero_latest: Instant,
    /// Half the width of the interval: the mapping's uncertainty.
    pub uncertainty: Duration,
}

impl GuestClock {
    /// Sample the guest clock over SSH and keep the tightest round trip (the journal
    /// narrows it further, see [`GuestClock::bound_by`]).
    ///
    /// `/proc/timer_list` has a `now at N nsecs` line, the monotonic clock in nanoseconds,
    /// readable by root without any tool in the guest. The reads come from one shell that
    /// answers a line per request with builtins only, so a round trip costs the channel's
    /// latency (milliseconds), not a process start (hundreds of milliseconds under TCG).
    /// Should that shell not answer, two reads by separate commands do, more loosely.
    pub async fn sample(guest: &Guest) -> anyhow::Result<GuestClock> {
        let parsed = |rounds: Vec<(Instant, String, Instant)>| -> Vec<(Instant, u64, Instant)> {
            rounds
                .into_iter()
                .filter_map(|(sent, text, got)| Some((sent, parse_timer_list_now(&text)?, got)))
                .collect()
        };
        let mut reads = match guest.exchange_lines(CLOCK_READER, CLOCK_ROUNDS).await {
            Ok(rounds) => parsed(rounds),
            Err(e) => {
                tracing::debug!("the clock reader did not answer: {e:#}");
                Vec::new()
            }
        };
        if reads.is_empty() {
            // Read by separate commands instead, more loosely.
            let mut rounds = Vec::new();
            let mut last = String::new();
            for _ in 0..2 {
                let sent = Instant::now();
                let out = guest.exec_checked("head -c 200 /proc/timer_list").await?;
                last.clone_from(&out.stdout);
                rounds.push((sent, out.stdout, Instant::now()));
            }
            reads = parsed(rounds);
            if reads.is_empty() {
                anyhow::bail!("cannot read the guest clock from /proc/timer_list: {last:?}");
            }
        }
        let mut best: Option<(Duration, Instant, u64)> = None;
        for (sent, ns, received) in reads {
            let rtt = received - sent;
            if best.is_none_or(|(b, _, _)| rtt < b) {
                best = Some((rtt, sent + rtt / 2, ns / 1000));
            }
        }
        let (rtt, mid, us) = best.ok_or_else(|| anyhow::anyhow!("no clock read answered"))?;
        Ok(GuestClock::from_sample(mid, us, rtt / 2))
    }

    /// A clock from one sample: at host instant `at` (within `uncertainty`), the guest
    /// read `guest_us`.
    pub fn from_sample(at: Instant, guest_us: u64, uncertainty: Duration) -> GuestClock {
        let since_zero = Duration::from_micros(guest_us);
        let zero = at.checked_sub(since_zero).unwrap_or(at);
        GuestClock {
            zero_earliest: zero.checked_sub(uncertainty).unwrap_or(zero),
            zero_latest: zero + uncertainty,
            uncertainty,
        }
    }

    /// Narrow the mapping with an entry the guest wrote at `guest_us` and the host
    /// received at `received`.
    pub fn bound_by(&mut self, guest_us: u64, received: Instant) {
        let Some(latest) = received.checked_sub(Duration::from_micros(guest_us)) else {
            return;
        };
        if latest < self.zero_latest {
            // Never below the lower bound: a bound that crosses it means clock noise.
            self.zero_latest = latest.max(self.zero_earliest);
            self.uncertainty = (self.zero_latest - self.zero_earliest) / 2;
        }
    }

    /// The host instant of a guest monotonic timestamp (the middle of the interval).
    pub fn to_host(&self, guest_us: u64) -> Instant {
        self.zero_earliest
            + (self.zero_latest - self.zero_earliest) / 2
            + Duration::from_micros(guest_us)
    }

    /// The guest monotonic time (µs) at host instant `at`: the inverse of [`Self::to_host`].
    pub fn to_guest_us(&self, at: Instant) -> u64 {
        let zero = self.zero_earliest + (self.zero_latest - self.zero_earliest) / 2;
        at.saturating_duration_since(zero).as_micros() as u64
    }
}

/// The nanoseconds in the `now at N nsecs` line of `/proc/timer_list`.
pub fn parse_timer_list_now(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("now at "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_now_from_timer_list() {
        let text = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 41234567890 nsecs\n\ncpu: 0\n";
        assert_eq!(parse_timer_list_now(text), Some(41_234_567_890));
        // What the clock reader answers: the line alone.
        assert_eq!(parse_timer_list_now("now at 17 nsecs"), Some(17));
        assert_eq!(parse_timer_list_now("garbage"), None);
    }

    #[test]
    fn maps_guest_time_onto_host_instants() {
        let at = Instant::now() + Duration::from_secs(60);
        let clock = GuestClock::from_sample(at, 10_000_000, Duration::from_millis(2));
        assert_eq!(clock.to_host(10_000_000), at);
        assert_eq!(clock.to_host(12_500_000), at + Duration::from_millis(2500));
    }

    #[test]
    fn journal_entries_narrow_a_slow_sample() {
        let at = Instant::now() + Duration::from_secs(60);
        // A 4 s round trip: the guest read 10 s somewhere within ±2 s of `at`.
        let mut clock = GuestClock::from_sample(at, 10_000_000, Duration::from_secs(2));
        // An entry written at guest 11 s arrived at `at` + 0.5 s: zero is at most at-10.5s.
        clock.bound_by(11_000_000, at + Duration::from_millis(500));
        assert_eq!(clock.uncertainty, Duration::from_millis(750));
        // The mapping moved to the middle of [at-12s, at-10.5s].
        assert_eq!(clock.to_host(10_000_000), at - Duration::from_millis(1250));
        // A looser bound changes nothing.
        clock.bound_by(11_000_000, at + Duration::from_secs(5));
        assert_eq!(clock.uncertainty, Duration::from_millis(750));
    }
}
