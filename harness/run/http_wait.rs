//! An `http:` expectation: the harness's own probe, from the guest or the host, tried
//! until it answers as described or its deadline passes; each attempt is recorded with
//! the pair's probes.

use std::time::{Duration, Instant};

use crate::check::{Evaluation, ProbeRecord};
use crate::scenario::{HttpExpectation, ProbeFrom};

use super::live::{Awaited, Live};
use super::probe::{self, excerpt};

/// Time between two attempts of a probe that has not answered as expected yet.
const PROBE_RETRY: Duration = Duration::from_secs(1);
/// How long one attempt of an expectation's probe may take.
const PROBE_TIME: Duration = Duration::from_secs(5);

/// Probe `h` until it answers as described, or until `deadline` (a deadline of now
/// makes one attempt).
pub(super) async fn await_http(
    live: &Live<'_>,
    h: &HttpExpectation,
    deadline: Instant,
) -> anyhow::Result<Awaited> {
    loop {
        (live.status)(&format!("probing {} from the {}", h.url, h.from.as_str()));
        let attempt = match h.from {
            ProbeFrom::Guest => {
                let tls = probe::Tls::from_ca(h.ca.as_deref());
                match probe::from_guest(live.guest, &h.url, tls, PROBE_TIME).await? {
                    probe::Answer::Http { status, body } => Ok((status, body)),
                    none => Err(none.failure().unwrap_or_default()),
                }
            }
            ProbeFrom::Host => match live.vm {
                Some(vm) => {
                    probe::from_host(vm, live.guest, &h.url, h.ca.as_deref(), PROBE_TIME).await
                }
                None => {
                    return Err(crate::error::infra(
                        "a probe from the host needs a VM's forwards; this guest is played back",
                    ));
                }
            },
        };
        let record = ProbeRecord {
            at_unix: crate::unix::now(),
            from: h.from.as_str().to_string(),
            gate_of: None,
            url: h.url.clone(),
            status: attempt.as_ref().ok().map(|(s, _)| *s),
            excerpt: match &attempt {
                Ok((_, body)) => excerpt(body),
                Err(e) => e.clone(),
            },
            guest_us: None,
        };
        live.probes.lock().expect("probes lock").push(record);
        let eval = match &attempt {
            Ok((status, body)) => {
                let body_ok = h.body.as_ref().is_none_or(|m| m.matches(body));
                let seen = format!("status {status}, body {:?}", excerpt(body));
                if *status == h.status && body_ok {
                    Evaluation::held(seen)
                } else {
                    Evaluation::failed(seen)
                }
            }
            Err(e) => Evaluation::failed(format!("no answer: {e}")),
        };
        if eval.held || Instant::now() + PROBE_RETRY > deadline {
            let mut done = Awaited::now(eval);
            if done.eval.held {
                done.changed = Some(done.decided);
            }
            return Ok(done);
        }
        let mut from = live.journal.len();
        let retry = (Instant::now() + PROBE_RETRY).min(deadline);
        live.journal.wait_for(&mut from, retry, |_| false).await;
    }
}
