//! The nightly job's merge and compare steps, run as the example workflow runs them
//! (`examples/nightly/merge-and-compare.sh`), on bundles recorded from real runs:
//!
//! - `tests/fixtures/nightly/shard-1`, `shard-2`: `coldboot run --plan
//!   scenarios/plans/clean-boot.yaml --repeat 2 --shard I/2` (one repetition each);
//! - `regressed`: the same plan with its `after` target on the old gate
//!   (`gate=dashboard&timeout=120`), the regression a nightly job exists to catch.
//!
//! Then the two CI files that run the job: the Drone pipeline (`.drone.yml`) is checked
//! as Drone reads it and against the GitHub workflow (`nightly.yml`), so that the two
//! stay one job.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde::Deserialize;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nightly")
        .join(name)
}

/// Copy a fixture bundle to `dir/name` (the merge writes nothing into its inputs, but a
/// compare writes compare.md into NEW).
fn copy(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    common::copy_dir(&fixture(name), &to);
    to
}

fn script(shards: &Path, previous: &Path, out: &Path) -> Output {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nightly/merge-and-compare.sh"),
    )
    .arg(env!("CARGO_BIN_EXE_coldboot"))
    .args([shards, previous, out])
    .output()
    .expect("the script runs");
    eprintln!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn schema_errors(report: &serde_json::Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the schema compiles");
    validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn first_night_merges_the_shards_into_one_report_with_repetitions() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-1", &shards);
    copy("shard-2", &shards);
    let merged = tmp.path().join("merged");
    let out = script(&shards, &tmp.path().join("previous"), &merged);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("first night"));

    let report = json(&merged.join("report.json"));
    assert_eq!(schema_errors(&report), Vec::<String>::new());
    let ids: Vec<&str> = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["after/clean-cold-boot/rep-1", "after/clean-cold-boot/rep-2"]
    );
    let reps = &report["repetitions"][0];
    assert_eq!(reps["id"], "after/clean-cold-boot");
    assert_eq!(reps["flaky"], false);
    assert_eq!(reps["runs"].as_array().unwrap().len(), 2);
    let proxy = &reps["units"]["cold-boot deploy-proxy.service"];
    assert_eq!(proxy["n"], 2, "{reps:#}");
    let (p50, p95) = (
        proxy["p50"].as_f64().unwrap(),
        proxy["p95"].as_f64().unwrap(),
    );
    assert!(p50 > 5.0 && p50 <= p95 && p95 < 300.0, "{proxy}");
    assert!(report.get("not_run").is_none());

    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("## Repetitions"), "{md}");
    assert!(md.contains("`after/clean-cold-boot` × 2"));
    assert!(md.contains("| `cold-boot deploy-proxy.service` | 2 |"));
    let run = json(&merged.join("run.json"));
    assert_eq!(run["plan"]["name"], "clean-boot");
    assert!(run["plan"].get("shard").is_none(), "{run}");
}

#[test]
fn a_missing_shard_is_reported_and_fails_the_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-2", &shards);
    let merged = tmp.path().join("merged");
    let out = script(&shards, &tmp.path().join("previous"), &merged);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after/clean-cold-boot/rep-1"));
    let report = json(&merged.join("report.json"));
    assert_eq!(
        report["not_run"],
        serde_json::json!(["after/clean-cold-boot/rep-1"])
    );
    let md = std::fs::read_to_string(merged.join("report.md")).unwrap();
    assert!(md.contains("## Not run") && md.contains("- `after/clean-cold-boot/rep-1`"));
}

#[test]
fn shards_that_do_not_belong_together_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let one = copy("shard-1", tmp.path());
    // The same shard twice.
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        one.to_str().unwrap(),
        "--into",
        tmp.path().join("m1").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than one shard"));
    // A bundle of another plan (regressed ran clean-boot with a --target override: the
    // same plan name and pairs, so it merges; the reference run is M1+M2).
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        reference.to_str().unwrap(),
        "--into",
        tmp.path().join("m2").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reference-run") && err.contains("different plans"),
        "{err}"
    );
    // A bundle from before run.json recorded its plan cannot be placed: refused.
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/evidence/m1-dashboard-held-back");
    let out = common::run(&[
        "report",
        one.to_str().unwrap(),
        old.to_str().unwrap(),
        "--into",
        tmp.path().join("m3").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m1-dashboard-held-back") && err.contains("which plan"),
        "{err}"
    );
    // Several bundles without --into.
    let out = common::run(&["report", one.to_str().unwrap(), one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("m1").join("report.md").exists());
}

#[test]
fn compare_flags_the_old_gate_coming_back() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-1", &shards);
    copy("shard-2", &shards);
    let previous = tmp.path().join("previous");
    assert_eq!(
        script(&shards, &tmp.path().join("none"), &previous)
            .status
            .code(),
        Some(0)
    );

    // Tonight: the old gate is back.
    let regressed = copy("regressed", tmp.path());
    let out = common::run(&[
        "compare",
        previous.to_str().unwrap(),
        regressed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let c = json(&regressed.join("compare.json"));
    assert_eq!(c["compared"], 1);
    let v = &c["verdicts"][0];
    assert_eq!(v["id"], "after/clean-cold-boot");
    assert_eq!(v["regression"], true);
    assert_eq!(v["old"], serde_json::json!(["pass", "pass"]));
    assert_ne!(v["new"][0], "pass");
    let md = std::fs::read_to_string(regressed.join("compare.md")).unwrap();
    assert!(md.contains("## Verdicts that changed") && md.contains("**regression**"));

    // The other way round, the fix: not a regression; and a bundle against itself.
    let out = common::run(&[
        "compare",
        regressed.to_str().unwrap(),
        previous.to_str().unwrap(),
        "--out",
        tmp.path().join("back").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let out = common::run(&[
        "compare",
        previous.to_str().unwrap(),
        previous.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no regression"));
}

#[test]
fn compare_times_move_one_way_only() {
    // With zero thresholds every unit whose recorded time grew is "slower" one way and
    // "faster" the other, never both.
    let tmp = tempfile::tempdir().unwrap();
    let a = copy("shard-1", tmp.path());
    let b = copy("shard-2", tmp.path());
    let slower = |old: &Path, new: &Path, out: &str| {
        let o = common::run(&[
            "compare",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--threshold-pct",
            "0",
            "--threshold-secs",
            "0",
            "--out",
            tmp.path().join(out).to_str().unwrap(),
        ]);
        let c = json(&tmp.path().join(out).join("compare.json"));
        let list = |regression: bool| -> Vec<(String, String)> {
            c["times"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["regression"] == regression)
                .map(|t| {
                    (
                        t["unit"].as_str().unwrap().into(),
                        t["figure"].as_str().unwrap().into(),
                    )
                })
                .collect()
        };
        (o.status.code(), list(true), list(false))
    };
    let (code_ab, slower_ab, faster_ab) = slower(&a, &b, "ab");
    let (code_ba, slower_ba, faster_ba) = slower(&b, &a, "ba");
    assert_eq!(slower_ab, faster_ba);
    assert_eq!(faster_ab, slower_ba);
    assert!(
        !slower_ab.is_empty() && !faster_ab.is_empty(),
        "two real boots differ somewhere"
    );
    assert_eq!((code_ab, code_ba), (Some(1), Some(1)));
    // Bad thresholds are usage errors naming the flag.
    let o = common::run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--threshold-pct=-5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--threshold-pct"));
}

/// The script's compare step runs on tonight's merge: with a previous night present it
/// compares the merged bundle with it (compare.md lands in OUT) and a regression fails
/// the job, which both CI files rely on.
#[test]
fn the_script_compares_tonights_merge_with_the_previous_night() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("bundles");
    copy("shard-1", &shards);
    copy("shard-2", &shards);
    let previous = tmp.path().join("previous");
    assert_eq!(
        script(&shards, &tmp.path().join("none"), &previous)
            .status
            .code(),
        Some(0)
    );

    // The same shards again: merged, compared, nothing regressed.
    let same = tmp.path().join("same");
    let out = script(&shards, &previous, &same);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("first night"));
    assert_eq!(json(&same.join("compare.json"))["compared"], 1);
    assert!(!previous.join("compare.md").exists(), "OLD is only read");

    // Tonight the old gate is back: the merge succeeds, the compare fails the job.
    let tonight = tmp.path().join("tonight");
    copy("regressed", &tonight);
    let merged = tmp.path().join("merged");
    let out = script(&tonight, &previous, &merged);
    assert_eq!(out.status.code(), Some(1));
    assert!(merged.join("report.json").exists());
    let c = json(&merged.join("compare.json"));
    assert_eq!(c["verdicts"][0]["id"], "after/clean-cold-boot");
    assert_eq!(c["verdicts"][0]["regression"], true);
}

// The two CI files of examples/nightly/ are one job: the Drone pipeline (.drone.yml) runs
// the GitHub workflow's (nightly.yml) shard commands, merge and compare, and its step
// graph hands the shards to the merge and the merge to the next night.

const DRONE: &str = "examples/nightly/.drone.yml";
const GITHUB: &str = "examples/nightly/nightly.yml";
const SCRIPT: &str = "examples/nightly/merge-and-compare.sh";

/// The keys of a Drone exec pipeline (drone-runner-exec's resource) that the file uses;
/// any other key is refused, so that a misspelt `depends_on` cannot pass unnoticed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DronePipeline {
    kind: String,
    #[serde(rename = "type")]
    runner: String,
    name: String,
    #[serde(default)]
    platform: BTreeMap<String, String>,
    #[serde(default)]
    node: BTreeMap<String, String>,
    trigger: DroneTrigger,
    steps: Vec<DroneStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DroneTrigger {
    #[serde(default)]
    event: Vec<String>,
    #[serde(default)]
    cron: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DroneStep {
    name: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    commands: Vec<String>,
    when: Option<DroneWhen>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DroneWhen {
    #[serde(default)]
    status: Vec<String>,
}

impl DroneStep {
    /// Every simple command of the step, its variables expanded from the step's
    /// environment.
    fn argvs(&self) -> Vec<Vec<String>> {
        self.commands
            .iter()
            .flat_map(|c| simple_commands(c, &self.environment))
            .collect()
    }

    /// Whether the step runs only when every step before it passed (Drone's default).
    fn only_on_success(&self) -> bool {
        self.when
            .as_ref()
            .is_none_or(|w| w.status.is_empty() || w.status == ["success"])
    }
}

#[derive(Debug, Deserialize)]
struct GithubWorkflow {
    env: BTreeMap<String, String>,
    jobs: BTreeMap<String, GithubJob>,
}

#[derive(Debug, Deserialize)]
struct GithubJob {
    strategy: Option<GithubStrategy>,
    steps: Vec<GithubStep>,
}

#[derive(Debug, Deserialize)]
struct GithubStrategy {
    matrix: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug, Deserialize)]
struct GithubStep {
    run: Option<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn drone() -> DronePipeline {
    let mut docs: Vec<DronePipeline> = serde_saphyr::from_multiple(&read(DRONE))
        .unwrap_or_else(|e| panic!("{DRONE} is not a Drone exec pipeline: {e}"));
    assert_eq!(docs.len(), 1, "{DRONE}: one pipeline");
    docs.remove(0)
}

fn github() -> GithubWorkflow {
    serde_saphyr::from_str(&read(GITHUB)).unwrap_or_else(|e| panic!("{GITHUB}: {e}"))
}

/// The simple commands of a shell text as argv vectors: quotes removed, `\`-newline
/// joined, `$NAME` replaced from `env` (other variables left as written), split at
/// newlines, `;`, `|`, `||`, `&&`. Enough for the CI files' own commands.
fn simple_commands(text: &str, env: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let text = text.replace("\\\n", " ");
    let chars: Vec<char> = text.chars().collect();
    let (mut commands, mut argv, mut word) = (Vec::new(), Vec::new(), None::<String>);
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if single {
            if c == '\'' {
                single = false;
            } else {
                word.get_or_insert_with(String::new).push(c);
            }
            continue;
        }
        match c {
            '\'' if !double => {
                single = true;
                word.get_or_insert_with(String::new);
            }
            '"' => {
                double = !double;
                word.get_or_insert_with(String::new);
            }
            '$' => {
                let name: String = chars[i..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                let w = word.get_or_insert_with(String::new);
                match env.get(&name) {
                    Some(value) if !name.is_empty() => {
                        w.push_str(value);
                        i += name.len();
                    }
                    _ => w.push('$'),
                }
            }
            '#' if !double && word.is_none() => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ' ' | '\t' if !double => argv.extend(word.take()),
            '\n' | ';' | '|' | '&' if !double => {
                argv.extend(word.take());
                if !argv.is_empty() {
                    commands.push(std::mem::take(&mut argv));
                }
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    argv.extend(word);
    if !argv.is_empty() {
        commands.push(argv);
    }
    commands
}

/// The value of `--name VALUE` or `--name=VALUE` in argv, which must appear once.
fn flag<'a>(argv: &'a [String], name: &str) -> &'a str {
    let values: Vec<&str> = argv
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            if a == name {
                argv.get(i + 1).map(String::as_str)
            } else {
                a.strip_prefix(name)?.strip_prefix('=')
            }
        })
        .collect();
    assert_eq!(values.len(), 1, "{name} once in {argv:?}");
    values[0]
}

/// Replace `--name`'s value (which must be there) in a copy of argv.
fn with_flag(argv: &[String], name: &str, value: &str) -> Vec<String> {
    let mut argv = argv.to_vec();
    let at = argv.iter().position(|a| a == name).expect(name);
    argv[at + 1] = value.into();
    argv
}

fn is_coldboot_run(argv: &[String]) -> bool {
    argv.first().is_some_and(|a| a.ends_with("coldboot")) && argv.get(1).is_some_and(|a| a == "run")
}

/// One shard step of the Drone pipeline.
struct Shard<'a> {
    step: &'a DroneStep,
    argv: Vec<String>,
    index: u32,
    count: u32,
}

fn shard_spec(argv: &[String]) -> (u32, u32) {
    let spec = flag(argv, "--shard");
    let (i, n) = spec.split_once('/').expect("--shard I/N");
    (i.parse().expect(spec), n.parse().expect(spec))
}

/// The steps that run `coldboot run`, in index order, each with the one command it runs.
fn drone_shards(p: &DronePipeline) -> Vec<Shard<'_>> {
    let mut shards: Vec<Shard> = p
        .steps
        .iter()
        .filter_map(|step| {
            let runs: Vec<Vec<String>> = step
                .argvs()
                .into_iter()
                .filter(|a| is_coldboot_run(a))
                .collect();
            assert!(runs.len() <= 1, "{}: one coldboot run", step.name);
            let argv = runs.into_iter().next()?;
            let (index, count) = shard_spec(&argv);
            Some(Shard {
                step,
                argv,
                index,
                count,
            })
        })
        .collect();
    shards.sort_by_key(|s| s.index);
    shards
}

/// Every step that `name` waits for, directly or not; panics on a cycle or a
/// dependency that names no step (Drone refuses both).
fn ancestors(p: &DronePipeline, name: &str) -> BTreeSet<String> {
    fn walk(p: &DronePipeline, name: &str, path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        let step = p
            .steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("depends_on names {name:?}, which is no step"));
        for dep in &step.depends_on {
            assert!(!path.contains(dep), "a dependency cycle: {path:?} -> {dep}");
            out.insert(dep.clone());
            path.push(dep.clone());
            walk(p, dep, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(p, name, &mut vec![name.to_string()], &mut out);
    out
}

/// Each pair id a `coldboot run --dry-run` lists, from the real CLI (which also checks
/// every flag, the plan and the shard spec).
fn dry_run_ids(argv: &[String]) -> Vec<String> {
    let out = common::run(
        &argv[1..]
            .iter()
            .map(String::as_str)
            .chain(["--dry-run"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{argv:?} is not a valid coldboot run"
    );
    let id = regex::Regex::new(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/rep-[0-9]+)?$").unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| id.is_match(w))
        .map(String::from)
        .collect()
}

#[test]
fn drone_pipeline_is_a_cron_triggered_exec_pipeline_drone_can_run() {
    let text = read(DRONE);
    // Drone substitutes `${...}` (and turns `$$` into `$`) in the whole file before any
    // shell sees it.
    for (at, line) in text.lines().enumerate() {
        assert!(
            !line.contains("${") && !line.contains("$$"),
            "{DRONE}:{}: Drone would substitute this: {line}",
            at + 1
        );
    }
    let p = drone();
    assert_eq!((p.kind.as_str(), p.runner.as_str()), ("pipeline", "exec"));
    assert!(!p.name.is_empty());
    assert_eq!(p.platform.get("os").map(String::as_str), Some("linux"));
    assert_eq!(p.platform.get("arch").map(String::as_str), Some("amd64"));
    assert!(
        !p.node.is_empty(),
        "routed to the host that keeps the nights"
    );
    assert_eq!(p.trigger.event, ["cron"]);
    assert_eq!(p.trigger.cron.len(), 1, "one named cron job");

    let names: BTreeSet<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), p.steps.len(), "step names are unique");
    for step in &p.steps {
        ancestors(&p, &step.name);
        // Drone echoes each command before it runs it: `$?` in a command of its own is
        // the echo's status.
        for command in &step.commands {
            let first = simple_commands(command, &BTreeMap::new());
            let first = first.first().expect("an empty command");
            assert!(
                !first.iter().any(|w| w.contains("$?")),
                "{}: {command:?} reads $? of Drone's echo",
                step.name
            );
        }
    }

    // One step builds coldboot; it is the only step that starts with the clone, and every
    // step that runs what it built waits for it.
    let builds: Vec<&DroneStep> = p
        .steps
        .iter()
        .filter(|s| {
            s.argvs()
                .iter()
                .any(|a| a.starts_with(&["cargo".into(), "build".into(), "--release".into()]))
        })
        .collect();
    assert_eq!(builds.len(), 1, "one step runs cargo build --release");
    let build = builds[0];
    assert!(!build.environment.contains_key("CARGO_TARGET_DIR"));
    let roots: Vec<&str> = p
        .steps
        .iter()
        .filter(|s| s.depends_on.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, [build.name.as_str()]);
    let mut runs_the_build = 0;
    for step in &p.steps {
        for argv in step.argvs() {
            if argv[0] == "target/release/coldboot" || argv[0] == SCRIPT {
                runs_the_build += 1;
                assert!(
                    ancestors(&p, &step.name).contains(&build.name),
                    "{} runs {} before {} built it",
                    step.name,
                    argv[0],
                    build.name
                );
            }
        }
    }
    assert!(
        runs_the_build > drone_shards(&p).len(),
        "the shards and the merge run what {} built",
        build.name
    );
}

#[test]
fn drone_shards_are_the_github_workflows_and_run_each_pair_once() {
    let p = drone();
    let shards = drone_shards(&p);
    assert!(shards.len() > 1, "{DRONE} has no shards");
    let count = shards[0].count;
    let indices: Vec<u32> = shards.iter().map(|s| s.index).collect();
    assert_eq!(
        indices,
        (1..=count).collect::<Vec<_>>(),
        "one shard step for each of --shard 1/{count} .. {count}/{count}"
    );
    let bundles = Path::new(flag(&shards[0].argv, "--evidence"))
        .parent()
        .unwrap();
    for s in &shards {
        assert_eq!(s.count, count, "{}", s.step.name);
        assert_eq!(s.argv[0], "target/release/coldboot", "{}", s.step.name);
        assert_eq!(
            Path::new(flag(&s.argv, "--evidence")),
            bundles.join(format!("shard-{}", s.index)),
            "{}",
            s.step.name
        );
        // Every shard runs the same command but for its index and folder.
        assert_eq!(
            with_flag(
                &with_flag(&s.argv, "--shard", "I/N"),
                "--evidence",
                "EVIDENCE"
            ),
            with_flag(
                &with_flag(&shards[0].argv, "--shard", "I/N"),
                "--evidence",
                "EVIDENCE"
            ),
            "{} and {} run different commands",
            s.step.name,
            shards[0].step.name
        );
    }

    // The same commands as the GitHub workflow's matrix, shard for shard.
    let gh = github();
    let job = gh
        .jobs
        .values()
        .find(|j| j.strategy.is_some())
        .expect("nightly.yml's shard matrix");
    let matrix = &job.strategy.as_ref().unwrap().matrix["shard"];
    assert_eq!(
        matrix, &indices,
        "nightly.yml's matrix and {DRONE}'s shards"
    );
    let runs: Vec<&String> = job
        .steps
        .iter()
        .filter_map(|s| s.run.as_ref())
        .filter(|r| r.contains("coldboot run"))
        .collect();
    assert_eq!(runs.len(), 1);
    let expr = regex::Regex::new(r"\$\{\{\s*(matrix\.shard|env\.(\w+))\s*\}\}").unwrap();
    for s in &shards {
        let run = expr.replace_all(runs[0], |c: &regex::Captures| match c.get(2) {
            Some(name) => gh.env[name.as_str()].clone(),
            None => s.index.to_string(),
        });
        let gh_argv: Vec<Vec<String>> = simple_commands(&run, &gh.env)
            .into_iter()
            .filter(|a| is_coldboot_run(a))
            .collect();
        assert_eq!(
            gh_argv,
            std::slice::from_ref(&s.argv),
            "{} is not nightly.yml's shard {}",
            s.step.name,
            s.index
        );
    }

    // The real CLI accepts each shard's command, and the shards run every pair of the
    // unsharded run once.
    let tmp = tempfile::tempdir().unwrap();
    let mut sharded = Vec::new();
    for s in &shards {
        let evidence = tmp.path().join(format!("shard-{}", s.index));
        let ids = dry_run_ids(&with_flag(
            &s.argv,
            "--evidence",
            evidence.to_str().unwrap(),
        ));
        assert!(!ids.is_empty(), "{} runs nothing", s.step.name);
        sharded.extend(ids);
    }
    let at = shards[0].argv.iter().position(|a| a == "--shard").unwrap();
    let mut whole = shards[0].argv.clone();
    whole.drain(at..at + 2);
    let whole = with_flag(
        &whole,
        "--evidence",
        tmp.path().join("all").to_str().unwrap(),
    );
    let mut all = dry_run_ids(&whole);
    all.sort();
    sharded.sort();
    assert_eq!(sharded, all, "the shards run each pair of the plan once");
}

#[test]
fn drone_merge_waits_for_every_shard_and_only_a_green_night_becomes_the_previous() {
    let p = drone();
    let shards = drone_shards(&p);
    let merges: Vec<(&DroneStep, Vec<String>)> = p
        .steps
        .iter()
        .flat_map(|s| s.argvs().into_iter().map(move |a| (s, a)))
        .filter(|(_, a)| a[0] == SCRIPT)
        .collect();
    assert_eq!(merges.len(), 1, "one step runs {SCRIPT}");
    let (merge, argv) = &merges[0];
    let [_, coldboot, shards_dir, previous, out] = argv.as_slice() else {
        panic!("{SCRIPT} COLDBOOT SHARDS_DIR PREVIOUS_DIR OUT_DIR, not {argv:?}");
    };
    assert_eq!(coldboot, &shards[0].argv[0], "the shards' coldboot");
    for s in &shards {
        assert_eq!(
            Path::new(flag(&s.argv, "--evidence")).parent(),
            Some(Path::new(shards_dir)),
            "{} writes where the merge does not look",
            s.step.name
        );
    }

    // The merge waits for every shard, and runs when one failed (to say what is missing).
    let before = ancestors(&p, &merge.name);
    for s in &shards {
        assert!(
            before.contains(&s.step.name),
            "{} does not wait for {}",
            merge.name,
            s.step.name
        );
    }
    let status = &merge.when.as_ref().expect("merge's when").status;
    assert!(
        status.contains(&"success".into()) && status.contains(&"failure".into()),
        "{} must also run after a failed shard: {status:?}",
        merge.name
    );

    // The same merge and compare as the GitHub workflow's.
    let gh = github();
    let gh_merges: Vec<Vec<String>> = gh
        .jobs
        .values()
        .flat_map(|j| j.steps.iter().filter_map(|s| s.run.as_ref()))
        .flat_map(|r| simple_commands(r, &gh.env))
        .filter(|a| a[0] == SCRIPT)
        .collect();
    assert_eq!(gh_merges.len(), 1);
    let g = &gh_merges[0];
    assert_eq!(
        (&g[1], &g[2], &g[4]),
        (coldboot, shards_dir, out),
        "nightly.yml merges {g:?}"
    );

    // What reads tonight's bundle comes after the merge wrote it.
    let mentions = |step: &DroneStep, path: &str| {
        step.argvs().iter().flatten().any(|w| {
            w == path
                || w.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    for step in p.steps.iter().filter(|s| s.name != merge.name) {
        if mentions(step, out) {
            assert!(
                ancestors(&p, &step.name).contains(&merge.name),
                "{} reads {out} before {} wrote it",
                step.name,
                merge.name
            );
        }
    }
    // The previous night outlives the pipeline's workspace, and becomes tonight's only
    // after the merge and compare, and only when every step passed (nightly.yml takes
    // the last successful run's bundle).
    assert!(
        Path::new(previous).is_absolute(),
        "{previous} is in the workspace, which Drone removes after each pipeline"
    );
    let writers: Vec<&DroneStep> = p
        .steps
        .iter()
        .filter(|s| s.name != merge.name && mentions(s, previous))
        .collect();
    assert!(
        !writers.is_empty(),
        "no step keeps tonight's bundle as {previous}"
    );
    for w in writers {
        assert!(
            ancestors(&p, &w.name).contains(&merge.name) && w.only_on_success(),
            "{} replaces {previous}, but not only after a night that passed",
            w.name
        );
        assert!(mentions(w, out), "{} keeps {out} as {previous}", w.name);
    }
}
