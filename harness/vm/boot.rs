//! One boot of a VM: a QEMU process, its console and stderr capture, and its QMP session.
//!
//! A [`Boot`] owns its QEMU: dropping it kills the process group and reaps the process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use rustix::process::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::argv::QMP_SOCKET_FILE;
use super::console::{self, ConsoleState};
use super::process;
use super::qmp::{HostForward, Qmp};
use crate::error::infra;

/// How long QEMU may take to open its QMP socket.
const QMP_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How much of QEMU's stderr is kept in memory for error messages.
const STDERR_KEEP: usize = 64 * 1024;

/// How a QEMU process ended on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuExit {
    /// Which boot of the VM (1 = first).
    pub boot_index: u32,
    /// The exit status as text, e.g. "exit status: 1".
    pub status: String,
    /// What QEMU wrote on stderr (the first 64 KiB).
    pub stderr: String,
}

impl QemuExit {
    /// The infrastructure error for a QEMU that exited while it was expected to run.
    pub fn to_error(&self) -> anyhow::Error {
        let stderr = self.stderr.trim();
        let quoted = if stderr.is_empty() {
            " and wrote nothing on stderr".to_string()
        } else {
            format!(":\n{stderr}")
        };
        infra(format!(
            "QEMU exited unexpectedly during boot {} ({}){quoted}",
            self.boot_index, self.status
        ))
    }
}

/// A running (or just ended) QEMU and the channels that watch it.
pub(crate) struct Boot {
    child: Arc<Mutex<Child>>,
    pub(crate) pid: Pid,
    pub(crate) index: u32,
    pub(crate) started_at: SystemTime,
    pub(crate) started: Instant,
    pub(crate) serial_log: PathBuf,
    pub(crate) forwards: Vec<HostForward>,
    pub(crate) qmp: Option<Qmp>,
    pub(crate) console: watch::Receiver<ConsoleState>,
    pub(crate) exit: watch::Receiver<Option<QemuExit>>,
    io_task: JoinHandle<()>,
    qmp_socket: PathBuf,
    killed: bool,
}

impl Boot {
    /// Start QEMU with `argv` in `run_dir`, capture its console into `serial-INDEX.log`,
    /// connect QMP and read the host ports. QEMU is killed if any step fails.
    ///
    /// Must run on a runtime thread, not in `spawn_blocking` (see [`process::spawn`]).
    pub(crate) async fn start(
        argv: &[String],
        env: &[(String, String)],
        run_dir: &Path,
        index: u32,
        expected_guest_ports: &[u16],
        on_pid: impl FnOnce(Pid),
    ) -> Result<Boot> {
        let qmp_socket = run_dir.join(QMP_SOCKET_FILE);
        let _ = std::fs::remove_file(&qmp_socket);
        let _ = std::fs::remove_file(run_dir.join(super::argv::RECORDER_SOCKET_FILE));
        let _ = std::fs::remove_file(run_dir.join(super::argv::NETWATCH_SOCKET_FILE));
        let serial_log = run_dir.join(format!("serial-{index}.log"));
        let stderr_log = run_dir.join(format!("qemu-stderr-{index}.log"));

        let started = Instant::now();
        let started_at = SystemTime::now();
        let mut child = process::spawn(argv, env, run_dir)?;
        let Some(pid) = process::pid_of(&child) else {
            return Err(infra("QEMU exited before its PID could be read"));
        };
        on_pid(pid);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let child = Arc::new(Mutex::new(child));

        let (console_tx, console_rx) = watch::channel(ConsoleState::default());
        let (exit_tx, exit_rx) = watch::channel(None);
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let io_task = tokio::spawn(watch_process(
            Arc::clone(&child),
            index,
            stdout.map(|out| (out, serial_log.clone(), console_tx)),
            stderr.map(|err| (err, stderr_log)),
            stderr_text,
            exit_tx,
        ));

        let mut boot = Boot {
            child,
            pid,
            index,
            started_at,
            started,
            serial_log,
            forwards: Vec::new(),
            qmp: None,
            console: console_rx,
            exit: exit_rx,
            io_task,
            qmp_socket,
            killed: false,
        };
        let qmp = boot.connect_qmp().await?;
        let forwards = qmp.host_forwards().await?;
        for port in expected_guest_ports {
            if !forwards.iter().any(|f| f.guest_port == *port) {
                return Err(infra(format!(
                    "QEMU reports no host forward to guest port {port} (info usernet: {forwards:?})"
                )));
            }
        }
        boot.forwards = forwards;
        boot.qmp = Some(qmp);
        Ok(boot)
    }

    /// Wait for QEMU's QMP socket and connect, failing early if QEMU exits.
    async fn connect_qmp(&self) -> Result<Qmp> {
        let deadline = Instant::now() + QMP_CONNECT_TIMEOUT;
        let mut last_error = None;
        loop {
            if let Some(exit) = self.exit.borrow().clone() {
                return Err(exit.to_error());
            }
            if self.qmp_socket.exists() {
                match Qmp::connect(&self.qmp_socket).await {
                    Ok(qmp) => return Ok(qmp),
                    Err(e) => last_error = Some(e),
                }
            }
            if Instant::now() >= deadline {
                let why = last_error.map_or("the socket never appeared".to_string(), |e| {
                    format!("{e:#}")
                });
                return Err(infra(format!(
                    "QEMU did not open its QMP socket {} within {}s: {why}",
                    self.qmp_socket.display(),
                    QMP_CONNECT_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Whether the QEMU process still exists (not yet reaped).
    pub(crate) fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.try_wait(), Ok(None))
    }

    /// Kill QEMU's process group, reap it and stop watching. Idempotent.
    pub(crate) fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        self.qmp = None;
        self.io_task.abort();
        {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            process::kill_and_reap(&mut child, Duration::from_secs(5));
        }
        // QEMU removes its sockets only on a clean exit.
        let _ = std::fs::remove_file(&self.qmp_socket);
        if let Some(dir) = self.qmp_socket.parent() {
            let _ = std::fs::remove_file(dir.join(super::argv::RECORDER_SOCKET_FILE));
            let _ = std::fs::remove_file(dir.join(super::argv::NETWATCH_SOCKET_FILE));
        }
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copy QEMU's console and stderr to their logs until both close, then publish how it exited.
async fn watch_process(
    child: Arc<Mutex<Child>>,
    index: u32,
    console_pipe: Option<(impl AsyncRead + Unpin, PathBuf, watch::Sender<ConsoleState>)>,
    stderr_pipe: Option<(impl AsyncRead + Unpin, PathBuf)>,
    stderr_text: Arc<Mutex<String>>,
    exit_tx: watch::Sender<Option<QemuExit>>,
) {
    let console = async {
        if let Some((out, log, tx)) = console_pipe {
            console::capture(out, Some(log), tx).await;
        }
    };
    let stderr = async {
        if let Some((err, log)) = stderr_pipe {
            capture_stderr(err, &log, &stderr_text).await;
        }
    };
    tokio::join!(console, stderr);
    // Both pipes closed: QEMU has exited (or is about to). Reap it.
    let status = loop {
        let polled = child.lock().unwrap_or_else(|e| e.into_inner()).try_wait();
        match polled {
            Ok(Some(status)) => break status.to_string(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => break format!("status unknown: {e}"),
        }
    };
    let stderr = stderr_text
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    exit_tx.send_replace(Some(QemuExit {
        boot_index: index,
        status,
        stderr,
    }));
}

async fn capture_stderr(mut err: impl AsyncRead + Unpin, log: &Path, keep: &Mutex<String>) {
    let mut file = std::fs::File::create(log).ok();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        let mut text = keep.lock().unwrap_or_else(|e| e.into_inner());
        if text.len() < STDERR_KEEP {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exit_error_quotes_stderr_and_is_infra() {
        let exit = QemuExit {
            boot_index: 1,
            status: "exit status: 1".into(),
            stderr: "qemu-system-x86_64: -netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22: Could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'\n".into(),
        };
        let err = exit.to_error();
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::INFRA);
        let text = err.to_string();
        assert!(
            text.starts_with("QEMU exited unexpectedly during boot 1 (exit status: 1):\n"),
            "{text}"
        );
        assert!(
            text.contains("Could not set up host forwarding rule"),
            "{text}"
        );
    }
}
