//! `coldboot boot`: cold-boot a target, wait for SSH, run one command (or a shell), tear down.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use coldboot::error::usage;
use coldboot::guest::SshKey;
use coldboot::progress::Waiting;
use coldboot::run::boot;
use coldboot::scenario::{BootOptions, UnitName};
use coldboot::targets::{self, PrepareOptions, Progress, cache};
use coldboot::vm::accel;

use crate::cli::BootArgs;

/// Boot, run, report timings; the exit code is the guest command's own.
pub async fn run(args: BootArgs) -> anyhow::Result<i32> {
    // Bad input is exit 2 naming the target, before anything is built or started.
    let spec = targets::check::check_str("boot target", &args.target)?;
    let waiting = Waiting::new(format!("preparing {}", args.target));
    let opts = PrepareOptions {
        progress: Progress::new(waiting.reporter()),
        ..PrepareOptions::default()
    };
    let boot_spec = targets::prepare(&spec, &opts).await?;

    let cache_root = cache::cache_root(None)?;
    waiting.set("choosing the accelerator");
    let probe_kernel = boot::require_kernel(&boot_spec)?;
    let accel = accel::choose(args.vm.accel.into(), probe_kernel, &cache_root).await?;
    tracing::info!("accelerator: {} ({})", accel.accel, accel.reason);

    // One guest: the same choice `coldboot run --jobs 1` makes.
    let host_cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let vcpus = coldboot::vm::config::vcpus(args.vm.vcpus, accel.accel, host_cpus, 1);

    let run_dir = match &args.run_dir {
        Some(d) => d.clone(),
        None => default_run_dir(&cache_root)?,
    };
    let key = SshKey::generate()?.require_host_key(boot::requires_host_key(&boot_spec));
    let mask = args
        .masks
        .iter()
        .map(|m| UnitName::parse(m).map_err(|why| usage(format!("--mask {m:?}: {why}"))))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let boot_opts = BootOptions {
        mask,
        kernel_args: args.kernel_args.clone(),
        ..BootOptions::default()
    };
    let mut config = boot::vm_config(
        &boot_spec,
        &key,
        &boot_opts,
        accel,
        run_dir.clone(),
        Vec::new(),
        args.keep,
    )?;
    config.set_vcpus(vcpus);

    waiting.set("starting QEMU");
    let recording = config.recorder;
    let vm = coldboot::vm::Vm::start(config).await?;
    // The recorder must be read from the start: its relay's writes wait for a reader.
    // It probes the declared gates until SSH answers, as in a run (so the boot pays what
    // a run's boot pays).
    let recorder = recording
        .then(|| coldboot::guest::recorder::Recorder::start(vm.run_dir(), &boot_spec.gates));
    waiting.set(format!(
        "waiting for SSH on {} (accelerator {})",
        vm.ssh_addr(),
        vm.accel().accel
    ));
    let connected = boot::connect(&vm, &key, Duration::from_secs(args.ssh_timeout)).await;
    let (guest, to_ssh) = match connected {
        Ok(c) => c,
        Err(e) => {
            drop(waiting);
            eprintln!("serial log kept at {}", vm.serial_log_path().display());
            return Err(e);
        }
    };
    drop(waiting);
    if let Some((recorder, _)) = &recorder {
        recorder.stop_probes();
    }
    eprintln!(
        "boot: QEMU start to SSH in {:.1}s ({}, {})",
        to_ssh.as_secs_f64(),
        vm.accel().accel,
        vm.ssh_addr()
    );
    eprintln!("boot: {}", guest.host_key().describe());

    let code = if let Some(cmd) = coldboot::guest::shell::command_line(&args.command) {
        // One word is a shell string (`-- 'systemctl status x | head'`); several keep
        // their argv (`-- sh -c 'sleep 1; true'`), unlike ssh, which joins them.
        let out = guest.exec(&cmd).await?;
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        out.status
    } else if std::io::stdin().is_terminal() {
        guest.interactive_shell().await?
    } else {
        eprintln!("no command given and stdin is not a terminal: nothing to run");
        0
    };

    match boot::guest_startup_line(&guest).await {
        Some(line) => eprintln!("boot: guest says: {line}"),
        None => eprintln!("boot: guest's systemd-analyze has no figure (boot not finished)"),
    }
    if let Some((recorder, _task)) = &recorder {
        let qemu_started = Instant::now() - vm.uptime();
        eprintln!("boot: {}", boot::recorder_summary(recorder, qemu_started));
    }
    eprintln!("serial log: {}", vm.serial_log_path().display());
    if args.keep {
        eprintln!("kept: {}", vm.overlay_path().display());
    }
    drop(guest);
    vm.shutdown();
    Ok(code)
}

/// A fresh folder for this boot's serial log and overlay, under the cache's `runs/`.
fn default_run_dir(cache_root: &std::path::Path) -> anyhow::Result<PathBuf> {
    let runs = cache_root.join("runs");
    std::fs::create_dir_all(&runs)?;
    let dir = tempfile::Builder::new()
        .prefix("boot-")
        .tempdir_in(&runs)?
        .keep();
    Ok(dir)
}
