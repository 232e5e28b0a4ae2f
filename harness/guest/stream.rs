//! Long-lived commands whose stdout is read line by line as it arrives
//! (`journalctl -f -o json`, `busctl monitor`).
//!
//! Each stream gets its own SSH session and OS thread, so a watcher never waits behind a
//! command on the main session. Lines reach async code through a bounded tokio channel.
//! Dropping the [`LineStream`] raises a stop flag; the thread then closes the channel and
//! the session, which ends the remote command (sshd hangs it up).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

use super::key::SshKey;
use super::pump::{PumpEnd, Stream, pump};
use super::ssh::{Guest, open_session};
use crate::error::infra;

/// Lines buffered between the reader thread and the consumer before the thread waits.
const LINE_BUFFER: usize = 4096;
/// How long the stream's own session may take to connect (the guest is already up).
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Tail of stderr kept for the end report.
const STDERR_TAIL: usize = 4096;

/// How a stream ended, once it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The remote command exited with this status.
    Exited {
        /// Exit status of the command.
        status: i32,
        /// The last few KiB of its stderr.
        stderr: String,
    },
    /// The consumer dropped the stream.
    Stopped,
    /// The connection broke.
    Failed(String),
}

/// Stdout lines of a remote command, in order, as they arrive. Drop it to stop the command.
pub struct LineStream {
    lines: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    end: Arc<Mutex<Option<StreamEnd>>>,
}

impl LineStream {
    /// The next line (without its newline), or `None` once the command has ended and
    /// every line has been read. See [`LineStream::end`] for why it ended.
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// The underlying receiver, e.g. for `tokio::select!`.
    pub fn receiver(&mut self) -> &mut mpsc::Receiver<String> {
        &mut self.lines
    }

    /// Why the stream ended; `None` while it is still running.
    pub fn end(&self) -> Option<StreamEnd> {
        self.end.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for LineStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.lines.close();
    }
}

impl Guest {
    /// Start `cmd` on a dedicated session and thread and stream its stdout lines.
    /// Returns once the command has been started (or with an infra error if it cannot be).
    pub async fn stream_lines(&self, cmd: &str) -> anyhow::Result<LineStream> {
        self.stream(cmd, None).await
    }

    /// Like [`Guest::stream_lines`], and also the stderr lines that start with `{` (a
    /// second command's JSON, sharing the channel so that it costs no SSH handshake);
    /// other stderr lines are kept for [`StreamEnd::Exited`] as usual.
    pub async fn stream_lines_and_json_stderr(
        &self,
        cmd: &str,
    ) -> anyhow::Result<(LineStream, mpsc::Receiver<String>)> {
        let (tx, rx) = mpsc::channel(LINE_BUFFER);
        Ok((self.stream(cmd, Some(tx)).await?, rx))
    }

    async fn stream(
        &self,
        cmd: &str,
        json_stderr: Option<mpsc::Sender<String>>,
    ) -> anyhow::Result<LineStream> {
        if self.played().is_some() {
            return Err(infra(format!(
                "cannot stream `{cmd}`: a recorded guest answers whole commands only"
            )));
        }
        let (tx, rx) = mpsc::channel(LINE_BUFFER);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let end = Arc::new(Mutex::new(None));
        let job = StreamJob {
            addr: self.addr(),
            key: self.key().clone(),
            cmd: cmd.to_owned(),
            tx,
            json_stderr,
            stop: stop.clone(),
            end: end.clone(),
        };
        std::thread::Builder::new()
            .name("coldboot-ssh-stream".into())
            .spawn(move || job.run(ready_tx))
            .map_err(|e| infra(format!("cannot start a stream thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| infra("the stream thread ended before starting the command"))?
            .with_context(|| format!("ssh root@{}: cannot stream `{cmd}`", self.addr()))?;
        Ok(LineStream {
            lines: rx,
            stop,
            end,
        })
    }
}

struct StreamJob {
    addr: std::net::SocketAddr,
    key: SshKey,
    cmd: String,
    tx: mpsc::Sender<String>,
    json_stderr: Option<mpsc::Sender<String>>,
    stop: Arc<AtomicBool>,
    end: Arc<Mutex<Option<StreamEnd>>>,
}

impl StreamJob {
    fn run(self, ready: oneshot::Sender<anyhow::Result<()>>) {
        let started = self.key.private_openssh().and_then(|pem| {
            let (s, _) = open_session(self.addr, &self.key, &pem, STREAM_CONNECT_TIMEOUT)?;
            let mut channel = s.channel_session().context("cannot open an SSH channel")?;
            channel
                .exec(&self.cmd)
                .context("the guest refused the command")?;
            Ok((s, channel))
        });
        let (session, mut channel) = match started {
            Ok(pair) => {
                let _ = ready.send(Ok(()));
                pair
            }
            Err(e) => {
                let _ = ready.send(Err(infra(format!("{e:#}"))));
                return;
            }
        };
        let mut lines = LineSplitter::default();
        let mut err_lines = LineSplitter::default();
        let mut stderr = Vec::new();
        let tx = &self.tx;
        let mut keep_stderr = |bytes: &[u8]| {
            stderr.extend_from_slice(bytes);
            let excess = stderr.len().saturating_sub(STDERR_TAIL);
            stderr.drain(..excess);
        };
        let mut sink = |which: Stream, bytes: &[u8]| match (which, &self.json_stderr) {
            (Stream::Stdout, _) => lines
                .push(bytes)
                .into_iter()
                .all(|l| tx.blocking_send(l).is_ok()),
            (Stream::Stderr, None) => {
                keep_stderr(bytes);
                true
            }
            (Stream::Stderr, Some(json)) => {
                for line in err_lines.push(bytes) {
                    if line.starts_with('{') {
                        // The consumer may have stopped reading it: that ends nothing.
                        let _ = json.blocking_send(line);
                    } else {
                        keep_stderr(line.as_bytes());
                        keep_stderr(b"\n");
                    }
                }
                true
            }
        };
        let cancelled = || self.stop.load(Ordering::SeqCst) || self.tx.is_closed();
        let result = pump(&session, &mut channel, None, &mut sink, &cancelled);
        let end = match result {
            Ok(PumpEnd::Eof) => {
                if let Some(last) = lines.finish() {
                    let _ = self.tx.blocking_send(last);
                }
                let _ = channel.wait_close();
                StreamEnd::Exited {
                    status: channel.exit_status().unwrap_or(-1),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                }
            }
            Ok(PumpEnd::Cancelled | PumpEnd::TimedOut) => {
                session.set_blocking(false);
                let _ = channel.close();
                StreamEnd::Stopped
            }
            Err(e) => StreamEnd::Failed(format!("lost the SSH channel: {e}")),
        };
        let _ = session.disconnect(None, "coldboot stream closed", None);
        if let Ok(mut slot) = self.end.lock() {
            *slot = Some(end);
        }
    }
}

/// Splits a byte stream into lines; a partial line waits for the rest. Pure.
#[derive(Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Add bytes; return every line they complete (without `\n` or `\r\n`, lossy UTF-8).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.partial.last() == Some(&b'\r') {
                    self.partial.pop();
                }
                out.push(String::from_utf8_lossy(&self.partial).into_owned());
                self.partial.clear();
            } else {
                self.partial.push(b);
            }
        }
        out
    }

    /// The last line when the stream ended without a newline.
    pub(crate) fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let last = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\":").is_empty());
        assert_eq!(s.push(b"1}\n{\"b\"").as_slice(), ["{\"a\":1}"]);
        assert_eq!(s.push(b":2}\r\n\n").as_slice(), ["{\"b\":2}", ""]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn unterminated_last_line_is_kept() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"tail").is_empty());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\xffb\n").as_slice(), ["a\u{fffd}b"]);
    }
}
