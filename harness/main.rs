//! The `coldboot` binary: parse the command line, run one command, map the outcome to an
//! exit code, and make sure nothing it started outlives it.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;
use coldboot::error;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, ImageCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    install_panic_cleanup();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::exit::INFRA as u8);
        }
    };
    let code = runtime.block_on(run_until_signal(cli));
    // Blocking SSH calls may still be waiting on a guest that is gone; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // Belt and braces: whatever a command left registered is ended here, by PID.
    coldboot::vm::registry::cleanup_all();
    coldboot::vm::owner::release();
    ExitCode::from(code as u8)
}

/// Run the command, but stop at SIGINT or SIGTERM. Dropping the command's future drops
/// its VMs, and their `Drop` kills QEMU and removes the overlays.
async fn run_until_signal(cli: Cli) -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            eprintln!("error: cannot install signal handlers");
            return error::exit::INFRA;
        }
    };
    tokio::select! {
        result = dispatch(cli) => match result {
            Ok(code) => code,
            Err(err) => report(&err),
        },
        _ = int.recv() => {
            coldboot::vm::registry::cleanup_all();
            eprintln!("interrupted: stopped every VM this run started");
            cmd::run::write_interrupted_bundle("SIGINT");
            130
        }
        _ = term.recv() => {
            coldboot::vm::registry::cleanup_all();
            eprintln!("terminated: stopped every VM this run started");
            cmd::run::write_interrupted_bundle("SIGTERM");
            143
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Doctor(args) => cmd::doctor::run(&args).await,
        Command::Image(ImageCommand::Build {
            recipe_dir,
            variants,
        }) => cmd::image::build(&recipe_dir, &variants).await,
        Command::Boot(args) => cmd::boot::run(args).await,
        Command::Run(args) => {
            let bisect = args.bisect;
            let result = cmd::run::run(args).await;
            // `git bisect run` skips a revision on 125: an infra error tested nothing.
            match result {
                Ok(error::exit::INFRA) if bisect => Ok(125),
                Err(e) if bisect && error::exit_code(&e) == error::exit::INFRA => {
                    report(&e);
                    Ok(125)
                }
                other => other,
            }
        }
        Command::Analyze { target, json } => cmd::analyze::run(&target, json).await,
        Command::Check { files } => cmd::check::run(&files),
        Command::Bench(args) => cmd::bench::run(args).await,
        Command::Compare {
            old,
            new,
            threshold_pct,
            threshold_secs,
            out,
        } => cmd::compare::run(&old, &new, threshold_pct, threshold_secs, out),
        Command::Report {
            dirs,
            into,
            markdown_to,
        } => {
            let mut missing = 0;
            let dir = match (into, dirs.as_slice()) {
                (Some(into), _) => {
                    let merged = coldboot::evidence::merge::merge(&dirs, &into)?;
                    eprintln!(
                        "merged {} run folders from {} bundles into {}",
                        merged.folders.len(),
                        dirs.len(),
                        into.display()
                    );
                    missing = merged.missing.len();
                    if !merged.missing.is_empty() {
                        eprintln!(
                            "not run by any shard ({}): {}",
                            merged.missing.len(),
                            merged.missing.join(", ")
                        );
                    }
                    into
                }
                (None, [one]) => one.clone(),
                (None, _) => {
                    return Err(coldboot::error::usage(
                        "several bundles given: merge them with --into DIR",
                    ));
                }
            };
            coldboot::evidence::report_command(&dir)?;
            if let Some(out) = markdown_to {
                coldboot::evidence::write_markdown_to(&dir, &out)?;
            }
            // A merge that lacks pairs of the plan is not a clean run: those were not checked.
            Ok(if missing > 0 { 1 } else { 0 })
        }
        Command::Gc(args) => cmd::gc::run(&args),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&coldboot::scenario::json_schema())?
            );
            Ok(0)
        }
    }
}

/// Print an error with its causes and return its exit code.
fn report(err: &anyhow::Error) -> i32 {
    let code = error::exit_code(err);
    let kind = if code == error::exit::USAGE {
        "error"
    } else {
        "infrastructure error"
    };
    eprintln!("{kind}: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    code
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "coldboot=debug,info",
        _ => "coldboot=trace,debug",
    };
    let filter =
        EnvFilter::try_from_env("COLDBOOT_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A panic anywhere still ends every QEMU by PID before the process goes away.
fn install_panic_cleanup() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        coldboot::vm::registry::cleanup_all();
        default(info);
    }));
}
