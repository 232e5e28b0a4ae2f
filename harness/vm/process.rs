//! Starting and ending QEMU processes.
//!
//! Every QEMU runs in its own process group (so one signal ends it and anything it forks)
//! and carries a parent-death signal (so it dies with the harness even when the harness is
//! killed with SIGKILL and no destructor runs).

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use tokio::process::{Child, Command};

/// Spawn `argv[0]` with `argv[1..]` and the extra environment `env` in `cwd`, stdin
/// closed, stdout and stderr piped. A NixOS runner script `exec`s QEMU, so the PID and
/// the process group are QEMU's, and the parent-death signal survives the exec.
///
/// Call this from async code running on a runtime thread, never from `spawn_blocking`:
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
/// process, and blocking-pool threads exit after a few idle seconds, which would kill a
/// healthy QEMU. Runtime worker threads (and the main thread of a current-thread
/// runtime) live as long as the runtime.
pub fn spawn(argv: &[String], env: &[(String, String)], cwd: &Path) -> Result<Child> {
    let Some((program, args)) = argv.split_first() else {
        return Err(crate::error::infra("empty QEMU command line"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure only makes one async-signal-safe system call (prctl) and
    // allocates nothing, as required between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|e| {
        crate::error::infra(format!(
            "cannot start {program} (is QEMU installed? apt-get install qemu-system-x86 qemu-utils): {e}"
        ))
    })
}

/// The process id of a spawned child, while it has not been reaped.
pub fn pid_of(child: &Child) -> Option<Pid> {
    child.id().and_then(|id| Pid::from_raw(id as i32))
}

/// Send SIGKILL to the process group led by `pid`, and to `pid` itself in case it left
/// the group. Errors (already gone) are ignored: the goal is that it is not running.
pub fn kill_group(pid: Pid) {
    let _ = kill_process_group(pid, Signal::KILL);
    let _ = kill_process(pid, Signal::KILL);
}

/// Kill the child's process group and wait (up to `limit`) until the child is reaped.
///
/// Synchronous on purpose: it runs from `Drop`. SIGKILL cannot be caught, so the wait is
/// normally a few milliseconds. If the limit passes, tokio reaps the child later.
pub fn kill_and_reap(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    if let Some(pid) = pid_of(child) {
        kill_group(pid);
    }
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}
