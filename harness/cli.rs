//! The command line: the contract that users, tests and CI scripts rely on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Cold-boot a throwaway VM, watch systemd, and give a verdict backed by evidence.
#[derive(Debug, Parser)]
#[command(name = "coldboot", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// What this host can do: QEMU, accelerator (probed), mmdebstrap, nix, disk.
    Doctor(DoctorArgs),
    /// Build or reuse cached images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Cold-boot TARGET, wait for the guest, run CMD in it (or open a shell), tear down.
    Boot(BootArgs),
    /// Run scenarios (from a plan, or given) against targets and give verdicts.
    Run(RunArgs),
    /// Static wait-cycle analysis of TARGET's unit files and declared gates, without
    /// booting. Exit 0: no cycle; 1: a cycle; 2: bad input.
    Analyze {
        /// recipe:DIR[?K=V&...] or nix:FLAKEREF#ATTR.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Validate scenario and plan files without booting.
    Check {
        /// Scenario or plan files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compare two bundles of a plan: verdicts that changed, units whose time to active
    /// (p50 or p95) got worse. Exit 0: no regression; 1: a regression; 2: bad input.
    Compare {
        /// The older bundle (the previous night's).
        old: PathBuf,
        /// The newer bundle.
        new: PathBuf,
        /// A time counts as worse when it grew by more than this percentage...
        #[arg(long, value_name = "PCT", default_value_t = 20.0)]
        threshold_pct: f64,
        /// ...and by more than this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
        threshold_secs: f64,
        /// Where to write compare.md and compare.json (default: the NEW bundle).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Benchmark: run plans (default M1+M2) in a watched child process and print one table
    /// of figures (verdict latency, deadlock verdict, overhead, resolve, wall, memory)
    /// with their targets; writes bench.md and bench.json. Exit 1 when a target is missed.
    Bench(BenchArgs),
    /// Print the JSON Schema of scenario and plan files, for editors.
    Schema,
    /// Render report.md, report.json and junit.xml again from an evidence bundle, or
    /// merge the bundles of one plan's shards into one (`--into DIR`).
    Report {
        /// The bundle folder that `coldboot run --evidence` wrote; several with --into.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Merge the DIRs (shards of one plan, one harness version) into this new folder.
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
        /// Also write report.md to FILE, its links rebased onto the bundle (REPORT.md).
        #[arg(long, value_name = "FILE")]
        markdown_to: Option<PathBuf>,
    },
    /// Remove what killed runs left behind (overlays, QMP sockets, `coldboot boot`'s run
    /// folders), saying what; never anything a live process owns. `coldboot run` does
    /// the same when it starts. With --images, also cached images and root filesystems
    /// that no run used for --unused-for.
    Gc(GcArgs),
}

/// `coldboot gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also remove cached images and root filesystems that no run used for
    /// --unused-for (never one a running VM boots from, nor one being built). An
    /// overlay kept with --keep needs its image: it cannot boot once that is removed.
    #[arg(long)]
    pub images: bool,
    /// With --images: how long an entry must have gone unused, such as 168h (the
    /// default, a week) or 24h; at least 1h.
    #[arg(long, value_name = "DURATION", default_value = "168h", requires = "images",
          value_parser = parse_unused_for)]
    pub unused_for: std::time::Duration,
    /// With --images: say what would be removed, and remove nothing.
    #[arg(long, requires = "images")]
    pub dry_run: bool,
}

/// `--unused-for`: a duration of at least [`coldboot::targets::evict::SHORTEST`].
fn parse_unused_for(text: &str) -> Result<std::time::Duration, String> {
    let d = coldboot::scenario::duration::parse_duration(text)?;
    let shortest = coldboot::targets::evict::SHORTEST;
    if d < shortest {
        return Err(format!(
            "{text:?} is shorter than {}h: a run resolves its image before its VM's overlay \
             exists, and a shorter limit could remove it in between",
            shortest.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// `coldboot run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A plan: targets and (target, scenario, expected outcome) entries. Repeatable:
    /// several plans run as one, a pair that two plans share running once.
    #[arg(long = "plan", value_name = "PLAN")]
    pub plans: Vec<PathBuf>,
    /// A target as NAME=TARGET: overrides a plan's target, or names one for SCENARIO files.
    #[arg(long = "target", value_name = "NAME=TARGET")]
    pub targets: Vec<String>,
    /// Scenario files to run on every --target (each expected to pass).
    pub scenarios: Vec<PathBuf>,
    /// The evidence folder (default: evidence/<UTC timestamp>-<plan>/).
    #[arg(long, value_name = "DIR")]
    pub evidence: Option<PathBuf>,
    /// How many pairs run at once (each is one VM).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Run only shard I of N (1-based), a stable subset, to split a job across runners.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Cold-boot each pair N times (ids PAIR/rep-1 .. PAIR/rep-N): the report gives each
    /// unit's time to active as p50 and p95 and flags verdicts that differ (flaky).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Keep overlays after the run.
    #[arg(long)]
    pub keep: bool,
    /// Print what would run, and run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Map infrastructure errors to exit 125, so `git bisect run` skips the revision.
    #[arg(long)]
    pub bisect: bool,
    /// How long to wait for SSH after each boot.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub ssh_timeout: u64,
    /// Also poll `systemctl is-active` every second on a session of its own and record
    /// when each awaited unit was first seen settled (baseline-boot-N.json): the naive
    /// baseline `coldboot bench` compares the runner with.
    #[arg(long, hide = true)]
    pub baseline_poll: bool,
    /// Bound the whole run (image builds included), e.g. 30m or 1h30m: past it every VM
    /// is stopped, the bundle is written with what ran so far, and the exit code is 3.
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// `coldboot doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub vm: VmArgs,
}

/// `coldboot image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build RECIPE_DIR (or reuse the cached image); prints its id and path.
    Build {
        /// A recipe folder, e.g. vm-images/debian-stock.
        recipe_dir: PathBuf,
        /// Choose a variant value, e.g. --variant gate=self. Repeatable.
        #[arg(long = "variant", value_name = "K=V")]
        variants: Vec<String>,
    },
}

/// Options shared by every command that starts QEMU.
#[derive(Debug, Args, Clone)]
pub struct VmArgs {
    /// Accelerator: auto probes KVM with a tiny boot and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto, env = "COLDBOOT_ACCEL")]
    pub accel: AccelArg,

    /// Virtual CPUs per guest. Default: 2, or under TCG the host's cores shared among
    /// the guests that run at once (one each for two guests on two cores)
    #[arg(long, value_name = "N", env = "COLDBOOT_VCPUS",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: Option<u32>,
}

/// `--accel` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AccelArg {
    /// Probe KVM, fall back to TCG.
    Auto,
    /// KVM only.
    Kvm,
    /// TCG (software emulation) only.
    Tcg,
}

/// `coldboot boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// recipe:DIR[?K=V&...], image:PATH or nix:FLAKEREF#ATTR.
    pub target: String,
    /// Mask UNIT for this boot only (systemd.mask=). Repeatable.
    #[arg(long = "mask", value_name = "UNIT")]
    pub masks: Vec<String>,
    /// Extra kernel command-line argument. Repeatable.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
    /// Keep the run folder and its overlay disk afterwards.
    #[arg(long)]
    pub keep: bool,
    /// How long to wait for SSH after QEMU starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 180)]
    pub ssh_timeout: u64,
    /// Where run folders go (default: a fresh folder under the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VmArgs,
    /// Command to run in the guest; without one, an interactive shell when stdin is a
    /// terminal. One word is run by the guest's shell as written (`-- 'a | b'`); several
    /// words are each quoted, so the program gets them as typed.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl From<AccelArg> for coldboot::vm::Accel {
    fn from(a: AccelArg) -> Self {
        match a {
            AccelArg::Auto => coldboot::vm::Accel::Auto,
            AccelArg::Kvm => coldboot::vm::Accel::Kvm,
            AccelArg::Tcg => coldboot::vm::Accel::Tcg,
        }
    }
}

/// `coldboot bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Plans to run (default: the M1 and M2 plans).
    #[arg(long = "plan", value_name = "PLAN")]
    pub plans: Vec<PathBuf>,
    /// VMs at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Where the bundle, bench.md and bench.json go (default: a new folder under
    /// evidence/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How many times to resolve each cached target for the warm-resolve figure.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub resolves: u32,
    /// Accelerator, passed on to `coldboot run`.
    #[arg(long, default_value = "auto", env = "COLDBOOT_ACCEL")]
    pub accel: String,
}
