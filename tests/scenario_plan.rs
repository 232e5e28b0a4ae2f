//! Plan expansion, `--shard I/N` and `--target NAME=TARGET`.

use std::collections::BTreeMap;
use std::path::Path;

use coldboot::scenario::{
    Expected, Shard, TargetFlag, adhoc_pairs, load_plan, load_scenario, parse_shard,
    parse_target_flag, shard,
};

#[test]
fn shards_cover_every_pair_exactly_once_and_are_stable() {
    let pairs = load_plan(Path::new("scenarios/plans/nightly.yaml"))
        .unwrap()
        .pairs();
    assert!(pairs.len() >= 6);
    for count in 1..=pairs.len() + 2 {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut sizes = Vec::new();
        for index in 1..=count {
            let part = shard(&pairs, Shard { index, count });
            sizes.push(part.len());
            for p in part {
                *seen.entry(p.id).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), pairs.len(), "N={count}");
        assert!(seen.values().all(|&n| n == 1), "N={count}: {seen:?}");
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "N={count}: unbalanced {sizes:?}");
    }
    // The same plan loaded again gives the same shard (no hashing seeds, no clocks).
    let again = load_plan(Path::new("scenarios/plans/nightly.yaml"))
        .unwrap()
        .pairs();
    let ids = |v: Vec<coldboot::scenario::RunPair>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(shard(&pairs, Shard { index: 2, count: 3 })),
        ids(shard(&again, Shard { index: 2, count: 3 }))
    );
}

#[test]
fn shard_flag_values() {
    assert_eq!(parse_shard("2/4").unwrap(), Shard { index: 2, count: 4 });
    assert_eq!(parse_shard("1/1").unwrap(), Shard { index: 1, count: 1 });
    for bad in ["0/4", "5/4", "2", "a/4", "2/0", "-1/4", ""] {
        let err = parse_shard(bad).unwrap_err();
        assert_eq!(
            coldboot::error::exit_code(&err),
            coldboot::error::exit::USAGE
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("--shard {bad:?}")) && text.contains("I/N"),
            "{text}"
        );
    }
}

#[test]
fn target_flag_values() {
    let t = parse_target_flag("after=recipe:vm-images/ccci-model?gate=self&window=10").unwrap();
    assert_eq!(t.name, "after");
    assert_eq!(t.target, "recipe:vm-images/ccci-model?gate=self&window=10");
    for bad in [
        "after",
        "=recipe:x",
        "after=qcow:x",
        "a/b=recipe:x",
        "after=recipe:",
    ] {
        let err = parse_target_flag(bad).unwrap_err();
        assert_eq!(
            coldboot::error::exit_code(&err),
            coldboot::error::exit::USAGE
        );
        assert!(
            err.to_string().starts_with(&format!("--target {bad:?}")),
            "{err}"
        );
    }
}

#[test]
fn target_overrides_replace_plan_targets_or_name_the_known_ones() {
    let mut plan = load_plan(Path::new("scenarios/plans/m1.yaml")).unwrap();
    let flag = parse_target_flag("after=image:/tmp/fixed.qcow2").unwrap();
    plan.override_targets(&[flag]).unwrap();
    assert!(
        plan.pairs()
            .iter()
            .filter(|p| p.target_name == "after")
            .all(|p| p.target == "image:/tmp/fixed.qcow2")
    );
    let unknown = TargetFlag {
        name: "later".into(),
        target: "image:/x".into(),
    };
    let err = plan.override_targets(&[unknown]).unwrap_err().to_string();
    assert!(
        err.contains("has no target \"later\"") && err.contains("after, before"),
        "{err}"
    );
}

#[test]
fn runs_without_a_plan_expect_pass() {
    let s = load_scenario(Path::new("scenarios/clean-cold-boot.yaml")).unwrap();
    let t = vec![
        parse_target_flag("a=recipe:vm-images/ccci-model").unwrap(),
        parse_target_flag("b=recipe:vm-images/ccci-model?gate=dashboard").unwrap(),
    ];
    let pairs = adhoc_pairs(&t, &[s]);
    let ids: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["a/clean-cold-boot", "b/clean-cold-boot"]);
    assert!(pairs.iter().all(|p| p.expected == Expected::Pass));
}

#[test]
fn repeat_gives_each_pair_its_own_numbered_runs_and_shards_deal_them_out() {
    use coldboot::scenario::plan::{base_id, repeat};
    let pairs = load_plan(Path::new("scenarios/plans/m2.yaml"))
        .unwrap()
        .pairs();
    assert_eq!(repeat(pairs.clone(), 1).len(), pairs.len());
    let reps = repeat(pairs.clone(), 3);
    assert_eq!(reps.len(), 3 * pairs.len());
    for (k, r) in reps.iter().take(3).enumerate() {
        let k = k as u32 + 1;
        assert_eq!(r.id, format!("{}/rep-{k}", pairs[0].id));
        assert_eq!(r.repetition, Some(k));
        assert_eq!(r.base_id(), pairs[0].id);
        assert_eq!(r.target, pairs[0].target);
    }
    // A pair id that merely ends like a repetition is not cut when it is not one.
    assert_eq!(base_id("a/b/rep-2", None), "a/b/rep-2");
    assert_eq!(base_id("a/b/rep-2", Some(3)), "a/b/rep-2");
    // Two shards split the three repetitions of the first pair 2 + 1.
    let first = shard(&reps, Shard { index: 1, count: 2 });
    let second = shard(&reps, Shard { index: 2, count: 2 });
    assert_eq!(first.len() + second.len(), reps.len());
    assert_eq!(first[0].id, format!("{}/rep-1", pairs[0].id));
    assert_eq!(second[0].id, format!("{}/rep-2", pairs[0].id));
}
