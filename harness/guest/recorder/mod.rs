//! The recorder: PID 1's job queue and unit changes from the first seconds of userspace,
//! over a virtio-serial port, without SSH, a network or a D-Bus daemon.
//!
//! In the guest, the adapter's `coldboot-recorder.service` (`DefaultDependencies=no`,
//! wanted by `sysinit.target`) relays PID 1's private socket to the port QEMU names
//! `org.coldboot.bus` ([`crate::vm::argv::recorder_args`]). On the host, one task per
//! boot connects to that port's socket, speaks D-Bus to PID 1 through it
//! ([`protocol`]), and keeps every [`Event`] with the moment it arrived. The stream is
//! untrusted input ([`stream`]): bounded per message and in total ([`RECORD_CAP`]), with
//! malformed messages counted and skipped. The queue is folded from the events
//! ([`queue`]), so the live watcher and a replay agree.
//!
//! Why a relay and not a program of ours in the guest: measured on the TCG model guest,
//! one `systemctl list-jobs --after --before` costs 120 ms of wall time (95 ms of CPU)
//! and a `systemctl show` 190 ms, against a 13.6 s userspace boot; reading the queue by
//! command on every change would cost the boot more than the 5 % allowed. PID 1 already
//! sends its changes to every private connection; the relay only copies bytes.
//!
//! Files:
//! - `net`: the netwatch port's lines
//! - `protocol`: the host's side of the conversation with PID 1 over the recorder
//! - `queue`: PID 1's job queue and the units' states, folded from the recorder's
//!   [`Event`]s
//! - `stream`: the recorder's byte stream, framed
//! - `units`: a read of every unit's state through the recorder, rendered as `systemctl
//!   show` prints it

pub mod net;
pub mod protocol;
pub mod queue;
pub mod stream;
pub mod units;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

pub use protocol::{Event, Prop};

use crate::guest::systemd::sources::Gate;
pub use queue::Queue;
use stream::{Frame, Framer};

/// Most bytes taken from one boot's recorder, like the serial log's cap: past it the
/// watch ends, and the outcome says until when it ran.
pub const RECORD_CAP: u64 = 16 << 20;
/// How long QEMU's end of the channel may take to appear (it is made before QMP answers).
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// What the recorder has seen of one boot.
#[derive(Debug, Default)]
pub struct Log {
    /// When the relay said hello, and the guest's uptime (µs) when it wrote it.
    pub hello: Option<(Instant, u64)>,
    /// When PID 1 accepted the connection.
    pub connected: Option<Instant>,
    /// When the first reply to `ListJobs` arrived: from then on the queue is known whole.
    pub queue_known: Option<Instant>,
    /// Every event, with the moment it arrived.
    pub events: Vec<(Instant, Event)>,
    /// The queue and units as of the last event.
    pub queue: Queue,
    /// Messages skipped as malformed.
    pub malformed: u64,
    /// Bytes taken in.
    pub bytes: u64,
    /// When and why the stream ended, if it has.
    pub ended: Option<(Instant, String)>,
    /// The netwatch port: when it said hello (guest uptime µs), its connection events
    /// with their arrival, lines skipped as malformed, and when and why it ended.
    pub net_hello: Option<(Instant, u64)>,
    /// See `net_hello`.
    pub connections: Vec<(Instant, net::Connection)>,
    /// See `net_hello`.
    pub net_malformed: u64,
    /// See `net_hello`.
    pub net_ended: Option<(Instant, String)>,
    /// The port said hello without tracing connection attempts (guest uptime µs): gate
    /// probes work, connection attempts are not watched.
    pub net_untraced: Option<(Instant, u64)>,
    /// The gates the recorder was asked to probe (by index in its `P` lines): the
    /// declared gates whose URL it can reach ([`net::gate_line`]).
    pub probed_gates: Vec<Gate>,
    /// Its answers, with their arrival.
    pub gate_answers: Vec<(Instant, net::GateAnswer)>,
}

/// The recorder's own unit: its gate probes' connections are the harness's, not the
/// guest's, and are never taken as the system's connection attempts.
pub const RECORDER_UNIT: &str = "coldboot-recorder.service";

/// A handle on one boot's recorder.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<Mutex<Log>>,
    news: watch::Receiver<u64>,
    commands: mpsc::UnboundedSender<Command>,
    stop_probes: mpsc::UnboundedSender<()>,
}

/// What the harness asks PID 1 through the recorder's connection.
enum Command {
    /// Every unit's state (see [`protocol::Protocol::read_units`]).
    ReadUnits {
        named: Vec<String>,
        scope: units::Scope,
        reply: oneshot::Sender<Result<units::UnitsText, String>>,
    },
}

/// Keeps the recorder's tasks running; dropping it stops them and closes the sockets.
pub struct RecorderTask {
    task: tokio::task::JoinHandle<()>,
    net: tokio::task::JoinHandle<()>,
}

impl Drop for RecorderTask {
    fn drop(&mut self) {
        self.task.abort();
        self.net.abort();
    }
}

impl Recorder {
    /// Connect to the recorder's socket (`run_dir`/[`crate::vm::argv::RECORDER_SOCKET_FILE`])
    /// and record until the stream ends or the task is dropped. The `gates` whose URL
    /// the recorder can reach are probed by it from early userspace until
    /// [`Recorder::stop_probes`].
    pub fn start(run_dir: &Path, gates: &[Gate]) -> (Recorder, RecorderTask) {
        let mut probed = Vec::new();
        let mut asks = String::new();
        for g in gates {
            if let Some(line) = net::gate_line(probed.len(), &g.url) {
                asks.push_str(&line);
                probed.push(g.clone());
            }
        }
        let log = Arc::new(Mutex::new(Log {
            probed_gates: probed,
            ..Log::default()
        }));
        let (tx, news) = watch::channel(0u64);
        let (commands, asked) = mpsc::unbounded_channel();
        let (stop_probes, stop) = mpsc::unbounded_channel();
        let socket = run_dir.join(crate::vm::argv::RECORDER_SOCKET_FILE);
        let task = tokio::spawn(record(socket, log.clone(), tx.clone(), asked));
        let net_socket = run_dir.join(crate::vm::argv::NETWATCH_SOCKET_FILE);
        let net = tokio::spawn(record_net(net_socket, log.clone(), tx, (asks, stop)));
        (
            Recorder {
                log,
                news,
                commands,
                stop_probes,
            },
            RecorderTask { task, net },
        )
    }

    /// End the recorder's gate probes: the harness's own, over SSH, take over.
    pub fn stop_probes(&self) {
        let _ = self.stop_probes.send(());
    }

    /// Units' states, read from PID 1 through the recorder's connection (the `named`
    /// ones, then what `scope` adds), as `systemctl show` prints them. Fails when
    /// the recorder is not connected, stops, or PID 1 does not answer within `timeout`.
    pub async fn read_units(
        &self,
        named: &[String],
        scope: units::Scope,
        timeout: Duration,
    ) -> Result<units::UnitsText, String> {
        if self.with(|l| l.connected.is_none() || l.ended.is_some()) {
            return Err("the recorder is not connected to PID 1".into());
        }
        let (reply, answer) = oneshot::channel();
        let named = named.to_vec();
        self.commands
            .send(Command::ReadUnits {
                named,
                scope,
                reply,
            })
            .map_err(|_| "the recorder has stopped".to_string())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the recorder stopped during the read".into()),
            Err(_) => Err(format!(
                "PID 1 did not answer the read within {:.0} s",
                timeout.as_secs_f64()
            )),
        }
    }

    /// Read the log.
    pub fn with<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.log.lock().expect("recorder log lock"))
    }

    /// Events from index `from` on.
    pub fn since(&self, from: usize) -> Vec<(Instant, Event)> {
        self.with(|l| l.events.get(from..).map(<[_]>::to_vec).unwrap_or_default())
    }

    /// How many job, unit and reload events arrived after `t`, or None when the stream
    /// has ended (then it cannot say that nothing changed). Zero means that PID 1
    /// reported no job, no unit change and no reload since `t`: a read of every unit
    /// made from `t` on still holds.
    pub fn changes_since(&self, t: Instant) -> Option<usize> {
        self.with(|l| {
            if l.ended.is_some() || l.connected.is_none() {
                return None;
            }
            let fresh = l.events.iter().rev().take_while(|(at, _)| *at > t);
            Some(
                fresh
                    .filter(|(_, e)| !matches!(e, Event::Manager { .. }))
                    .count(),
            )
        })
    }

    /// Since when PID 1's job queue has been empty (the latest of the queue's first
    /// reading and the last job event), or None while it holds jobs or is not known.
    pub fn queue_empty_since(&self) -> Option<Instant> {
        self.with(|l| {
            let known = l.queue_known?;
            if !l.queue.is_empty() {
                return None;
            }
            let last_job = l.events.iter().rev().find_map(|(at, e)| {
                matches!(
                    e,
                    Event::Job { .. } | Event::JobState { .. } | Event::JobRemoved { .. }
                )
                .then_some(*at)
            });
            Some(last_job.map_or(known, |t| t.max(known)))
        })
    }

    /// Wait until something new arrives (an event, or the end), at most until `until`.
    pub async fn wait_news(&mut self, until: Instant) {
        let seen = *self.news.borrow_and_update();
        let _ = tokio::time::timeout_at(until.into(), self.news.wait_for(|n| *n > seen)).await;
    }
}

/// For recording fixtures: a file for every byte as it came (`COLDBOOT_RECORDER_RAW=DIR`).
pub fn raw_file(what: &str, ext: &str) -> Option<std::fs::File> {
    let dir = std::env::var_os("COLDBOOT_RECORDER_RAW")?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("{what}-{}-{nanos}.{ext}", std::process::id());
    std::fs::File::create(Path::new(&dir).join(name)).ok()
}

async fn connect(socket: &Path) -> std::io::Result<tokio::net::UnixStream> {
    let deadline = Instant::now() + SOCKET_WAIT;
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The netwatch port: lines, bounded, each connection event and gate answer kept with
/// its arrival. Once the recorder has said hello, the gates to probe (`asks`) are
/// written to it, and the end of probing when `stop` says so.
async fn record_net(
    socket: PathBuf,
    log: Arc<Mutex<Log>>,
    tx: watch::Sender<u64>,
    (asks, mut stop): (String, mpsc::UnboundedReceiver<()>),
) {
    let end = |why: String| {
        log.lock().expect("recorder log lock").net_ended = Some((Instant::now(), why));
        tx.send_modify(|n| *n += 1);
    };
    let (mut rd, mut wr) = match connect(&socket).await {
        Ok(s) => s.into_split(),
        Err(e) => return end(format!("no netwatch channel at {}: {e}", socket.display())),
    };
    let mut lines = net::Lines::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    let mut raw = raw_file("netwatch", "txt");
    let mut asked = asks.is_empty();
    let mut stopped = false;
    loop {
        let got = tokio::select! {
            got = rd.read(&mut buf) => got,
            Some(()) = stop.recv(), if !stopped => {
                stopped = true;
                // A recorder that did not take the line goes on probing until the boot
                // ends: its answers are still the harness's own, and still recorded.
                let _ = wr.write_all(net::STOP_PROBES.as_bytes()).await;
                continue;
            }
        };
        let n = match got {
            Ok(0) => return end("the guest's end of the channel closed".into()),
            Ok(n) => n,
            Err(e) => return end(format!("reading the netwatch channel: {e}")),
        };
        total += n as u64;
        let at = Instant::now();
        if let Some(f) = raw.as_mut() {
            use std::io::Write as _;
            let _ = f.write_all(&buf[..n]);
        }
        let say_hello = {
            let mut l = log.lock().expect("recorder log lock");
            for line in lines.push(&buf[..n]) {
                match line.and_then(|t| net::parse(&t)) {
                    Ok(net::Line::Hello(up))
                        if l.net_hello.is_none() && l.net_untraced.is_none() =>
                    {
                        l.net_hello = Some((at, up))
                    }
                    Ok(net::Line::Untraced(up))
                        if l.net_hello.is_none() && l.net_untraced.is_none() =>
                    {
                        l.net_untraced = Some((at, up))
                    }
                    Ok(net::Line::Connection(c)) if c.unit.as_deref() == Some(RECORDER_UNIT) => {}
                    Ok(net::Line::Connection(c)) => l.connections.push((at, c)),
                    Ok(net::Line::GateAnswer(a)) if a.gate < l.probed_gates.len() => {
                        l.gate_answers.push((at, a))
                    }
                    Ok(net::Line::Hello(_) | net::Line::Untraced(_) | net::Line::GateAnswer(_))
                    | Err(_) => l.net_malformed += 1,
                }
            }
            !asked && (l.net_hello.is_some() || l.net_untraced.is_some()) && !stopped
        };
        if say_hello {
            asked = true;
            if let Err(e) = wr.write_all(asks.as_bytes()).await {
                tracing::info!("the recorder's gate probes could not be asked for: {e}");
            }
        }
        tx.send_modify(|n| *n += 1);
        if total > RECORD_CAP {
            return end(format!(
                "the netwatch stream passed its cap of {} MiB",
                RECORD_CAP >> 20
            ));
        }
    }
}

async fn record(
    socket: PathBuf,
    log: Arc<Mutex<Log>>,
    tx: watch::Sender<u64>,
    mut asked: mpsc::UnboundedReceiver<Command>,
) {
    let end = |why: String| {
        let mut l = log.lock().expect("recorder log lock");
        if l.ended.is_none() {
            tracing::info!("recorder: {why}");
            l.ended = Some((Instant::now(), why));
        }
        drop(l);
        tx.send_modify(|n| *n += 1);
    };
    let stream = match connect(&socket).await {
        Ok(s) => s,
        Err(e) => return end(format!("no recorder channel at {}: {e}", socket.display())),
    };
    let (mut rd, wr) = stream.into_split();
    // Writes go through a task of their own: a read's calls can fill the channel, and
    // the relay in the guest only drains it between its own writes of PID 1's replies,
    // which this loop must keep reading.
    let (to_guest, outgoing) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(write_all(wr, outgoing));
    let _writer = AbortOnDrop(writer);
    let mut raw = raw_file("recorder", "bin");
    let mut reads_log = raw.as_ref().and(raw_file("recorder-reads", "txt"));
    let mut framer = Framer::default();
    let mut proto = protocol::Protocol::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    let mut waiting: std::collections::HashMap<u64, oneshot::Sender<_>> = Default::default();
    let mut next_read = 0u64;
    loop {
        let got = tokio::select! {
            got = rd.read(&mut buf) => got,
            Some(command) = asked.recv() => {
                match command {
                    Command::ReadUnits { named, scope, reply } => {
                        next_read += 1;
                        if let Some(f) = reads_log.as_mut() {
                            use std::io::Write as _;
                            let _ = writeln!(f, "{}\t{}", framer.bytes, named.join(" "));
                        }
                        waiting.insert(next_read, reply);
                        let send = proto.read_units(next_read, &named, scope);
                        for (id, result) in proto.take_reads() {
                            if let Some(tx) = waiting.remove(&id) {
                                let _ = tx.send(result);
                            }
                        }
                        if !send.is_empty() && to_guest.send(send).is_err() {
                            return end("the recorder channel stopped taking writes".into());
                        }
                    }
                }
                continue;
            }
        };
        let n = match got {
            Ok(0) => {
                return end(
                    "the guest's end of the channel closed (QEMU exited, or the relay stopped)"
                        .into(),
                );
            }
            Ok(n) => n,
            Err(e) => return end(format!("reading the recorder channel: {e}")),
        };
        let at = Instant::now();
        if let Some(f) = raw.as_mut() {
            use std::io::Write as _;
            let _ = f.write_all(&buf[..n]);
        }
        frames.clear();
        let broken = framer.push(&buf[..n], &mut frames).err();
        let mut events = Vec::new();
        let mut send = Vec::new();
        let mut greeted = None;
        let mut authed = false;
        for f in &frames {
            match f {
                Frame::Hello { uptime_us, .. } => {
                    greeted = Some(*uptime_us);
                    send.extend(proto.opening());
                }
                Frame::AuthOk => authed = true,
                Frame::Message(m) => send.extend(proto.on_message(m, &mut events)),
                Frame::Malformed(why) => tracing::debug!("recorder: skipped a message: {why}"),
            }
        }
        {
            let mut l = log.lock().expect("recorder log lock");
            if let Some(up) = greeted {
                l.hello = Some((at, up));
            }
            if authed {
                l.connected = Some(at);
            }
            for e in &events {
                l.queue.apply(e);
            }
            if l.queue_known.is_none()
                && frames
                    .iter()
                    .any(|f| matches!(f, Frame::Message(m) if m.reply_serial == Some(1)))
            {
                l.queue_known = Some(at);
            }
            l.events.extend(events.into_iter().map(|e| (at, e)));
            l.malformed = framer.malformed;
            l.bytes = framer.bytes;
        }
        tx.send_modify(|n| *n += 1);
        if let Some(b) = broken {
            return end(format!("the recorder's stream broke: {}", b.0));
        }
        if framer.bytes > RECORD_CAP {
            return end(format!(
                "the recorder's stream passed its cap of {} MiB",
                RECORD_CAP >> 20
            ));
        }
        for (id, result) in proto.take_reads() {
            if let Some(tx) = waiting.remove(&id) {
                let _ = tx.send(result);
            }
        }
        if !send.is_empty() && to_guest.send(send).is_err() {
            return end("the recorder channel stopped taking writes".into());
        }
    }
}

async fn write_all(
    mut wr: tokio::net::unix::OwnedWriteHalf,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = outgoing.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::info!("recorder: writing to the channel: {e}");
            return;
        }
    }
}

/// Aborts a task when dropped (the recorder's writer, with the recorder).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
