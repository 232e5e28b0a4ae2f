//! Reading a channel's stdout and stderr together without deadlock.
//!
//! An SSH channel has one flow-control window for both streams: reading stdout to the end
//! while stderr fills the window would hang. So the session goes non-blocking for the
//! read loop, both streams are drained in turn, and the loop sleeps briefly when idle.
//! That also lets a deadline or a cancel flag end the loop, which a blocking read could not.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use ssh2::{Channel, Session};

/// Which stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Why the read loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The remote closed both streams: the command is done writing.
    Eof,
    /// The sink or the cancel check asked to stop.
    Cancelled,
    /// The deadline passed first.
    TimedOut,
}

/// Shortest and longest sleep while no data arrives.
const IDLE_MIN: Duration = Duration::from_millis(1);
const IDLE_MAX: Duration = Duration::from_millis(20);

/// Drain `channel` until EOF, the deadline, or cancellation. The sink returns `false` to stop.
///
/// Switches `session` to non-blocking for the loop and back to blocking before returning.
pub(crate) fn pump(
    session: &Session,
    channel: &mut Channel,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(Stream, &[u8]) -> bool,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<PumpEnd> {
    session.set_blocking(false);
    let result = pump_nonblocking(channel, deadline, sink, cancelled);
    session.set_blocking(true);
    result
}

fn pump_nonblocking(
    channel: &mut Channel,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(Stream, &[u8]) -> bool,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<PumpEnd> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut idle = IDLE_MIN;
    loop {
        let mut progressed = false;
        let mut closed = 0;
        for which in [Stream::Stdout, Stream::Stderr] {
            let read = match which {
                Stream::Stdout => channel.read(&mut buf),
                Stream::Stderr => channel.stderr().read(&mut buf),
            };
            match read {
                Ok(0) => closed += 1,
                Ok(n) => {
                    progressed = true;
                    if !sink(which, &buf[..n]) {
                        return Ok(PumpEnd::Cancelled);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if closed == 2 {
            return Ok(PumpEnd::Eof);
        }
        if cancelled() {
            return Ok(PumpEnd::Cancelled);
        }
        if progressed {
            idle = IDLE_MIN;
            continue;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(PumpEnd::TimedOut);
        }
        std::thread::sleep(idle);
        idle = (idle * 2).min(IDLE_MAX);
    }
}
