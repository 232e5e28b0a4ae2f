//! The reports rendered from recorded evidence bundles (tests/fixtures/evidence/*):
//! report.json validates against schemas/report.schema.json, junit.xml parses back with
//! the right counts, report.md carries the verdict table and sections, and rendering
//! twice, or from a copy elsewhere, gives the same bytes.

mod common;

use std::path::{Path, PathBuf};

use coldboot::check::{Evaluation, ExpectationOutcome};
use coldboot::evidence::{self, load_bundle};
use coldboot::scenario::ExpectationKind;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evidence");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures/evidence exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no bundle under {}", root.display());
    out
}

/// Copy a fixture bundle into a fresh temporary folder of the same name.
fn copy_bundle(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(src.file_name().unwrap());
    common::copy_dir(src, &dst);
    (tmp, dst)
}

fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

#[test]
fn report_json_validates_against_the_schema() {
    let validator = schema();
    for dir in fixtures() {
        let (_tmp, dir) = copy_bundle(&dir);
        let rendered = evidence::render_bundle(&dir).unwrap();
        let value: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", dir.display());
        let bundle = load_bundle(&dir).unwrap();
        assert_eq!(value["pairs"].as_array().unwrap().len(), bundle.pairs.len());
        assert_eq!(value["schema_version"], evidence::SCHEMA_VERSION);
    }
}

#[test]
fn the_schema_rejects_a_broken_report() {
    let validator = schema();
    let (_tmp, dir) = copy_bundle(&fixtures()[0]);
    let rendered = evidence::render_bundle(&dir).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
    value["pairs"][0]["verdict"] = serde_json::json!({"verdict": "maybe"});
    assert!(!validator.is_valid(&value));
    let mut value: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
    value["counts"]
        .as_object_mut()
        .unwrap()
        .remove("as_planned");
    assert!(!validator.is_valid(&value));
}

#[test]
fn rendering_is_byte_identical_wherever_it_runs() {
    for src in fixtures() {
        let (_a, first) = copy_bundle(&src);
        let once = evidence::render_bundle(&first).unwrap();
        let again = evidence::render_bundle(&first).unwrap();
        assert_eq!(once, again, "{}", src.display());
        // The files on disk are what was rendered.
        assert_eq!(
            std::fs::read_to_string(first.join("report.md")).unwrap(),
            once.markdown
        );
        // A copy of the bundle somewhere else renders the same bytes.
        let (_b, second) = copy_bundle(&first);
        assert_eq!(evidence::render_bundle(&second).unwrap(), once);
    }
}

#[test]
fn write_reports_renders_what_report_renders() {
    for src in fixtures() {
        let (_tmp, dir) = copy_bundle(&src);
        let bundle = load_bundle(&dir).unwrap();
        let reports: Vec<_> = bundle.pairs.iter().map(|p| p.report.clone()).collect();
        evidence::write_reports(&dir, &reports).unwrap();
        let written = std::fs::read(dir.join("report.json")).unwrap();
        evidence::report_command(&dir).unwrap();
        assert_eq!(std::fs::read(dir.join("report.json")).unwrap(), written);
    }
}

#[test]
fn junit_parses_back_with_the_verdict_counts() {
    for src in fixtures() {
        let (_tmp, dir) = copy_bundle(&src);
        let rendered = evidence::render_bundle(&dir).unwrap();
        let bundle = load_bundle(&dir).unwrap();
        let report = quick_junit::Report::deserialize_from_str(&rendered.junit)
            .unwrap_or_else(|e| panic!("{}: junit.xml does not parse: {e}", src.display()));
        let errors = bundle
            .pairs
            .iter()
            .filter(|p| p.report.verdict.word() == "error")
            .count();
        let failures = bundle
            .pairs
            .iter()
            .filter(|p| !p.report.matches_plan && p.report.verdict.word() != "error")
            .count();
        assert_eq!(report.tests, bundle.pairs.len());
        assert_eq!(report.errors, errors);
        assert_eq!(report.failures, failures);
        let cases: Vec<_> = report
            .test_suites
            .iter()
            .flat_map(|s| s.test_cases.iter())
            .collect();
        assert_eq!(cases.len(), bundle.pairs.len());
        for p in &bundle.pairs {
            let case = cases
                .iter()
                .find(|c| {
                    c.name.as_str() == p.report.scenario
                        && c.classname.as_ref().map(|n| n.as_str())
                            == Some(&format!("{}.{}", p.report.target_name, p.report.scenario))
                })
                .unwrap_or_else(|| panic!("no testcase for {}", p.report.id));
            let out = case.system_out.as_ref().expect("system-out").as_str();
            assert!(out.contains(&p.folder), "{out}");
        }
    }
}

#[test]
fn markdown_opens_with_the_verdict_table() {
    for src in fixtures() {
        let (_tmp, dir) = copy_bundle(&src);
        let rendered = evidence::render_bundle(&dir).unwrap();
        let md = &rendered.markdown;
        let bundle = load_bundle(&dir).unwrap();
        let table = md.find("## Verdicts").expect("a verdict table");
        let first_section = md.find("\n## ").unwrap();
        assert_eq!(first_section + 1, table, "the verdict table comes first");
        assert!(md.contains("![timeline](timeline.svg)"));
        for p in &bundle.pairs {
            // Each pair's cell links its verdict file, and the link resolves.
            let link = format!("]({}/verdict.json)", p.folder);
            assert!(md.contains(&link), "{link} missing");
            assert!(dir.join(&p.folder).join("verdict.json").is_file() || !p.complete);
        }
        // Every relative link in the report points at a file or folder in the bundle.
        for link in md.split("](").skip(1).filter_map(|r| r.split(')').next()) {
            assert!(dir.join(link).exists(), "broken link {link}");
        }
        assert!(rendered.svg.starts_with("<svg"));
    }
}

/// A bundle with every kind of outcome, made from a recorded pass: a failure, an
/// infrastructure error, a failed reproduction, and an interrupted run.
fn mixed_bundle() -> (tempfile::TempDir, PathBuf) {
    let src = fixtures()
        .into_iter()
        .find(|d| d.ends_with("after-only"))
        .expect("the after-only fixture");
    let (tmp, dir) = copy_bundle(&src);
    let base_dir = dir.join("after__dashboard-held-back");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base_dir.join("verdict.json")).unwrap())
            .unwrap();
    let variant = |folder: &str, target: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let d = dir.join(folder);
        common::copy_dir(&base_dir, &d);
        let mut v = base.clone();
        v["target_name"] = target.into();
        v["id"] = format!("{target}/dashboard-held-back").into();
        v["run_dir"] = format!("evidence/x/{folder}").into();
        edit(&mut v);
        std::fs::write(
            d.join("verdict.json"),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
    };
    variant("wrong__dashboard-held-back", "wrong", &|v| {
        v["matches_plan"] = false.into();
        v["verdict"] = serde_json::json!({"verdict": "fail", "expectation": "unit:deploy-proxy.service=active",
            "expected": "deploy-proxy.service is active within 2m", "seen": "deploy-proxy.service is activating (Result=success)",
            "note": null, "evidence": "evidence/x/wrong__dashboard-held-back/units-boot-without-dashboard.txt"});
    });
    variant("broken__dashboard-held-back", "broken", &|v| {
        v["matches_plan"] = false.into();
        v["verdict"] = serde_json::json!({"verdict": "error", "message": "QEMU exited early"});
    });
    variant("before__dashboard-held-back", "before", &|v| {
        v["matches_plan"] = false.into();
        v["expected"] = serde_json::json!({"reproduced": {"failing": ["unit:deploy-proxy.service=active"], "seen": "activating"}});
    });
    let cut = dir.join("cut__dashboard-held-back");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(base_dir.join("timeline.jsonl"), cut.join("timeline.jsonl")).unwrap();
    (tmp, dir)
}

#[test]
fn failures_and_errors_are_kept_apart() {
    let (_tmp, dir) = mixed_bundle();
    let rendered = evidence::render_bundle(&dir).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&rendered.junit).unwrap();
    assert_eq!(
        (report.tests, report.failures, report.errors),
        (5, 2, 2),
        "{}",
        rendered.junit
    );
    assert!(rendered.junit.contains(
        "failed reproduction: the plan expects unit:deploy-proxy.service=active to fail"
    ));
    assert!(rendered.junit.contains("unit:deploy-proxy.service=active: expected deploy-proxy.service is active within 2m, saw deploy-proxy.service is activating"));
    assert!(
        rendered
            .junit
            .contains("cut__dashboard-held-back/verdict.json is missing")
    );
    let json: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
    assert_eq!(json["counts"]["incomplete"], 1);
    assert_eq!(json["counts"]["not_as_planned"], 4);
    let errors: Vec<String> = schema().iter_errors(&json).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The failure's evidence link moved under its run folder.
    assert!(
        rendered
            .markdown
            .contains("wrong__dashboard-held-back/verdict.json")
    );
}

/// The M2 section from a recorded boot: the ordering table is computed from the run
/// folder's unit timestamps, and the rollback proof lists last-good first.
#[test]
fn m2_section_shows_ordering_and_rollback() {
    let (_tmp, dir) = m2_bundle();
    let md = evidence::render_bundle(&dir).unwrap().markdown;
    let m2 = &md[md.find("## M2").expect("an M2 section")..];
    assert!(m2.contains("### Rollback proof"), "{m2}");
    assert!(m2.contains("`broken-latest/last-good-kept`"), "{m2}");
    // The ordering table: each consumer's start relative to deploy-proxy's activation,
    // from the recorded units file (drone started after it: a positive offset).
    let drone = m2
        .lines()
        .find(|l| l.starts_with("| drone.service |"))
        .expect("a drone row");
    assert!(drone.contains("| +"), "{drone}");
    assert!(m2.contains("### The base image is unchanged"), "{m2}");
}

/// Without sections from a plan, each milestone gets a section named after it.
#[test]
fn milestones_without_a_plan_get_a_section_each() {
    let (_tmp, dir) = m2_bundle();
    std::fs::remove_file(dir.join("run.json")).unwrap();
    let md = evidence::render_bundle(&dir).unwrap().markdown;
    assert!(md.contains("\n## M1\n"), "{md}");
    assert!(md.contains("\n## M2\n"), "{md}");
}

/// junitparser (PyPI) reads junit.xml with the counts report.json gives. Runs with
/// `$COLDBOOT_PYTHON` (default python3); skipped when junitparser is not importable,
/// unless `COLDBOOT_REQUIRE_JUNITPARSER` is set (as CI does).
#[test]
fn junitparser_accepts_junit_xml() {
    let python = std::env::var("COLDBOOT_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import junitparser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !importable {
        assert!(
            std::env::var_os("COLDBOOT_REQUIRE_JUNITPARSER").is_none(),
            "{python} cannot import junitparser"
        );
        eprintln!("skipped: {python} cannot import junitparser (pip install junitparser)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/junit_consumer.py");
    let (_tmp, mixed) = mixed_bundle();
    let mut bundles: Vec<(Option<tempfile::TempDir>, PathBuf)> = vec![(None, mixed)];
    for f in fixtures() {
        let (t, d) = copy_bundle(&f);
        bundles.push((Some(t), d));
    }
    for (_t, dir) in &bundles {
        evidence::render_bundle(dir).unwrap();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Not a check: a developer's tool to render a real bundle in place before the CLI has
/// `coldboot report`: `COLDBOOT_RENDER=DIR cargo test --test evidence_render -- --ignored`.
#[test]
#[ignore]
fn render_the_bundle_named_by_coldboot_render() {
    if let Some(dir) = std::env::var_os("COLDBOOT_RENDER") {
        evidence::report_command(Path::new(&dir)).unwrap();
    }
}

/// Issue 10: report.md is rendered from what the outcomes record, not from their
/// sentences. Every `expected` sentence of a recorded M2-like bundle is replaced by
/// nonsense; the report is byte for byte the same: every section, figure and table.
#[test]
fn reworded_sentences_keep_every_section_and_figure() {
    let (_tmp, dir) = m2_bundle();
    let before = evidence::render_bundle(&dir).unwrap().markdown;
    for must in [
        "## M2: cold-boot proof",
        "### Rollback proof",
        "### Consumers start after deploy-proxy",
        "| drone.service |",
        "Last-good, before and after the broken version:",
        "### The base image is unchanged",
    ] {
        assert!(before.contains(must), "{must} missing:\n{before}");
    }
    reword_every_sentence(&dir);
    let after = evidence::render_bundle(&dir).unwrap().markdown;
    assert!(!after.contains("reworded"), "{after}");
    assert_eq!(before, after);
}

/// The recorded m1 bundle's after pair (upgraded to schema 3, see the fixtures' README),
/// presented as the shipped M2 plan presents it, with an ordering and a rollback
/// expectation added as data: outcomes of expectations parsed from scenario text.
fn m2_bundle() -> (tempfile::TempDir, PathBuf) {
    let src = fixtures()
        .into_iter()
        .find(|d| d.ends_with("m1-dashboard-held-back"))
        .expect("the m1 fixture");
    let (tmp, dir) = copy_bundle(&src);
    let path = dir.join("after__dashboard-held-back/verdict.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        v["outcomes"][0]["kind"].is_object(),
        "the fixture records its kinds"
    );
    v["milestones"] = serde_json::json!(["M2"]);
    v["report"] = serde_json::json!({"group": "Rollback proof", "highlight": {
        "title": "Last-good, before and after the broken version",
        "ids": ["broken-latest/last-good-kept"]}});
    let units = v["outcomes"][0]["evidence"].clone();
    let scenario = coldboot::scenario::parse_scenario(
        Path::new("extra.yaml"),
        "name: extra\nmilestone: M2\nsummary: s\nphases:\n  - name: p\n    expect:\n\
         \x20     - order: {after: deploy-proxy.service, units: [drone.service, reports.service]}\n\
         \x20     - id: broken-latest/last-good-kept\n\
         \x20       file: {path: /var/lib/ccci-model/last-good, content: {equals: v1}}\n",
    )
    .unwrap();
    let outcomes = v["outcomes"].as_array_mut().unwrap();
    for (e, seen) in scenario.expectations().zip(["recorded", "v1"]) {
        let mut o = ExpectationOutcome::of(e, Evaluation::held(seen));
        if matches!(e.kind, ExpectationKind::Order(_)) {
            o.evidence = serde_json::from_value(units.clone()).unwrap();
        }
        outcomes.push(serde_json::to_value(&o).unwrap());
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let run = serde_json::json!({"command": "coldboot run --plan scenarios/plans/m2.yaml",
        "cores": 2, "host": "test", "sections": [{"milestone": "M2", "title": "M2: cold-boot proof",
        "layout": "groups", "order_title": "Consumers start after deploy-proxy"}]});
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_vec_pretty(&run).unwrap(),
    )
    .unwrap();
    (tmp, dir)
}

/// Replace every `expected` sentence in every verdict.json of the bundle.
fn reword_every_sentence(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path().join("verdict.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (i, o) in v["outcomes"].as_array_mut().unwrap().iter_mut().enumerate() {
            o["expected"] = format!("reworded sentence {i}").into();
        }
        if v["verdict"].get("expected").is_some() {
            v["verdict"]["expected"] = "reworded".into();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
}

/// Not a check: upgrades a bundle recorded before report.json schema 3 in place, giving
/// each outcome its kind from the scenario file that ran (`COLDBOOT_UPGRADE_SCENARIO`,
/// default the one of the same name under scenarios/), where its sentence matches:
/// `COLDBOOT_UPGRADE=DIR cargo test --test evidence_render -- --ignored upgrade`.
#[test]
#[ignore]
fn upgrade_the_bundle_named_by_coldboot_upgrade() {
    let Some(dir) = std::env::var_os("COLDBOOT_UPGRADE") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path().join("verdict.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut report: coldboot::check::PairReport = serde_json::from_str(&text).unwrap();
        let file = std::env::var_os("COLDBOOT_UPGRADE_SCENARIO")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(format!("scenarios/{}.yaml", report.scenario)));
        let scenario = coldboot::scenario::load_scenario(&file).unwrap();
        let n = coldboot::evidence::load::upgrade_report(&mut report, &scenario);
        eprintln!(
            "{}: {n} of {} outcomes",
            path.display(),
            report.outcomes.len()
        );
        let mut bytes = serde_json::to_vec_pretty(&report).unwrap();
        bytes.push(b'\n');
        std::fs::write(&path, bytes).unwrap();
    }
}

/// The committed reference run is a real run of every shipped kind; its report.json,
/// rendered anew from its bundle, must validate too (a field the fixtures lack, such
/// as a gate probe's guest times, is caught here rather than only by a VM test).
#[test]
fn the_reference_run_validates_against_the_schema() {
    let validator = schema();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference-run");
    let (_tmp, dir) = copy_bundle(&src);
    let rendered = evidence::render_bundle(&dir).unwrap();
    let value: serde_json::Value = serde_json::from_str(&rendered.json).unwrap();
    assert!(
        rendered.json.contains("\"guest_us\""),
        "the reference run should carry gate probes with guest times"
    );
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{}: {errors:#?}", dir.display());
}
