//! The recorder's byte stream, framed. Pure and bounded: this is the part fuzzed.
//!
//! The guest's relay first writes one line, `COLDBOOT-RECORDER 1 UPTIME PID`, then passes
//! PID 1's side of a D-Bus connection through: the authentication's reply line
//! (`OK GUID` or `REJECTED ...`), then messages. Everything comes from inside the guest,
//! so it is untrusted: lines and messages are bounded, a message that frames but does
//! not decode is counted and skipped, and bytes that cannot be framed end the stream.

use crate::guest::dbus::{self, Message};

/// The longest line accepted before the messages (the hello or the auth reply).
const MAX_LINE: usize = 512;

/// One thing the stream said.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The relay is up: the guest's uptime (µs) when it wrote its first line, its PID.
    Hello {
        /// The guest's monotonic clock in µs.
        uptime_us: u64,
        /// The relay's process id.
        pid: u32,
    },
    /// PID 1 accepted the authentication.
    AuthOk,
    /// A D-Bus message.
    Message(Message),
    /// A message that framed but did not decode: skipped.
    Malformed(String),
}

/// Why the stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Hello,
    Auth,
    Messages,
}

/// Turns bytes, as they arrive, into [`Frame`]s.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    expect: Expect,
    /// Messages skipped as malformed.
    pub malformed: u64,
    /// Bytes taken in.
    pub bytes: u64,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            buf: Vec::new(),
            expect: Expect::Hello,
            malformed: 0,
            bytes: 0,
        }
    }
}

impl Framer {
    /// Whether the relay's hello has been read.
    pub fn greeted(&self) -> bool {
        self.expect != Expect::Hello
    }

    /// Take in `bytes`; the frames they complete, in order. An error ends the stream (the
    /// frames before it are lost with it only if the caller drops them: they are returned
    /// through `out` as they complete).
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), Broken> {
        self.bytes += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            match self.expect {
                Expect::Hello | Expect::Auth => {
                    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            break Err(Broken(format!(
                                "no line end in the first {MAX_LINE} bytes"
                            )));
                        }
                        break Ok(());
                    };
                    if nl > MAX_LINE {
                        break Err(Broken(format!("a line longer than {MAX_LINE} bytes")));
                    }
                    let line = String::from_utf8_lossy(&rest[..nl]).trim_end().to_string();
                    at += nl + 1;
                    match self.expect {
                        Expect::Hello => match hello(&line) {
                            Some(frame) => {
                                out.push(frame);
                                self.expect = Expect::Auth;
                            }
                            None => {
                                break Err(Broken(format!("not the recorder's hello: {line:?}")));
                            }
                        },
                        _ => {
                            if line.starts_with("OK ") {
                                out.push(Frame::AuthOk);
                                self.expect = Expect::Messages;
                            } else {
                                break Err(Broken(format!(
                                    "PID 1 refused the connection: {line:?}"
                                )));
                            }
                        }
                    }
                }
                Expect::Messages => match dbus::frame_len(rest) {
                    Err(e) => break Err(Broken(format!("the D-Bus stream cannot be framed: {e}"))),
                    Ok(None) => break Ok(()),
                    Ok(Some(n)) if n > rest.len() => break Ok(()),
                    Ok(Some(n)) => {
                        match dbus::decode(&rest[..n]) {
                            Ok(m) => out.push(Frame::Message(m)),
                            Err(e) => {
                                self.malformed += 1;
                                out.push(Frame::Malformed(e.0));
                            }
                        }
                        at += n;
                    }
                },
            }
        };
        self.buf.drain(..at);
        result
    }
}

fn hello(line: &str) -> Option<Frame> {
    let mut words = line.strip_prefix("COLDBOOT-RECORDER 1 ")?.split(' ');
    let uptime = words.next()?;
    let pid = words.next()?.parse().ok()?;
    let (secs, frac) = uptime.split_once('.').unwrap_or((uptime, "0"));
    if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: u64 = format!("{frac:0<6}").parse().ok()?;
    let uptime_us = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros)?;
    Some(Frame::Hello { uptime_us, pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_then_auth_then_messages_in_any_chunking() {
        let call = dbus::method_call(3, "d", "/o", "i.f", "M", &[]);
        let mut all = b"COLDBOOT-RECORDER 1 2.37 212\nOK 1234abcd\r\n".to_vec();
        all.extend_from_slice(&call);
        all.extend_from_slice(&call);
        for chunk in [1, 3, 7, all.len()] {
            let mut f = Framer::default();
            let mut out = Vec::new();
            for piece in all.chunks(chunk) {
                f.push(piece, &mut out).unwrap();
            }
            assert_eq!(out.len(), 4, "chunks of {chunk}");
            assert_eq!(
                out[0],
                Frame::Hello {
                    uptime_us: 2_370_000,
                    pid: 212
                }
            );
            assert_eq!(out[1], Frame::AuthOk);
            assert!(matches!(&out[3], Frame::Message(m) if m.serial == 3));
        }
    }

    #[test]
    fn a_malformed_message_is_counted_and_skipped() {
        let mut bad = dbus::method_call(3, "d", "/o", "i.f", "M", &[]);
        bad[1] = 9; // no such message type, but it still frames
        let good = dbus::method_call(4, "d", "/o", "i.f", "M", &[]);
        let mut all = b"COLDBOOT-RECORDER 1 2.0 1\nOK x\n".to_vec();
        all.extend_from_slice(&bad);
        all.extend_from_slice(&good);
        let mut f = Framer::default();
        let mut out = Vec::new();
        f.push(&all, &mut out).unwrap();
        assert_eq!(f.malformed, 1);
        assert!(matches!(&out[2], Frame::Malformed(_)));
        assert!(matches!(&out[3], Frame::Message(m) if m.serial == 4));
    }

    #[test]
    fn a_stream_that_cannot_be_framed_ends() {
        let mut f = Framer::default();
        let mut out = Vec::new();
        assert!(f.push(b"hello there\n", &mut out).is_err());
        let mut f = Framer::default();
        assert!(f.push(&[b'x'; MAX_LINE + 2], &mut out).is_err());
        let mut f = Framer::default();
        f.push(b"COLDBOOT-RECORDER 1 1.5 9\n", &mut out).unwrap();
        assert!(f.push(b"REJECTED EXTERNAL\r\n", &mut out).is_err());
        let mut f = Framer::default();
        f.push(b"COLDBOOT-RECORDER 1 1.5 9\nOK a\n", &mut out)
            .unwrap();
        assert!(f.push(b"Zgarbage garbage", &mut out).is_err());
    }

    #[test]
    fn hello_lines_are_read_strictly() {
        assert_eq!(
            hello("COLDBOOT-RECORDER 1 13 5"),
            Some(Frame::Hello {
                uptime_us: 13_000_000,
                pid: 5
            })
        );
        for bad in [
            "COLDBOOT-RECORDER 2 1.0 5",
            "COLDBOOT-RECORDER 1 1. 5",
            "COLDBOOT-RECORDER 1 -1.0 5",
            "COLDBOOT-RECORDER 1 1.0",
            "COLDBOOT-RECORDER 1 99999999999999999999.0 5",
        ] {
            assert_eq!(hello(bad), None, "{bad}");
        }
    }
}
