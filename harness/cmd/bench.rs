//! `coldboot bench`: run plans as `coldboot run` does, in a child process watched from
//! outside, and print one table of figures measured in that same run on this machine.
//!
//! The run is a child process so that its CPU time and memory are its own: /proc is
//! sampled for the harness and for each QEMU it starts, and nothing in the harness is
//! instrumented for the benchmark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coldboot::error::{exit, infra, usage};
use coldboot::evidence::bench::{self, Figure};
use coldboot::evidence::load_bundle;
use coldboot::targets::{self, PrepareOptions, TargetSpec};

use crate::cli::BenchArgs;

/// What /proc said about one process, at its last sample.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    /// Peak resident set (VmHWM), KiB.
    hwm_kib: u64,
    /// User + system CPU, seconds.
    cpu_secs: f64,
}

/// /proc's clock tick: USER_HZ is part of Linux's user ABI, 100 on every architecture
/// the harness runs on.
const USER_HZ: f64 = 100.0;

impl Usage {
    fn max(self, other: Usage) -> Usage {
        Usage {
            hwm_kib: self.hwm_kib.max(other.hwm_kib),
            cpu_secs: self.cpu_secs.max(other.cpu_secs),
        }
    }
}

fn sample(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / USER_HZ;
    Some(Usage {
        hwm_kib,
        cpu_secs: cpu,
    })
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn is_qemu(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().starts_with("qemu-system"))
        .unwrap_or(false)
}

/// Run the benchmark. 0 when every target is met, 1 when one is missed, 2 or 3 as
/// `coldboot run`.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let (plans, targets) = plans_and_targets(&args)?;
    let out = out_dir(&args)?;
    let bundle_dir = out.join("bundle");

    // Build (or find) every image first, so the plan's wall time is the plan's.
    eprintln!(
        "resolving {} target(s) (building what is not cached)",
        targets.len()
    );
    for t in &targets {
        targets::prepare(&TargetSpec::parse(t)?, &PrepareOptions::default()).await?;
    }
    let watched = run_watched(&args, &plans, &bundle_dir).await?;
    // Warm resolves: every image is cached now.
    let resolves = warm_resolves(&targets, args.resolves).await?;

    let b = load_bundle(&bundle_dir)?;
    let figures = figures(&args, &bundle_dir, &b, &watched, &resolves);
    let context = context(&bundle_dir, &b, watched.code);
    let phases = bench::phases(&bundle_dir, &b);
    let md = bench::markdown(&figures, &context) + &bench::phases_markdown(&phases);
    write(&out.join("bench.md"), md.as_bytes())?;
    let phase_stats: Vec<serde_json::Value> = phases
        .iter()
        .map(|(name, samples)| {
            serde_json::json!({
                "phase": name.trim(),
                "stats": coldboot::evidence::timing::Stats::of(samples),
            })
        })
        .collect();
    let json = serde_json::json!({"context": context, "figures": figures, "phases": phase_stats});
    write(
        &out.join("bench.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    print!("{md}");
    let missed = figures.iter().any(|f| f.met == Some(false));
    Ok(if missed || watched.code != 0 {
        exit::MISMATCH
    } else {
        exit::OK
    })
}

/// The plans to run (M1 and M2 unless named) and every target they name, once each.
fn plans_and_targets(args: &BenchArgs) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let plans = if args.plans.is_empty() {
        vec![
            PathBuf::from("scenarios/plans/m1.yaml"),
            PathBuf::from("scenarios/plans/m2.yaml"),
        ]
    } else {
        args.plans.clone()
    };
    let mut targets = Vec::new();
    for p in &plans {
        let loaded = coldboot::scenario::load_plan(p)?;
        for t in loaded.plan.targets.values() {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
    }
    Ok((plans, targets))
}

/// The benchmark's own new folder (`--out`, or a dated one under `evidence/`).
fn out_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let out = args.out.clone().unwrap_or_else(|| {
        let now = coldboot::run::record::unix_now() as u64;
        PathBuf::from("evidence").join(format!("{}-bench", coldboot::evidence::utc_stamp(now)))
    });
    if out.exists() {
        return Err(usage(format!(
            "--out {}: exists; the benchmark writes a new folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(&out)
        .map_err(|e| infra(format!("cannot create {}: {e}", out.display())))?;

    Ok(out)
}

/// What the plans' run was seen to do from outside.
struct Watched {
    /// `coldboot run`'s exit code (0 or 1; 2 and over are errors).
    code: i32,
    /// Its wall time, seconds.
    wall: f64,
    /// The harness's peak memory and CPU.
    harness: Usage,
    /// Each QEMU's, by pid.
    qemus: BTreeMap<u32, Usage>,
}

/// Run the plans as `coldboot run --baseline-poll` in a child process, sampling /proc
/// for it and its QEMUs every 250 ms until it exits.
async fn run_watched(
    args: &BenchArgs,
    plans: &[PathBuf],
    bundle_dir: &Path,
) -> anyhow::Result<Watched> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("run");
    for p in plans {
        cmd.arg("--plan").arg(p);
    }
    cmd.args(["--jobs", &args.jobs.to_string(), "--accel", &args.accel])
        .arg("--baseline-poll")
        .arg("--evidence")
        .arg(bundle_dir)
        .kill_on_drop(true);
    eprintln!(
        "running the plans: {}",
        plans
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| infra(format!("cannot start {}: {e}", exe.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| infra("coldboot run exited at once"))?;
    let mut harness = Usage::default();
    let mut qemus: BTreeMap<u32, Usage> = BTreeMap::new();
    let status = loop {
        // A process on its way out (a zombie) shows no VmHWM: keep the largest figures.
        if let Some(u) = sample(pid) {
            harness = harness.max(u);
        }
        for c in children(pid) {
            if is_qemu(c)
                && let Some(u) = sample(c)
            {
                let e = qemus.entry(c).or_default();
                *e = e.max(u);
            }
        }
        tokio::select! {
            s = child.wait() => break s?,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let code = status.code().unwrap_or(3);
    if code >= 2 {
        return Err(infra(format!(
            "coldboot run exited {code}; its bundle is in {}",
            bundle_dir.display()
        )));
    }

    Ok(Watched {
        code,
        wall,
        harness,
        qemus,
    })
}

/// `target::prepare` on cached images, `n` times per target, seconds each.
async fn warm_resolves(targets: &[String], n: u32) -> anyhow::Result<Vec<f64>> {
    // Warm resolves: every image is cached now.
    let mut resolves = Vec::new();
    for t in targets {
        let spec = TargetSpec::parse(t)?;
        for _ in 0..n {
            let t0 = Instant::now();
            targets::prepare(&spec, &PrepareOptions::default()).await?;
            resolves.push(t0.elapsed().as_secs_f64());
        }
    }

    Ok(resolves)
}

/// Every figure of the table, from the bundle and what was watched.
fn figures(
    args: &BenchArgs,
    bundle_dir: &Path,
    b: &coldboot::evidence::Bundle,
    watched: &Watched,
    resolves: &[f64],
) -> Vec<Figure> {
    let (harness, wall) = (watched.harness, watched.wall);
    let (systemd, http) = bench::latencies(b);
    let (live, replaying) = bench::latencies_live(bundle_dir, b);
    let polls = read_polls(bundle_dir, b);
    let (ours, naive) = bench::baseline_pairs(b, &polls);
    let ratio = match (
        coldboot::evidence::timing::Stats::of(&ours),
        coldboot::evidence::timing::Stats::of(&naive),
    ) {
        (Some(o), Some(n)) if o.p50 > 0.0 => format!(
            "{:.1}× coldboot's median on the same {} changes",
            n.p50 / o.p50,
            ours.len()
        ),
        _ => "no change seen by both".to_string(),
    };
    let overheads = bench::overheads(b);
    let guest = bench::guest_times(b);
    let floor: f64 = guest.iter().sum::<f64>() / f64::from(args.jobs);
    let qemu_hwm: Vec<f64> = watched
        .qemus
        .values()
        .map(|u| u.hwm_kib as f64 / 1024.0)
        .collect();
    let qemu_cpu: f64 = watched.qemus.values().map(|u| u.cpu_secs).sum();
    vec![
        bench::figure_p95(
            "verdict latency, unit and journal decisions",
            &systemd,
            "s",
            ("median ≤ 0.2 s, p95 ≤ 0.5 s", 0.2, 0.5),
            "decided_at − the guest's timestamp of the change, every unit/journal/order outcome with both, none excluded",
        ),
        bench::figure(
            "  of which: changes after the journal stream caught up",
            &live,
            "s",
            Some(("median ≤ 0.2 s", 0.2)),
            "the same, for changes the harness watched live",
        ),
        bench::figure(
            "  of which: changes while the stream replayed the boot",
            &replaying,
            "s",
            None,
            "changes made before the watcher was live (SSH up → caught up); bounded by that start",
        ),
        bench::figure(
            "verdict latency, HTTP probes",
            &http,
            "s",
            None,
            "reported apart: a probe answers when it answers",
        ),
        bench::figure(
            "naive baseline: ssh systemctl is-active every 1 s",
            &naive,
            "s",
            None,
            &format!(
                "a poller on its own session beside the runner, the same unit changes; {ratio}"
            ),
        ),
        bench::figure(
            "observation start, after PID 1 entered userspace",
            &bench::observation_starts(bundle_dir, b),
            "s",
            Some(("median ≤ 3 s", 3.0)),
            "the recorder's relay said hello − UserspaceTimestampMonotonic, each pair's first boot (recorder-boot-1.jsonl)",
        ),
        bench::figure(
            "deadlock verdict after the cycle forms",
            &bench::cycle_named(b),
            "s",
            Some(("≤ 15 s", 15.0)),
            "wait_cycle outcome: decided_at − formed (guest clock when job ids allow)",
        ),
        bench::figure(
            "harness overhead per pair",
            &overheads,
            "s",
            Some(("median ≤ 3 s", 3.0)),
            "pair wall time − the guest's time to its last awaited change",
        ),
        bench::figure(
            "warm image resolve",
            resolves,
            "s",
            Some(("median ≤ 1 s", 1.0)),
            &format!(
                "target::prepare on cached images, {} per target",
                args.resolves
            ),
        ),
        bench::figure(
            "plan wall time",
            &[wall],
            "s",
            Some(("≤ 180 s", 180.0)),
            &format!(
                "{} pairs, --jobs {}; floor (sum of guests' times to their last change / jobs): {floor:.1} s",
                b.pairs.len(),
                args.jobs
            ),
        ),
        bench::figure(
            "plan wall time against its floor",
            &[wall / floor],
            "×",
            Some(("≤ 1.10 ×", 1.10)),
            "plan wall time / the floor above (issue 19's target)",
        ),
        bench::figure(
            "harness peak RSS",
            &[harness.hwm_kib as f64 / 1024.0],
            "MiB",
            Some(("≤ 50 MiB", 50.0)),
            &format!("VmHWM of `coldboot run`; CPU {:.1} s", harness.cpu_secs),
        ),
        bench::figure(
            "QEMU peak RSS, per VM",
            &qemu_hwm,
            "MiB",
            None,
            &format!("VmHWM of each QEMU, sampled every 250 ms; CPU {qemu_cpu:.0} s in all"),
        ),
    ]
}

/// The table's context lines: the machine, the accelerator, the bundle, the verdicts.
fn context(
    bundle_dir: &Path,
    b: &coldboot::evidence::Bundle,
    code: i32,
) -> BTreeMap<String, String> {
    let mut context = BTreeMap::new();
    context.insert(
        "machine".to_string(),
        format!(
            "{} cores, {}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        ),
    );
    context.insert(
        "accelerator".to_string(),
        coldboot::evidence::facts::accelerator(b)
            .unwrap_or("unknown")
            .to_string(),
    );
    context.insert("bundle".to_string(), bundle_dir.display().to_string());
    context.insert(
        "plan verdicts".to_string(),
        format!("coldboot run exited {code} (0: every verdict as planned)"),
    );
    context
}

/// Every `baseline-boot-N.json` of the bundle: run folder → per boot, unit → seconds.
fn read_polls(
    dir: &Path,
    b: &coldboot::evidence::Bundle,
) -> BTreeMap<String, Vec<BTreeMap<String, f64>>> {
    let mut out = BTreeMap::new();
    for p in &b.pairs {
        let mut boots = Vec::new();
        for f in p.files.iter().filter(|f| f.starts_with("baseline-boot-")) {
            let Ok(text) = std::fs::read_to_string(dir.join(&p.folder).join(f)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let seen = v["seen"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(u, s)| Some((u.clone(), s["at_secs"].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            boots.push(seen);
        }
        out.insert(p.folder.clone(), boots);
    }
    out
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    coldboot::evidence::bundle::write_atomic(path, bytes)
        .map_err(|e| infra(format!("cannot write {}: {e:#}", path.display())))
}
