//! The watcher's fold of the recorder's stream, replayed from a real boot:
//! `tests/fixtures/run/old-gate-timeout45.recorder.jsonl`, the `recorder-boot-1.jsonl`
//! evidence of the model with the old gate and a 45 s start timeout
//! (`?gate=dashboard&timeout=45`): every event PID 1 sent, stamped with when it arrived
//! on the guest's clock. The gate is taken to answer as it did in that run (`timed out`)
//! at every arrival while its start job runs; that run's two probes both failed.
use super::*;
use crate::guest::recorder::Event;

const PERSIST: Duration = Duration::from_secs(10);

fn recorded() -> (Vec<(f64, Event)>, f64) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/run/old-gate-timeout45.recorder.jsonl");
    let text = std::fs::read_to_string(path).expect("the recorded stream");
    let mut events = Vec::new();
    let mut known = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if let Some(s) = v.get("summary") {
            known = s["queue_known_guest_s"].as_f64();
            continue;
        }
        let at = v["received_guest_s"].as_f64().expect("an arrival time");
        events.push((at, serde_json::from_value(v).expect("an event")));
    }
    (events, known.expect("the summary line"))
}

/// The watcher's fold over the test's state, as `follow_recorder` builds it.
fn folding<'a>(
    clock: &'a GuestClock,
    known_from: Instant,
    journal: &'a Journal,
    state: &'a Mutex<WatchState>,
) -> Folding<'a> {
    Folding {
        clock,
        known_from,
        judge: Judge {
            journal,
            persist: PERSIST,
            status: &|_: &str| {},
        },
        state,
    }
}

/// Whether the confirmed cycle still stands: the latest read showed it (as
/// `Cycles::standing` says).
fn standing(state: &Mutex<WatchState>) -> bool {
    let s = state.lock().expect("lock");
    s.confirmed.is_some() && s.cycle_last_seen == s.reads.last().copied()
}

/// The old gate's answer in that run, as the recorder's probe brings it at `arrived`.
fn timed_out(gate: &Gate, arrived: Instant) -> RecorderAnswer {
    RecorderAnswer {
        arrived,
        gate: gate.clone(),
        word: "timed out".into(),
        healthy: false,
    }
}

fn old_gate() -> Vec<GateSeen> {
    unprobed(&[Gate {
        unit: "deploy-proxy.service".into(),
        url: "https://ci.commoninternet.net/".into(),
        served_by: "deploy-dashboard.service".into(),
    }])
}

/// The watcher starting late (SSH after the cycle formed): the whole stream and the
/// recorder's probe answers, one a second while deploy-proxy's start ran, folded in
/// one go as its first turn does. The cycle is confirmed on that replay, at the first
/// answer after it had lasted `persist`; with no answers (the gate never probed) it is
/// not, as no read shows the gate's edge.
#[test]
fn a_cycle_that_formed_before_the_watcher_is_confirmed_on_the_replay_of_the_recorders_probes() {
    let (events, known_s) = recorded();
    let zero = Instant::now();
    let at = |s: f64| zero + Duration::from_secs_f64(s);
    let clock = GuestClock::from_sample(zero, 0, Duration::ZERO);
    let fresh: Vec<(Instant, Event)> = events.iter().map(|(s, e)| (at(*s), e.clone())).collect();
    // When deploy-proxy's start ran, from the stream itself.
    let mut q = Queue::default();
    let mut running = Vec::new();
    for (s, e) in &events {
        q.apply(e);
        if q.start_running("deploy-proxy.service") {
            running.push(*s);
        }
    }
    let (from, to) = (running[0], *running.last().expect("it ran"));
    let gate = old_gate()[0].gate.clone();
    let answers: Vec<RecorderAnswer> = (1..)
        .map(|k| from + f64::from(k))
        .take_while(|s| *s < to)
        .map(|s| timed_out(&gate, at(s)))
        .collect();
    let journal = Journal::fixed(Vec::new());
    for with_answers in [true, false] {
        let state = Arc::new(Mutex::new(WatchState::default()));
        let (mut queue, mut tracker) = (Queue::default(), CycleTracker::new(PERSIST));
        let mut gates = old_gate();
        let given: &[RecorderAnswer] = if with_answers { &answers } else { &[] };
        folding(&clock, at(known_s), &journal, &state).fold(
            (&fresh, given),
            &mut queue,
            &mut gates,
            &mut tracker,
        );
        let s = state.lock().expect("lock");
        if !with_answers {
            assert!(s.confirmed.is_none(), "confirmed without a probe");
            continue;
        }
        let c = s
            .confirmed
            .clone()
            .expect("the cycle was confirmed on the replay");
        // Formed at the first answer that showed the gate down, confirmed by the first
        // answer once `persist` had passed: the answers, not only the queue's events,
        // are reads.
        assert_eq!(c.formed, at(from + 1.0), "{c:?}");
        assert!(c.confirmed >= c.formed + PERSIST, "{c:?}");
        assert!(
            c.confirmed <= c.formed + PERSIST + Duration::from_secs(1),
            "{c:?}"
        );
        assert_eq!(gates[0].last, "timed out");
    }
}

#[test]
fn a_wait_cycle_forms_is_confirmed_after_persist_and_breaks_at_the_timeout() {
    let (events, known_s) = recorded();
    let zero = Instant::now();
    let at = |s: f64| zero + Duration::from_secs_f64(s);
    let clock = GuestClock::from_sample(zero, 0, Duration::ZERO);
    let mut gates = old_gate();
    let state = Arc::new(Mutex::new(WatchState::default()));
    let journal = Journal::fixed(Vec::new());
    let (mut queue, mut tracker) = (Queue::default(), CycleTracker::new(PERSIST));
    let mut standing_at = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        // The watcher reads at least every READ_EVERY while nothing arrives.
        let every = READ_EVERY.as_secs_f64();
        while let Some(&(last, _)) = standing_at.last()
            && last + every < t
        {
            let read_at = last + every;
            let folding = folding(&clock, at(known_s), &journal, &state);
            folding.read_now((&queue, &gates), &mut tracker, at(read_at), Vec::new());
            let standing = standing(&state);
            standing_at.push((read_at, standing));
        }
        let group: Vec<(Instant, Event)> = events[i..]
            .iter()
            .take_while(|(s, _)| *s == t)
            .map(|(s, e)| (at(*s), e.clone()))
            .collect();
        i += group.len();
        let answers: Vec<RecorderAnswer> = queue
            .start_running("deploy-proxy.service")
            .then(|| timed_out(&gates[0].gate, at(t)))
            .into_iter()
            .collect();
        let folding = folding(&clock, at(known_s), &journal, &state);
        folding.fold((&group, &answers), &mut queue, &mut gates, &mut tracker);
        let standing = standing(&state);
        standing_at.push((t, standing));
    }
    let s = state.lock().expect("lock");
    let c = s.confirmed.clone().expect("the cycle was confirmed");
    let units: Vec<&str> = c.units.iter().map(String::as_str).collect();
    assert_eq!(units, ["deploy-dashboard.service", "deploy-proxy.service"]);
    // Confirmed once it had lasted `persist`, on the guest's clock, not before, and
    // by the watcher's next read after that.
    assert!(c.confirmed >= c.formed + PERSIST, "{c:?}");
    assert!(c.confirmed <= c.formed + PERSIST + 2 * READ_EVERY, "{c:?}");
    // It stood until deploy-proxy's start timed out (its job removed `failed` at
    // 74.048 s), and not after: the dashboard's start then ran.
    let removed = 74.048;
    let last_standing = standing_at.iter().filter(|(_, s)| *s).map(|(t, _)| *t);
    let last_standing = last_standing.fold(0.0, f64::max);
    assert!(last_standing < removed, "stood until {last_standing}");
    assert!(
        last_standing > removed - 2.0 * READ_EVERY.as_secs_f64(),
        "{last_standing}"
    );
    assert!(!standing_at.last().expect("reads").1);
    assert!(s.cycle_last_seen.is_some_and(|l| l < at(removed)));
}
