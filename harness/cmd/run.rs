//! `coldboot run`: expand a plan (or scenarios × targets) into pairs, run them, and
//! exit with what the verdicts say about the plan.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use coldboot::error::{exit, infra, usage};
use coldboot::run::{RunOptions, run_pairs};
use coldboot::scenario::{self, RunPair};
use coldboot::targets::{BASE_CMDLINE, Recipe, TargetSpec, nix};
use coldboot::vm::{Accel, AccelChoice, VmConfig, argv};

use crate::cli::RunArgs;

/// Run and report. 0: every verdict as planned; 1: one is not; 3: an infra error.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let deadline = args
        .deadline
        .as_deref()
        .map(|d| {
            coldboot::scenario::duration::parse_duration(d)
                .map_err(|why| usage(format!("--deadline {d:?}: {why}")))
        })
        .transpose()?;
    let flags = args
        .targets
        .iter()
        .map(|t| scenario::plan::parse_target_flag(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sections: Vec<scenario::Section> = Vec::new();
    let mut redact: Vec<String> = Vec::new();
    let (plan_name, mut pairs) = if !args.plans.is_empty() {
        if !args.scenarios.is_empty() {
            return Err(usage("give either --plan or SCENARIO files, not both"));
        }
        let mut names = Vec::new();
        let mut pairs: Vec<RunPair> = Vec::new();
        for path in &args.plans {
            let mut loaded = scenario::load_plan(path)?;
            loaded.override_targets(&flags)?;
            names.push(loaded.plan.name.clone());
            redact.extend(loaded.plan.redact.iter().cloned());
            // The first plan that describes a milestone's section wins.
            for s in &loaded.plan.sections {
                if !sections
                    .iter()
                    .any(|k: &scenario::Section| k.milestone == s.milestone)
                {
                    sections.push(s.clone());
                }
            }
            for pair in loaded.pairs() {
                let same = |p: &RunPair| {
                    p.target == pair.target
                        && p.scenario.path == pair.scenario.path
                        && p.expected == pair.expected
                };
                if let Some(other) = pairs.iter().find(|p| p.id == pair.id && !same(p)) {
                    return Err(usage(format!(
                        "{}: pair {} differs from the one another plan gives ({} vs {})",
                        path.display(),
                        pair.id,
                        pair.target,
                        other.target
                    )));
                }
                if !pairs.iter().any(same) {
                    pairs.push(pair);
                }
            }
        }
        (names.join("+"), pairs)
    } else {
        if args.scenarios.is_empty() {
            return Err(usage(
                "nothing to run: give --plan PLAN, or --target NAME=TARGET and SCENARIO files",
            ));
        }
        if flags.is_empty() {
            return Err(usage(
                "SCENARIO files need at least one --target NAME=TARGET",
            ));
        }
        let scenarios = args
            .scenarios
            .iter()
            .map(|p| scenario::load_scenario(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        (
            "adhoc".to_string(),
            scenario::plan::adhoc_pairs(&flags, &scenarios),
        )
    };
    pairs = scenario::plan::repeat(pairs, args.repeat);
    let planned: Vec<String> = pairs.iter().map(|p| p.id.clone()).collect();
    let mut shard = None;
    if let Some(s) = &args.shard {
        let which = scenario::parse_shard(s)?;
        pairs = scenario::shard(&pairs, which);
        shard = Some(which.to_string());
    }

    let evidence = args
        .evidence
        .clone()
        .unwrap_or_else(|| default_evidence_dir(&plan_name));
    // Targets are checked before anything runs, --dry-run included.
    let mut checked: Vec<&str> = Vec::new();
    for p in &pairs {
        if !checked.contains(&p.target.as_str()) {
            coldboot::targets::check::check_str(&format!("target {}", p.target_name), &p.target)?;
            checked.push(&p.target);
        }
    }
    if args.dry_run {
        print_dry_run(&pairs, &evidence, args.vm.accel.into())?;
        return Ok(exit::OK);
    }
    if pairs.is_empty() {
        eprintln!("this shard has no pairs to run");
        return Ok(exit::OK);
    }
    let opts = RunOptions {
        evidence: evidence.clone(),
        jobs: usize::from(args.jobs),
        keep: args.keep,
        accel: args.vm.accel.into(),
        vcpus: args.vm.vcpus,
        ssh_timeout: Duration::from_secs(args.ssh_timeout),
        baseline_poll: args.baseline_poll,
        redact,
    };
    // What killed runs left behind goes first (never what a live run owns).
    if let Ok(root) = coldboot::targets::cache::cache_root(None) {
        for line in coldboot::vm::owner::collect_stale(&root) {
            eprintln!("{line}");
        }
    }
    std::fs::create_dir_all(&evidence).map_err(|e| {
        infra(format!(
            "cannot create the evidence folder {}: {e}",
            evidence.display()
        ))
    })?;
    // The plans' patterns apply from the first file (run.json); run_pairs adds the
    // targets' own once they are prepared.
    coldboot::evidence::redact::register(
        &evidence,
        coldboot::evidence::redact::Redactor::new(&opts.redact)?,
    );
    let command = std::iter::once("coldboot".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let plan = coldboot::evidence::load::PlanRecord {
        name: plan_name.clone(),
        pairs: planned,
        shard,
        repeat: args.repeat,
    };
    coldboot::evidence::write_invocation(&evidence, &command, Some(plan), &sections).map_err(
        |e| {
            infra(format!(
                "cannot write to the evidence folder {}: {e:#}",
                evidence.display()
            ))
        },
    )?;
    *BUNDLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(evidence.clone());
    let reports = match deadline {
        None => run_pairs(pairs, &opts).await?,
        // Dropping the run at its deadline drops every VM, which kills its QEMU.
        Some(limit) => match tokio::time::timeout(limit, run_pairs(pairs, &opts)).await {
            Ok(reports) => reports?,
            Err(_) => {
                coldboot::vm::registry::cleanup_all();
                let written = render_incomplete(&evidence, "the run's --deadline passed");
                return Err(infra(format!(
                    "the run did not end within its --deadline {} (stopped every VM; {written})",
                    args.deadline.as_deref().unwrap_or_default()
                )));
            }
        },
    };
    coldboot::evidence::write_reports(&evidence, &reports).map_err(|e| {
        infra(format!(
            "cannot write the reports into the evidence folder {}: {e:#}",
            evidence.display()
        ))
    })?;
    let mismatched = reports.iter().filter(|r| !r.matches_plan).count();
    eprintln!(
        "{} pairs: {} as planned, {} not; evidence in {}",
        reports.len(),
        reports.len() - mismatched,
        mismatched,
        evidence.display()
    );
    Ok(coldboot::run::exit_code(&reports))
}

/// The bundle of the run in progress, for the signal handler.
static BUNDLE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// After SIGINT or SIGTERM (every VM already stopped): write the bundle's reports with
/// what ran so far; a pair that had not finished shows as incomplete.
pub fn write_interrupted_bundle(signal: &str) {
    let bundle = BUNDLE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(dir) = bundle {
        let written = render_incomplete(&dir, &format!("stopped by {signal}"));
        eprintln!("{written}");
    }
}

/// Mark the bundle `dir` as stopped (`interrupted.txt` says why) and render its reports
/// from the run folders on disk. Says what it did.
fn render_incomplete(dir: &Path, why: &str) -> String {
    let marker = dir.join("interrupted.txt");
    let _ = std::fs::write(&marker, format!("{why}\n"));
    match coldboot::evidence::render_bundle(dir) {
        Ok(_) => format!(
            "the bundle {} holds what ran so far, unfinished pairs marked incomplete",
            dir.display()
        ),
        Err(e) => format!("could not write the bundle's reports: {e:#}"),
    }
}

/// Every command the run would start, without starting any: per target, the image build
/// or the `nix` calls; per pair, the first boot's QEMU argv or NixOS runner environment
/// (later boots differ only in the kernel command line). The SSH key is redacted.
fn print_dry_run(pairs: &[RunPair], evidence: &Path, accel: Accel) -> anyhow::Result<()> {
    println!("would write evidence to {}", evidence.display());
    let mut seen = Vec::new();
    for p in pairs {
        if seen.contains(&&p.target) {
            continue;
        }
        seen.push(&p.target);
        println!("\ntarget {} = {}", p.target_name, p.target);
        match TargetSpec::parse(&p.target)? {
            TargetSpec::Nix { flake, attr } => {
                let t = nix::NixTarget::new(&flake, &attr)?;
                let wrapper = nix::wrapper_dir()?;
                for argv in nix::prepare_commands(&t, &wrapper) {
                    println!("  $ {}", nix::shell_words(&argv));
                }
                println!(
                    "  (the runner is OUT/bin/run-*-vm of the `nix build` output; the wrapper \
                     flake {} is {})",
                    wrapper.display(),
                    if std::env::var_os(nix::NIX_DIR_ENV).is_some_and(|d| !d.is_empty()) {
                        "$COLDBOOT_NIX_DIR"
                    } else {
                        "the copy of nix/ built into coldboot"
                    }
                );
            }
            TargetSpec::Recipe { dir, variants } => {
                let flags: String = variants
                    .iter()
                    .map(|(k, v)| format!(" --variant {k}={v}"))
                    .collect();
                println!(
                    "  $ coldboot image build {}{flags}   (IMAGE: reused from the cache when built before)",
                    dir.display()
                );
            }
            TargetSpec::Image { path, .. } => println!("  IMAGE: {}", path.display()),
        }
    }
    println!();
    for p in pairs {
        let expected = match &p.expected {
            scenario::Expected::Pass => "pass".to_string(),
            scenario::Expected::Reproduced(r) => format!("reproduced ({})", r.failing.join(", ")),
        };
        println!(
            "{:<40} target {} = {}\n{:<40} scenario {} expect {expected}",
            p.id,
            p.target_name,
            p.target,
            "",
            p.scenario.path.display()
        );
        let boot = p.scenario.phases.first().map(|ph| &ph.boot);
        let extra = boot.map(|b| b.kernel_cmdline()).unwrap_or_default();
        let line = dry_run_launch(
            &p.target,
            &evidence.join(p.id.replace('/', "__")),
            accel,
            extra,
        )?;
        println!("{:<40} $ {}", "", nix::shell_words(&line));
    }
    if accel == Accel::Auto {
        println!("\n(--accel auto: a probe boot chooses KVM or TCG before the first pair)");
    }
    Ok(())
}

/// The first boot's launch line for `target`, with placeholder image paths and the key
/// redacted.
fn dry_run_launch(
    target: &str,
    run_dir: &Path,
    accel: Accel,
    extra: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let choice = AccelChoice {
        accel,
        reason: "as requested".into(),
    };
    let key = "coldboot.authorized_key=<redacted>".to_string();
    let mut config = match TargetSpec::parse(target)? {
        TargetSpec::Nix { .. } => VmConfig::nix_runner("OUT/bin/run-HOSTNAME-vm", run_dir, choice),
        TargetSpec::Recipe { dir, .. } => {
            let mut c = VmConfig::new("IMAGE/disk.qcow2", run_dir, choice);
            c.kernel = Some("IMAGE/vmlinuz".into());
            c.initrd = Some("IMAGE/initrd.img".into());
            c.cmdline = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
            c.cmdline.extend(Recipe::load(&dir)?.kernel_args);
            c
        }
        TargetSpec::Image { path, kernel, .. } => {
            let mut c = VmConfig::new(path, run_dir, choice);
            c.kernel = kernel;
            c
        }
    };
    if config.kernel.is_some() || config.nix_runner.is_some() {
        config.cmdline.push(key);
        config.cmdline.extend(extra);
    }
    Ok(argv::launch_line(&config))
}

/// `evidence/<UTC timestamp>-<plan>/`.
fn default_evidence_dir(plan: &str) -> PathBuf {
    let now = coldboot::run::record::unix_now() as u64;
    PathBuf::from("evidence").join(format!("{}-{plan}", coldboot::evidence::utc_stamp(now)))
}
