//! One clock for a run: the guest's monotonic microseconds mapped onto the harness's
//! `Instant`, so "when the guest says it happened" and "when we decided" can be
//! subtracted.

use std::time::{Duration, Instant};

use crate::guest::Guest;

/// Maps guest `CLOCK_MONOTONIC` (µs since the guest booted) onto host instants.
#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    /// The host instant at which the guest's monotonic clock read zero.
    guest_zero: Instant,
    /// Half the best round trip of the sampling: the mapping's uncertainty.
    pub uncertainty: Duration,
}

impl GuestClock {
    /// Sample the guest clock a few times over SSH and keep the tightest round trip.
    ///
    /// `/proc/timer_list` starts with `now at N nsecs`, the monotonic clock in
    /// nanoseconds, readable by root without any tool in the guest.
    pub async fn sample(guest: &Guest) -> anyhow::Result<GuestClock> {
        let mut best: Option<(Duration, Instant, u64)> = None;
        for _ in 0..3 {
            let sent = Instant::now();
            let out = guest.exec_checked("head -c 200 /proc/timer_list").await?;
            let rtt = sent.elapsed();
            let Some(ns) = parse_timer_list_now(&out.stdout) else {
                anyhow::bail!(
                    "cannot read the guest clock from /proc/timer_list: {:?}",
                    out.stdout
                );
            };
            let mid = sent + rtt / 2;
            if best.is_none_or(|(b, _, _)| rtt < b) {
                best = Some((rtt, mid, ns / 1000));
            }
        }
        let (rtt, mid, us) = best.expect("sampled three times");
        Ok(GuestClock::from_sample(mid, us, rtt / 2))
    }

    /// A clock from one sample: at host instant `at`, the guest read `guest_us`.
    pub fn from_sample(at: Instant, guest_us: u64, uncertainty: Duration) -> GuestClock {
        let since_zero = Duration::from_micros(guest_us);
        GuestClock {
            guest_zero: at.checked_sub(since_zero).unwrap_or(at),
            uncertainty,
        }
    }

    /// The host instant of a guest monotonic timestamp.
    pub fn to_host(&self, guest_us: u64) -> Instant {
        self.guest_zero + Duration::from_micros(guest_us)
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
        assert_eq!(parse_timer_list_now("garbage"), None);
    }

    #[test]
    fn maps_guest_time_onto_host_instants() {
        let at = Instant::now();
        let clock = GuestClock::from_sample(at, 10_000_000, Duration::from_millis(2));
        assert_eq!(clock.to_host(10_000_000), at);
        assert_eq!(clock.to_host(12_500_000), at + Duration::from_millis(2500));
    }
}
