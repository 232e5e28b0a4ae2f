//! A phase's expectations, checked in turns.
//!
//! Expectations are checked in the file's order: each one's window opens when the one
//! before it was decided. A run of observations (kinds that neither act on the guest nor
//! await an event of PID 1, `KindSpec::observes`) shares one turn and is checked side by
//! side: none of them changes what the others see, and each costs a round trip or two, so
//! checking them one after another only made the verdict later. Invariants over the
//! phase (`Wait::PhaseEnd`) come last, each in a turn of its own, in the file's order.

use std::time::Instant;

use anyhow::Context;

use crate::scenario::{Expectation, Phase, Wait};

use super::cycles;
use super::expect::{self, Awaited, Live};
use super::lost;

/// The phase's expectations as turns, each a list of indices into `expect`: waits and
/// observations in the file's order, a run of observations as one turn, then the
/// invariants one by one.
pub fn turns(expect: &[Expectation]) -> Vec<Vec<usize>> {
    let is_invariant = |e: &Expectation| matches!(e.kind.spec().wait(), Wait::PhaseEnd(_));
    let mut turns: Vec<Vec<usize>> = Vec::new();
    let mut observing = false;
    for (i, e) in expect.iter().enumerate() {
        if is_invariant(e) {
            continue;
        }
        let observes = e.kind.spec().observes();
        match turns.last_mut() {
            Some(turn) if observes && observing => turn.push(i),
            _ => turns.push(vec![i]),
        }
        observing = observes;
    }
    turns.extend(
        expect
            .iter()
            .enumerate()
            .filter(|(_, e)| is_invariant(e))
            .map(|(i, _)| vec![i]),
    );
    turns
}

/// When `exp`'s window closes, for a turn that began at `turn`.
fn deadline(exp: &Expectation, turn: Instant) -> Instant {
    match exp.kind.spec().wait() {
        Wait::Once => turn,
        Wait::Within(d) => turn + d,
        // Plus two of the watcher's reads: it confirms a cycle on its second.
        Wait::PhaseEnd(d) => Instant::now() + d + 2 * cycles::READ_EVERY,
    }
}

/// Check `phase`'s expectations on `live`, in turns, the first turn opening at `start`.
/// `decided` is told each turn's decisions (index into the phase's expectations, and
/// what was awaited), in the file's order, as soon as the turn ends.
pub async fn check_phase(
    live: &Live<'_>,
    phase: &Phase,
    start: Instant,
    decided: &mut dyn FnMut(usize, &Awaited),
) -> anyhow::Result<()> {
    let mut t = start;
    for turn in turns(&phase.expect) {
        let checks = turn.iter().map(|&i| {
            let exp = &phase.expect[i];
            let during = format!("phase {}, while checking {}", phase.name, exp.id);
            async move {
                let work = expect::await_expectation(live, &exp.kind, deadline(exp, t));
                let awaited = match live.vm {
                    Some(vm) => lost::guarded(vm, &live.journal, &during, work).await,
                    None => work.await,
                }
                .with_context(|| format!("while checking {}", exp.id))?;
                anyhow::Ok((i, awaited))
            }
        });
        let results = futures::future::try_join_all(checks).await?;
        for (i, awaited) in &results {
            decided(*i, awaited);
            // A wait decided ahead of its turn does not move the next one's start back.
            t = t.max(awaited.decided);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectations(path: &str) -> Vec<Expectation> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let scenario = crate::scenario::load_scenario(&path).expect("the scenario loads");
        scenario
            .phases
            .iter()
            .flat_map(|p| p.expect.clone())
            .collect()
    }

    #[test]
    fn the_clean_cold_boot_checks_its_observations_in_one_turn() {
        // Eight unit waits, then order, three probes and no_failed_units side by side,
        // then the boot's end, then the invariants: the wait cycle, the stable window.
        let expect = expectations("scenarios/clean-cold-boot.yaml");
        let mut want: Vec<Vec<usize>> = (0..8).map(|i| vec![i]).collect();
        want.extend([vec![8, 9, 10, 11, 12], vec![13], vec![14], vec![15]]);
        assert_eq!(turns(&expect), want);
    }

    #[test]
    fn every_shipped_scenario_keeps_the_file_order_with_invariants_last() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for dir in ["scenarios", "tests/scenarios"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("the folder") {
                let path = entry.expect("an entry").path();
                if path.extension().is_none_or(|x| x != "yaml") {
                    continue;
                }
                let scenario = crate::scenario::load_scenario(&path).expect("it loads");
                for phase in &scenario.phases {
                    seen += 1;
                    let expect = &phase.expect;
                    let got = turns(expect);
                    let order: Vec<usize> = got.iter().flatten().copied().collect();
                    let invariant =
                        |i: &usize| matches!(expect[*i].kind.spec().wait(), Wait::PhaseEnd(_));
                    let mut want: Vec<usize> =
                        (0..expect.len()).filter(|i| !invariant(i)).collect();
                    want.extend((0..expect.len()).filter(invariant));
                    assert_eq!(order, want, "{}: {}", path.display(), phase.name);
                    for turn in got.iter().filter(|t| t.len() > 1) {
                        assert!(
                            turn.iter().all(|&i| expect[i].kind.spec().observes()),
                            "{}: {turn:?} mixes a wait into a turn",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(seen > 10, "only {seen} phases read");
    }

    #[test]
    fn a_command_between_observations_splits_them() {
        let text = "name: t\nmilestone: [nightly]\nsummary: s\nphases:\n  - name: p\n    expect:\n\
                    \x20     - path: {path: /a}\n\
                    \x20     - command: {run: 'touch /a'}\n\
                    \x20     - id: a-again\n        path: {path: /a}\n\
                    \x20     - path: {path: /b}\n";
        let scenario = crate::scenario::load::parse_scenario(std::path::Path::new("t.yaml"), text)
            .unwrap_or_else(|d| panic!("{d:?}"));
        assert_eq!(
            turns(&scenario.phases[0].expect),
            vec![vec![0], vec![1], vec![2, 3]]
        );
    }
}

#[cfg(test)]
#[path = "turns_played_tests.rs"]
mod played;
