//! `coldboot run`: expand a plan (or scenarios × targets) into pairs, run them, and
//! exit with what the verdicts say about the plan.

use std::path::{Path, PathBuf};
use std::time::Duration;

use coldboot::error::{exit, usage};
use coldboot::run::{RunOptions, run_pairs};
use coldboot::scenario::{self, RunPair};
use coldboot::target::{BASE_CMDLINE, Recipe, TargetSpec, nix};
use coldboot::vm::{Accel, AccelChoice, VmConfig, argv};

use crate::cli::RunArgs;

/// Run and report. 0: every verdict as planned; 1: one is not; 3: an infra error.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let flags = args
        .targets
        .iter()
        .map(|t| scenario::plan::parse_target_flag(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sections: Vec<scenario::Section> = Vec::new();
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
    if let Some(s) = &args.shard {
        let which = scenario::parse_shard(s)?;
        pairs = scenario::shard(&pairs, which);
    }

    let evidence = args
        .evidence
        .clone()
        .unwrap_or_else(|| default_evidence_dir(&plan_name));
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
        ssh_timeout: Duration::from_secs(args.ssh_timeout),
    };
    std::fs::create_dir_all(&evidence)?;
    let command = std::iter::once("coldboot".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    coldboot::evidence::write_invocation(&evidence, &command, &sections)?;
    let reports = run_pairs(pairs, &opts).await?;
    coldboot::evidence::write_reports(&evidence, &reports)?;
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
                for argv in nix::prepare_commands(&t, &nix::wrapper_dir()) {
                    println!("  $ {}", nix::shell_words(&argv));
                }
                println!("  (the runner is OUT/bin/run-*-vm of the first `nix build` output)");
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
