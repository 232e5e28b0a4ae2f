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
