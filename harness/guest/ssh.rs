//! One SSH connection to a guest, as root, with the per-run key.
//!
//! ssh2 (libssh2) is blocking, so every call runs on `spawn_blocking` and holds the session
//! lock for its whole duration: calls on one `Guest` are serialized. Long-lived watchers
//! get their own session ([`Guest::stream_lines`]) so they never hold up commands.
//! Authentication uses `userauth_pubkey_memory`: the private key never touches a file.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use ssh2::Session;

pub use super::exec::ExecOutput;
use super::key::SshKey;
use super::pump::{PumpEnd, Stream, pump};
use super::quote::quote;
use crate::error::infra;

/// Longest a single connection attempt (TCP, handshake, auth) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of each blocking libssh2 call once connected (channel open, close...).
const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for one command; see [`Guest::exec_timeout`] for longer ones.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an attempt to reach a booting guest waits for the server's banner. Under
/// QEMU's user networking the host side of a forward connects at once, and while the
/// guest has no address yet its SYNs go unanswered and are resent on a backoff: an
/// attempt made then would sit for seconds after sshd is ready, where a fresh connection
/// is answered at once. Once the guest has answered (a connection closed, i.e. refused),
/// attempts wait the whole [`ATTEMPT_TIMEOUT`]: sshd on a busy guest may need it.
const BANNER_WAIT: Duration = Duration::from_millis(1500);
/// At most this many short attempts, however the guest answers.
const SHORT_ATTEMPTS: u32 = 12;
/// Backoff between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// The guest's SSH host key as it was offered, recorded as evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// Key algorithm as named on the wire, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// OpenSSH-style SHA-256 fingerprint, `SHA256:...`.
    pub fingerprint: String,
    /// True when it is this run's host key (see [`SshKey`]); false only for a target
    /// whose image may lack the coldboot adapter and did not install it.
    #[serde(default)]
    pub pinned: bool,
}

impl HostKey {
    /// One line for logs and reports: `SHA256:... pinned` or why it is not.
    pub fn describe(&self) -> String {
        if self.pinned {
            format!("host key {} {} pinned", self.algorithm, self.fingerprint)
        } else {
            format!(
                "host key not pinned: the guest offered {} {}, not this run's key (an image \
                 without the coldboot adapter)",
                self.algorithm, self.fingerprint
            )
        }
    }
}

/// An authenticated SSH session to a guest, as root. Cheap to clone (shared session).
#[derive(Clone)]
pub struct Guest {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    key: SshKey,
    session: Mutex<Session>,
    host_key: HostKey,
    /// A guest played back from a recording answers from it, with no SSH at all.
    played: Option<super::recorded::Answers>,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("addr", &self.inner.addr)
            .field("host_key", &self.inner.host_key)
            .finish_non_exhaustive()
    }
}

impl Guest {
    /// Connect to `addr` as root with `key`, retrying TCP connect, handshake and auth with
    /// a short backoff until `deadline` has passed. A guest that is still booting refuses or
    /// drops connections for a while; that is expected, so only the last error is reported.
    pub async fn connect(
        addr: SocketAddr,
        key: &SshKey,
        deadline: Duration,
    ) -> anyhow::Result<Guest> {
        let key = key.clone();
        tokio::task::spawn_blocking(move || connect_blocking(addr, key, deadline, true))
            .await
            .context("the SSH connect thread panicked")?
    }

    /// A guest that answers commands from recorded outputs and has no connection: the
    /// runner's logic under test without a VM (see [`super::recorded`]). Its address is
    /// `127.0.0.1:0`, and anything but a plain command is an error.
    pub fn recorded(answers: super::recorded::Answers) -> anyhow::Result<Guest> {
        Ok(Guest {
            inner: Arc::new(Inner {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                key: SshKey::generate()?,
                session: Mutex::new(Session::new().context("cannot make an SSH session")?),
                host_key: HostKey {
                    algorithm: "none".into(),
                    fingerprint: "recorded".into(),
                    pinned: true,
                },
                played: Some(answers),
            }),
        })
    }

    /// The recorded answers a played-back guest answers from, to see what was asked.
    pub fn played(&self) -> Option<&super::recorded::Answers> {
        self.inner.played.as_ref()
    }

    /// A second session to the same guest with the same key, for a watcher that must not
    /// wait behind long commands on this one (each session runs one command at a time).
    pub async fn another_session(&self, deadline: Duration) -> anyhow::Result<Guest> {
        if self.inner.played.is_some() {
            return Ok(self.clone());
        }
        let (addr, key) = (self.inner.addr, self.inner.key.clone());
        // The guest is up: no short attempts, which a busy sshd could fail every time.
        tokio::task::spawn_blocking(move || connect_blocking(addr, key, deadline, false))
            .await
            .context("the SSH connect thread panicked")?
    }

    /// The address this guest is reached at (host side of the port forward).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The guest's host key fingerprint, for the evidence.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.inner.host_key.fingerprint
    }

    /// The guest's host key algorithm and fingerprint.
    pub fn host_key(&self) -> &HostKey {
        &self.inner.host_key
    }

    pub(crate) fn key(&self) -> &SshKey {
        &self.inner.key
    }

    /// Run `cmd` through the guest's shell and collect its output, with
    /// [`DEFAULT_EXEC_TIMEOUT`]. Errors only when the command cannot be run or read.
    pub async fn exec(&self, cmd: &str) -> anyhow::Result<ExecOutput> {
        self.exec_timeout(cmd, DEFAULT_EXEC_TIMEOUT).await
    }

    /// Like [`Guest::exec`] with an explicit limit; passing it is an infra error.
    pub async fn exec_timeout(&self, cmd: &str, timeout: Duration) -> anyhow::Result<ExecOutput> {
        self.run(cmd, None, timeout).await
    }

    /// Like [`Guest::exec`] but a non-zero status is an error quoting stderr.
    pub async fn exec_checked(&self, cmd: &str) -> anyhow::Result<ExecOutput> {
        let out = self.exec(cmd).await?;
        check_status(cmd, out)
    }

    /// Write `bytes` to `path` in the guest with permission `mode` (e.g. `0o644`),
    /// atomically (temporary file in the same folder, then rename). Creates parent folders.
    pub async fn write_file(&self, path: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
        let cmd = write_file_command(path, mode);
        let out = self
            .run(&cmd, Some(bytes.to_vec()), DEFAULT_EXEC_TIMEOUT)
            .await?;
        check_status(&cmd, out)
            .with_context(|| format!("cannot write {path} in the guest"))
            .map(drop)
    }

    /// Start `cmd` and, `rounds` times, write a newline to its stdin and read the line it
    /// answers with, timing each round trip. One process serves every round, so a round
    /// costs the channel's latency, not a process start in the guest (which takes
    /// hundreds of milliseconds under TCG): what a clock read needs to be tight.
    pub async fn exchange_lines(
        &self,
        cmd: &str,
        rounds: usize,
    ) -> anyhow::Result<Vec<(Instant, String, Instant)>> {
        let what = format!(
            "ssh root@{}: cannot exchange lines with `{cmd}`",
            self.addr()
        );
        if self.inner.played.is_some() {
            return Err(infra(format!(
                "{what}: a recorded guest answers whole commands only"
            )));
        }
        let cmd = cmd.to_owned();
        self.on_session(move |session| exchange_blocking(session, &cmd, rounds).context(what))
            .await
    }

    /// Run `work` on a blocking thread with this guest's session locked (ssh2 is blocking,
    /// and a session runs one command at a time).
    async fn on_session<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Session) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let session = inner
                .session
                .lock()
                .map_err(|_| infra("the SSH session lock is poisoned"))?;
            work(&session)
        })
        .await
        .context("the SSH thread panicked")?
    }

    async fn run(
        &self,
        cmd: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<ExecOutput> {
        let what = format!("ssh root@{}: cannot run `{cmd}`", self.addr());
        if let Some(played) = &self.inner.played {
            return played.answer(cmd).context(what);
        }
        let cmd = cmd.to_owned();
        let out = self
            .on_session(move |session| {
                let out = exec_blocking(session, &cmd, stdin.as_deref(), timeout).context(what)?;
                super::recorded::record(&cmd, &out);
                Ok(out)
            })
            .await?;
        Ok(out)
    }
}

/// The blocking side of [`Guest::exchange_lines`]; the session's timeout bounds each read.
fn exchange_blocking(
    session: &Session,
    cmd: &str,
    rounds: usize,
) -> anyhow::Result<Vec<(Instant, String, Instant)>> {
    use std::io::Read as _;
    let mut channel = session
        .channel_session()
        .context("cannot open an SSH channel")?;
    channel.exec(cmd).context("the guest refused the command")?;
    let mut out = Vec::with_capacity(rounds);
    let mut pending: Vec<u8> = Vec::new();
    for _ in 0..rounds {
        let sent = Instant::now();
        channel
            .write_all(b"\n")
            .context("cannot write to the command")?;
        channel.flush().context("cannot write to the command")?;
        let line = loop {
            if let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                break String::from_utf8_lossy(&line[..i]).into_owned();
            }
            let mut buf = [0u8; 512];
            let n = channel
                .read(&mut buf)
                .context("cannot read the command's answer")?;
            if n == 0 {
                anyhow::bail!("the command ended after {} of {rounds} answers", out.len());
            }
            pending.extend_from_slice(&buf[..n]);
        };
        out.push((sent, line, Instant::now()));
    }
    let _ = channel.send_eof();
    let _ = channel.close();
    Ok(out)
}

/// Turn a non-zero status into an error that quotes stderr.
fn check_status(cmd: &str, out: ExecOutput) -> anyhow::Result<ExecOutput> {
    if out.success() {
        return Ok(out);
    }
    let stderr = out.stderr.trim();
    Err(anyhow::anyhow!(
        "`{cmd}` exited with status {}{}",
        out.status,
        if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        }
    ))
}

/// The shell command that writes stdin to `path` atomically with `mode`.
fn write_file_command(path: &str, mode: u32) -> String {
    let p = quote(path);
    format!(
        "set -e; d=$(dirname {p}); mkdir -p \"$d\"; t=$(mktemp \"$d/.coldboot.XXXXXX\"); \
         cat > \"$t\"; chmod {mode:o} \"$t\"; mv -f \"$t\" {p}"
    )
}

/// `booting`: the guest may not have an address yet (see [`BANNER_WAIT`]).
fn connect_blocking(
    addr: SocketAddr,
    key: SshKey,
    deadline: Duration,
    booting: bool,
) -> anyhow::Result<Guest> {
    let pem = key.private_openssh()?;
    let started = Instant::now();
    let until = started + deadline;
    let mut backoff = BACKOFF_MIN;
    let mut attempts = 0u32;
    let mut answered = !booting;
    loop {
        attempts += 1;
        let remaining = until.saturating_duration_since(Instant::now());
        let attempt = ATTEMPT_TIMEOUT.min(remaining.max(Duration::from_millis(100)));
        let banner = (!answered && attempts <= SHORT_ATTEMPTS).then_some(BANNER_WAIT.min(attempt));
        let last_error = match open_session_waiting(addr, &key, &pem, attempt, banner) {
            Ok((session, host_key)) => {
                if !host_key.pinned {
                    tracing::warn!(%addr, "{}", host_key.describe());
                }
                tracing::debug!(%addr, attempts, elapsed = ?started.elapsed(), "ssh connected");
                return Ok(Guest {
                    inner: Arc::new(Inner {
                        addr,
                        key,
                        session: Mutex::new(session),
                        host_key,
                        played: None,
                    }),
                });
            }
            // Another host key is a fact, not a guest still booting: no retry.
            Err(e) if e.is::<HostKeyMismatch>() => {
                return Err(infra(format!("ssh root@{addr}: {e}")));
            }
            Err(e) => {
                answered |= e.is::<ClosedBeforeBanner>();
                e
            }
        };
        tracing::trace!(%addr, attempts, error = format!("{last_error:#}"), "ssh not ready yet");
        if Instant::now() + backoff >= until {
            return Err(infra(format!(
                "ssh root@{addr}: no connection within {deadline:?} ({attempts} attempts); \
                 last error: {last_error:#}"
            )));
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The connection closed before the server's banner: the guest's network answered (it
/// refused), so SYNs are no longer lost.
#[derive(Debug, thiserror::Error)]
#[error("the connection closed before the SSH banner")]
struct ClosedBeforeBanner;

/// The guest offered a host key that is not this run's: the harness is not talking to
/// the guest it started (another VM on a reused port, or something in between).
#[derive(Debug, thiserror::Error)]
#[error(
    "the SSH server offered host key {offered}, not this run's {expected}: it is not the \
     guest this run started, so the harness will not talk to it"
)]
pub struct HostKeyMismatch {
    /// The fingerprint of what was offered.
    pub offered: String,
    /// The fingerprint of this run's host key.
    pub expected: String,
}

/// Host key algorithms asked for: only ed25519 when the key is pinned (the guest has
/// only that one), ed25519 first otherwise, so a guest that installed it offers it.
fn host_key_methods(required: bool) -> &'static str {
    if required {
        "ssh-ed25519"
    } else {
        "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa"
    }
}

/// Check the offered host key `blob` against the run's key: pinned when it is the
/// run's, a [`HostKeyMismatch`] when it is not and the key is required.
pub fn check_host_key(blob: &[u8], key: &SshKey) -> anyhow::Result<HostKey> {
    let parsed = ssh_key::PublicKey::from_bytes(blob)
        .map_err(|e| infra(format!("cannot parse the guest's SSH host key: {e}")))?;
    let offered = HostKey {
        algorithm: parsed.algorithm().as_str().to_owned(),
        fingerprint: parsed.fingerprint(ssh_key::HashAlg::Sha256).to_string(),
        pinned: blob == key.host_public_blob().as_slice(),
    };
    if !offered.pinned && key.host_key_required() {
        return Err(HostKeyMismatch {
            offered: offered.fingerprint,
            expected: key.host_fingerprint(),
        }
        .into());
    }
    Ok(offered)
}

/// One attempt: TCP connect, SSH handshake, the host key checked against the run's,
/// then public key auth as root from memory.
pub(crate) fn open_session(
    addr: SocketAddr,
    key: &SshKey,
    pem: &str,
    timeout: Duration,
) -> anyhow::Result<(Session, HostKey)> {
    open_session_waiting(addr, key, pem, timeout, None)
}

/// [`open_session`], giving up early when the server sends nothing within `banner`.
fn open_session_waiting(
    addr: SocketAddr,
    key: &SshKey,
    pem: &str,
    timeout: Duration,
    banner: Option<Duration>,
) -> anyhow::Result<(Session, HostKey)> {
    let tcp = TcpStream::connect_timeout(&addr, timeout).context("TCP connect")?;
    tcp.set_nodelay(true).ok();
    if let Some(wait) = banner {
        tcp.set_read_timeout(Some(wait)).ok();
        match tcp.peek(&mut [0u8; 1]) {
            Ok(0) => return Err(ClosedBeforeBanner.into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                anyhow::bail!("no SSH banner within {wait:?}")
            }
            Err(e) => return Err(e).context("waiting for the SSH banner"),
        }
        tcp.set_read_timeout(None).ok();
    }
    let mut session = Session::new().context("cannot create an SSH session")?;
    session.set_tcp_stream(tcp);
    session.set_timeout(millis(timeout));
    session
        .method_pref(
            ssh2::MethodType::HostKey,
            host_key_methods(key.host_key_required()),
        )
        .context("cannot choose the host key algorithms")?;
    session.handshake().context("SSH handshake")?;
    // Checked before authenticating: nothing is sent to a server that is not the guest.
    let (blob, _) = session
        .host_key()
        .ok_or_else(|| infra("the SSH server sent no host key"))?;
    let host_key = check_host_key(blob, key)?;
    session
        .userauth_pubkey_memory("root", None, pem, None)
        .context("public key authentication as root")?;
    if !session.authenticated() {
        anyhow::bail!("public key authentication as root was not accepted");
    }
    session.set_timeout(millis(SESSION_TIMEOUT));
    Ok((session, host_key))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Run one command on an open session: optional stdin, then both streams until EOF.
fn exec_blocking(
    session: &Session,
    cmd: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<ExecOutput> {
    let deadline = Instant::now() + timeout;
    let mut channel = session
        .channel_session()
        .map_err(|e| infra(format!("cannot open an SSH channel: {e}")))?;
    channel
        .exec(cmd)
        .map_err(|e| infra(format!("the guest refused the command: {e}")))?;
    if let Some(bytes) = stdin {
        channel
            .write_all(bytes)
            .map_err(|e| infra(format!("cannot send stdin: {e}")))?;
    }
    channel
        .send_eof()
        .map_err(|e| infra(format!("cannot close stdin: {e}")))?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut sink = |which: Stream, bytes: &[u8]| {
        match which {
            Stream::Stdout => stdout.extend_from_slice(bytes),
            Stream::Stderr => stderr.extend_from_slice(bytes),
        }
        true
    };
    let end = pump(session, &mut channel, Some(deadline), &mut sink, &|| false)
        .map_err(|e| infra(format!("lost the SSH channel while reading output: {e}")))?;
    if end == PumpEnd::TimedOut {
        session.set_blocking(false);
        let _ = channel.close();
        session.set_blocking(true);
        return Err(infra(format!("no end of output within {timeout:?}")));
    }
    channel
        .wait_close()
        .map_err(|e| infra(format!("the SSH channel did not close: {e}")))?;
    let status = channel
        .exit_status()
        .map_err(|e| infra(format!("no exit status: {e}")))?;
    let signal = channel.exit_signal().ok().and_then(|s| s.exit_signal);
    Ok(ExecOutput {
        status: match &signal {
            Some(name) => 128 + signal_number(name),
            None => status,
        },
        signal,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Linux x86 signal number for a name as SSH reports it (no `SIG` prefix); 127 if unknown.
fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 127,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(status: i32, stderr: &str) -> ExecOutput {
        ExecOutput {
            status,
            signal: None,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn checked_status_quotes_stderr() {
        let err = check_status("false", out(3, "boom\n")).unwrap_err();
        assert_eq!(err.to_string(), "`false` exited with status 3: boom");
        let err = check_status("false", out(1, "")).unwrap_err();
        assert_eq!(err.to_string(), "`false` exited with status 1");
        assert!(check_status("true", out(0, "warning")).is_ok());
    }

    #[test]
    fn write_file_command_quotes_the_path_and_mode() {
        let cmd = write_file_command("/etc/it's here", 0o644);
        assert!(cmd.contains("chmod 644 "), "{cmd}");
        assert!(cmd.contains("mv -f \"$t\" '/etc/it'\\''s here'"), "{cmd}");
    }

    #[test]
    fn the_runs_host_key_is_pinned_and_another_is_refused() {
        let key = SshKey::generate().unwrap();
        let ours = check_host_key(&key.host_public_blob(), &key).unwrap();
        assert!(ours.pinned);
        assert_eq!(ours.fingerprint, key.host_fingerprint());
        assert_eq!(ours.algorithm, "ssh-ed25519");
        // Another guest's key (here: another run's), and the client key itself.
        let other = SshKey::generate().unwrap();
        for blob in [other.host_public_blob(), key.public_blob()] {
            let err = check_host_key(&blob, &key).unwrap_err();
            let mismatch = err.downcast_ref::<HostKeyMismatch>().expect("a mismatch");
            assert_eq!(mismatch.expected, key.host_fingerprint());
            assert!(err.to_string().contains("not the guest this run started"));
        }
        // Garbage is refused too, as an infrastructure error.
        let err = check_host_key(b"not a key", &key).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::INFRA);
    }

    #[test]
    fn an_unpinned_target_is_recorded_and_said_not_silently_accepted() {
        let key = SshKey::generate().unwrap().require_host_key(false);
        let other = SshKey::generate().unwrap();
        let seen = check_host_key(&other.host_public_blob(), &key).unwrap();
        assert!(!seen.pinned);
        assert!(
            seen.describe().starts_with("host key not pinned"),
            "{}",
            seen.describe()
        );
        let ours = check_host_key(&key.host_public_blob(), &key).unwrap();
        assert!(ours.pinned && ours.describe().ends_with("pinned"));
        assert_eq!(host_key_methods(true), "ssh-ed25519");
        assert!(host_key_methods(false).starts_with("ssh-ed25519,"));
    }

    #[test]
    fn signals_map_like_a_shell() {
        assert_eq!(signal_number("KILL"), 9);
        assert_eq!(signal_number("TERM"), 15);
        assert_eq!(signal_number("WHATEVER"), 127);
    }
}
