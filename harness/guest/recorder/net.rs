//! The netwatch port's lines: the guest's TCP connection attempts. Pure and bounded.
//!
//! The first line is `COLDBOOT-NET 1 UPTIME PID`; then one line per event,
//! `A SECONDS PID COMM UNIT syn|reset DADDR DPORT` (`SECONDS` on the guest's
//! CLOCK_MONOTONIC, `UNIT` `-` when the process had no unit or was gone). Untrusted
//! input: lines are bounded, and a line that does not parse is counted and skipped.

use serde::{Deserialize, Serialize};

/// The longest line accepted; longer ones are skipped whole.
pub const MAX_LINE: usize = 512;

/// What a connection attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attempt {
    /// The socket sent its SYN (an attempt began, in the connecting process).
    Syn,
    /// A reset arrived: refused (no listener) or reset.
    Reset,
}

/// One connection event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The guest's monotonic clock, µs.
    pub at_us: u64,
    /// The process in whose context the kernel saw it.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
    /// Its unit, from its cgroup, if it had one and was still there to ask.
    pub unit: Option<String>,
    /// Attempt or reset.
    pub kind: Attempt,
    /// The destination address.
    pub daddr: String,
    /// The destination port.
    pub dport: u16,
}

/// One line of the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The netwatch is up: the guest's uptime (µs) when it said so.
    Hello(u64),
    /// A connection event.
    Connection(Connection),
}

/// Parse one line (without its newline).
pub fn parse(line: &str) -> Result<Line, String> {
    if line.len() > MAX_LINE {
        return Err(format!("a line of {} bytes", line.len()));
    }
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["COLDBOOT-NET", "1", uptime, _pid] => Ok(Line::Hello(micros(uptime)?)),
        ["A", secs, pid, comm, unit, kind, daddr, dport] => Ok(Line::Connection(Connection {
            at_us: micros(secs)?,
            pid: pid.parse().map_err(|_| format!("pid {pid:?}"))?,
            comm: comm.to_string(),
            unit: (*unit != "-").then(|| unit.to_string()),
            kind: match *kind {
                "syn" => Attempt::Syn,
                "reset" => Attempt::Reset,
                k => return Err(format!("kind {k:?}")),
            },
            daddr: daddr.to_string(),
            dport: dport.parse().map_err(|_| format!("port {dport:?}"))?,
        })),
        _ => Err(format!("not a netwatch line: {:?}", truncate(line))),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `12.345678` seconds as µs.
fn micros(text: &str) -> Result<u64, String> {
    let bad = || format!("time {:?}", truncate(text));
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac6: String = format!("{frac:0<6}").chars().take(6).collect();
    let us: u64 = frac6.parse().map_err(|_| bad())?;
    secs.parse::<u64>()
        .ok()
        .and_then(|s| s.checked_mul(1_000_000))
        .and_then(|s| s.checked_add(us))
        .ok_or_else(bad)
}

/// Splits a byte stream into lines, bounded: a line longer than [`MAX_LINE`] is dropped
/// whole (counted by the caller as malformed).
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    skipping: bool,
}

impl Lines {
    /// Take in bytes; each complete line (or `Err` for one too long or not UTF-8).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<String, String>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.skipping {
                    out.push(Err(format!("a line longer than {MAX_LINE} bytes")));
                } else {
                    out.push(
                        String::from_utf8(std::mem::take(&mut self.buf))
                            .map_err(|_| "a line that is not UTF-8".to_string()),
                    );
                }
                self.buf.clear();
                self.skipping = false;
            } else if !self.skipping {
                self.buf.push(b);
                if self.buf.len() > MAX_LINE {
                    self.buf.clear();
                    self.skipping = true;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_strictly() {
        assert_eq!(parse("COLDBOOT-NET 1 7.25 301"), Ok(Line::Hello(7_250_000)));
        let Ok(Line::Connection(c)) =
            parse("A 31.004512 811 curl deploy-proxy.service reset 127.0.0.1 443")
        else {
            panic!("a connection line")
        };
        assert_eq!(c.at_us, 31_004_512);
        assert_eq!(c.unit.as_deref(), Some("deploy-proxy.service"));
        assert_eq!((c.kind, c.dport), (Attempt::Reset, 443));
        let Ok(Line::Connection(c)) = parse("A 1.5 9 caddy - syn ::1 8080") else {
            panic!("a connection line")
        };
        assert_eq!(c.unit, None);
        for bad in [
            "",
            "A 1.5 9 caddy - syn ::1",
            "A 1.5 9 caddy - fin ::1 80",
            "A x 9 caddy - syn ::1 80",
            "A 1.5 9 caddy - syn ::1 70000",
            "COLDBOOT-NET 2 1.0 3",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_lines_are_dropped_whole() {
        let mut l = Lines::default();
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        input.extend_from_slice(b"A 1.0 1 c - syn 1.2.3.4 5\nhalf");
        let out = l.push(&input);
        assert_eq!(out.len(), 2);
        assert!(out[0].is_err());
        assert_eq!(out[1].as_deref(), Ok("A 1.0 1 c - syn 1.2.3.4 5"));
        assert_eq!(l.push(b" line\n"), vec![Ok("half line".to_string())]);
    }
}
