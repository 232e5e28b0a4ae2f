//! The recorder's stream as a real guest sent it: `tests/fixtures/guest/recorder-old-gate.bin`
//! holds every byte the model guest's relay sent on a cold boot with the old gate
//! (`recipe:vm-images/ccci-model?gate=dashboard&timeout=120`, recorded with
//! `COLDBOOT_RECORDER_RAW=DIR coldboot boot ...` on systemd 252). Fed through the framer,
//! the protocol and the queue as the live recorder does, it must give the deadlock's
//! queue: the dashboard's start job waiting for deploy-proxy's running one.

use coldboot::guest::recorder::Queue;
use coldboot::guest::recorder::protocol::{Event, Protocol};
use coldboot::guest::recorder::stream::{Frame, Framer};

fn replay(bytes: &[u8], chunk: usize) -> (Queue, Vec<Event>, Framer) {
    let mut framer = Framer::default();
    let mut proto = Protocol::default();
    let mut queue = Queue::default();
    let mut all = Vec::new();
    let mut frames = Vec::new();
    for piece in bytes.chunks(chunk) {
        frames.clear();
        framer
            .push(piece, &mut frames)
            .expect("the recorded stream frames");
        for f in &frames {
            match f {
                Frame::Hello { .. } => {
                    proto.opening();
                }
                Frame::Message(m) => {
                    let mut events = Vec::new();
                    proto.on_message(m, &mut events);
                    for e in &events {
                        queue.apply(e);
                    }
                    all.extend(events);
                }
                _ => {}
            }
        }
    }
    (queue, all, framer)
}

#[test]
fn the_recorded_old_gate_boot_gives_the_deadlocked_queue() {
    let bytes = std::fs::read("tests/fixtures/guest/recorder-old-gate.bin").unwrap();
    let (queue, events, framer) = replay(&bytes, 4096);
    assert_eq!(framer.malformed, 0);
    assert_eq!(queue.version, Some(252));
    assert!(queue.userspace_us.is_some_and(|u| u > 1_000_000));
    let jobs = queue.jobs();
    let proxy = jobs
        .iter()
        .find(|j| j.unit == "deploy-proxy.service")
        .expect("deploy-proxy's start job is still queued");
    assert_eq!(
        (proxy.job_type.as_str(), proxy.state.as_str()),
        ("start", "running")
    );
    assert!(
        proxy.waiting_for.is_empty(),
        "a running job waits for nothing"
    );
    let dashboard = jobs
        .iter()
        .find(|j| j.unit == "deploy-dashboard.service")
        .expect("the dashboard's start job is queued");
    assert_eq!(dashboard.state, "waiting");
    assert!(
        dashboard.waiting_for.iter().any(|r| r.id == proxy.id),
        "{dashboard:?}"
    );
    assert!(
        proxy
            .blocking
            .iter()
            .any(|r| r.unit == "deploy-dashboard.service")
    );
    // PID 1's own timestamps for the proxy's start, and its timeout, came with it.
    let state = queue.unit_state("deploy-proxy.service").unwrap();
    assert_eq!(state.active_state, "activating");
    assert!(state.inactive_exit_us.is_some());
    assert_eq!(state.timeout_start_us, Some(120_000_000));
    // Jobs that finished on the way carry their result.
    assert!(events.iter().any(|e| matches!(e,
        Event::JobRemoved { unit, result, .. } if unit == "ssh.service" && result == "done")));
}

#[test]
fn any_chunking_of_the_stream_gives_the_same_events() {
    let bytes = std::fs::read("tests/fixtures/guest/recorder-old-gate.bin").unwrap();
    let (_, whole, _) = replay(&bytes, bytes.len());
    for chunk in [1usize, 7, 512] {
        let (_, events, _) = replay(&bytes, chunk);
        assert_eq!(events, whole, "chunks of {chunk}");
    }
}

#[test]
fn a_stream_cut_anywhere_or_corrupted_never_panics() {
    let bytes = std::fs::read("tests/fixtures/guest/recorder-old-gate.bin").unwrap();
    for cut in (0..bytes.len()).step_by(997) {
        let mut framer = Framer::default();
        let mut frames = Vec::new();
        let _ = framer.push(&bytes[..cut], &mut frames);
    }
    let mut bad = bytes.clone();
    for i in (200..bad.len()).step_by(1009) {
        bad[i] ^= 0x5a;
    }
    let mut framer = Framer::default();
    let mut frames = Vec::new();
    let _ = framer.push(&bad, &mut frames);
}

/// The same boot at a 45 s start timeout (`?gate=dashboard&timeout=45`): the proxy's
/// start job ends `failed` (the job's result: `timeout` is for `JobTimeoutSec`), the
/// unit's own `Result` is `timeout`, and the dashboard's start then runs and is `done`.
#[test]
fn a_start_job_that_timed_out_ends_with_its_result() {
    let bytes = std::fs::read("tests/fixtures/guest/recorder-old-gate-timeout45.bin").unwrap();
    let (queue, events, framer) = replay(&bytes, 65536);
    assert_eq!(framer.malformed, 0);
    assert!(events.iter().any(|e| matches!(e,
        Event::JobRemoved { unit, result, .. } if unit == "deploy-proxy.service" && result == "failed")));
    assert!(events.iter().any(|e| matches!(e,
        Event::JobRemoved { unit, result, .. } if unit == "deploy-dashboard.service" && result == "done")));
    assert_eq!(
        queue
            .unit_state("deploy-proxy.service")
            .unwrap()
            .active_state,
        "failed"
    );
}

/// The netwatch lines of that boot, as the guest wrote them (recorded with
/// `COLDBOOT_RECORDER_RAW`): every line parses, and they show the gate's curl in
/// deploy-proxy.service and traefik's refused connections to the dashboard's port.
#[test]
fn the_recorded_netwatch_lines_parse_with_their_units() {
    use coldboot::guest::recorder::net::{Attempt, Line, Lines, parse};
    let bytes = std::fs::read("tests/fixtures/guest/netwatch-old-gate-timeout45.txt").unwrap();
    let mut lines = Lines::default();
    let parsed: Vec<Line> = lines
        .push(&bytes)
        .into_iter()
        .map(|l| parse(&l.expect("a whole line")).expect("a netwatch line"))
        .collect();
    assert!(matches!(parsed[0], Line::Hello(_)));
    let conns: Vec<_> = parsed
        .iter()
        .filter_map(|l| match l {
            Line::Connection(c) => Some(c),
            Line::Hello(_) | Line::Untraced(_) | Line::GateAnswer(_) => None,
        })
        .collect();
    assert!(
        conns
            .iter()
            .any(|c| c.unit.as_deref() == Some("deploy-proxy.service")
                && c.comm == "curl"
                && c.dport == 443)
    );
    let refused_8080 = conns
        .iter()
        .filter(|c| {
            c.kind == Attempt::Reset
                && c.dport == 8080
                && c.unit.as_deref() == Some("traefik.service")
        })
        .count();
    assert!(refused_8080 >= 5, "{refused_8080}");
    assert!(
        conns.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "in time order"
    );
}

/// The recorder's gate probes from a real cold boot of the model's dishonest gate
/// (`decide=before-healthy`, consumers-order, recorded with `COLDBOOT_RECORDER_RAW`):
/// that boot's journal has deploy-proxy.service `Finished` at 11.333884 s, before its
/// proxy served. Judged on these probes alone (SSH was not up until 15 s), the start's
/// end fails on the probe sent at 11.47 s, refused; a moment before the first probe is
/// not taken as healthy. The recorder's own connections are not in the stream.
#[test]
fn the_recorders_gate_probes_catch_a_start_that_ends_before_its_gate_serves() {
    use coldboot::check::honesty::{GateProbe, Honesty, judge};
    use coldboot::guest::recorder::net::{Line, Lines, parse};
    let bytes = std::fs::read("tests/fixtures/guest/netwatch-dishonest-gate.txt").unwrap();
    let parsed: Vec<Line> = Lines::default()
        .push(&bytes)
        .into_iter()
        .map(|l| parse(&l.expect("a whole line")).expect("a netwatch line"))
        .collect();
    let probes: Vec<GateProbe> = parsed
        .iter()
        .filter_map(|l| match l {
            Line::GateAnswer(a) => Some(GateProbe {
                sent_us: a.sent_us,
                answered_us: a.answered_us,
                healthy: a.healthy(),
                answer: a.word.clone(),
            }),
            _ => None,
        })
        .collect();
    assert_eq!(
        probes.len(),
        8,
        "a probe a second from 7.46 s until the watch took over"
    );
    assert!(parsed.iter().all(|l| match l {
        Line::Connection(c) => c.comm != "recorder",
        _ => true,
    }));
    let url = "http://127.0.0.1:8082/ping";
    let end = judge(
        "deploy-proxy.service's start ended",
        11_333_884,
        url,
        &probes,
    );
    assert!(
        matches!(end, Honesty::Unhealthy(_))
            && end
                .words()
                .contains("sent at 11.470s still found it refused"),
        "{end:?}"
    );
    let early = judge("a moment before the probes", 7_000_000, url, &probes);
    assert!(!early.holds(), "{early:?}");
}
