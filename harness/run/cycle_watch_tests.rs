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
    gates: &'a [GateSeen],
    clock: &'a GuestClock,
    known_from: Instant,
    journal: &'a Journal,
    state: &'a Mutex<WatchState>,
) -> Folding<'a> {
    Folding {
        gates,
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

#[test]
fn a_wait_cycle_forms_is_confirmed_after_persist_and_breaks_at_the_timeout() {
    let (events, known_s) = recorded();
    let zero = Instant::now();
    let at = |s: f64| zero + Duration::from_secs_f64(s);
    let clock = GuestClock::from_sample(zero, 0, Duration::ZERO);
    let mut gates = unprobed(&[Gate {
        unit: "deploy-proxy.service".into(),
        url: "https://ci.commoninternet.net/".into(),
        served_by: "deploy-dashboard.service".into(),
    }]);
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
            let folding = folding(&gates, &clock, at(known_s), &journal, &state);
            folding.read_now(&queue, &mut tracker, at(read_at), Vec::new());
            let standing = standing(&state);
            standing_at.push((read_at, standing));
        }
        let group: Vec<(Instant, Event)> = events[i..]
            .iter()
            .take_while(|(s, _)| *s == t)
            .map(|(s, e)| (at(*s), e.clone()))
            .collect();
        i += group.len();
        if queue.start_running("deploy-proxy.service") {
            gates[0].record("timed out".into(), false);
        }
        let folding = folding(&gates, &clock, at(known_s), &journal, &state);
        folding.fold(&group, &mut queue, &mut tracker);
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
