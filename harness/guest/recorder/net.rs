//! The netwatch port's lines: the guest's TCP connection attempts. Pure and bounded.
//!
//! The first line is `COLDBOOT-NET 1 UPTIME PID` (with ` untraced` appended when the
//! recorder could not trace connection attempts); then one line per event,
//! `A SECONDS PID COMM UNIT syn|reset DADDR DPORT` (`SECONDS` on the guest's
//! CLOCK_MONOTONIC, `UNIT` `-` when the process had no unit or was gone), and one per
//! gate probe the host asked for, `P N SENT ANSWERED WORD`. Untrusted input: lines are
//! bounded, and a line that does not parse is counted and skipped.
//!
//! The host writes too: [`gate_line`] names a gate's URL for the recorder to probe
//! from early userspace, and [`STOP_PROBES`] ends that once the harness's own probes
//! over SSH take over.

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

/// One probe of a gate's URL that the recorder made in the guest, on the host's asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateAnswer {
    /// Which of the gates the host named ([`gate_line`]'s `n`).
    pub gate: usize,
    /// When the probe was sent, on the guest's clock (µs, from `/proc/uptime`'s 10 ms
    /// steps, so at most 10 ms early).
    pub sent_us: u64,
    /// When it was answered: the end of the 10 ms step the recorder read (so never
    /// early), and a healthy answer brackets no moment it may have come after.
    pub answered_us: u64,
    /// The HTTP status, or `refused`, `timed_out`, `reset`, `closed`, `error`.
    pub word: String,
}

impl GateAnswer {
    /// The HTTP status, if one came back.
    pub fn status(&self) -> Option<u16> {
        self.word.parse().ok().filter(|c| (100..600).contains(c))
    }

    /// Whether the URL answered 2xx.
    pub fn healthy(&self) -> bool {
        self.status().is_some_and(|c| (200..300).contains(&c))
    }

    /// The answer in the words of the harness's own probes over SSH (`timed out`,
    /// `curl exit 35`), so that both read alike in the evidence.
    pub fn shown_word(&self) -> String {
        if self.word == "timed_out" {
            return "timed out".into();
        }
        match self.word.strip_prefix("curl_") {
            Some(code) => format!("curl exit {code}"),
            None => self.word.clone(),
        }
    }
}

/// `/proc/uptime`'s resolution: the recorder's probe times are in these steps.
const UPTIME_STEP_US: u64 = 10_000;

/// One line of the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The netwatch is up: the guest's uptime (µs) when it said so.
    Hello(u64),
    /// The port is up but the connection attempts are not traced (the recorder said
    /// why in the guest's journal): gate probes only.
    Untraced(u64),
    /// A connection event.
    Connection(Connection),
    /// A gate probe's answer.
    GateAnswer(GateAnswer),
}

/// The host's line that stops the recorder's gate probes.
pub const STOP_PROBES: &str = "S\n";

/// The longest URL a `U` line carries (the recorder takes no longer one).
const MAX_CURL_URL: usize = 300;

/// The host's line that names gate `n`'s URL for the recorder to probe, or `None` when
/// the recorder cannot probe it. A plain-HTTP URL to an IPv4 address (or `localhost`)
/// is a `G` line: the recorder speaks HTTP/1.0 to it itself. Any other `http:` or
/// `https:` URL (TLS, a name to look up) is a `U` line, probed by the guest's own curl
/// (TLS not verified, as the watcher's own gate probes).
pub fn gate_line(n: usize, url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    if n > 999 {
        return None;
    }
    // The IPv4 address of a plain-HTTP URL, which the recorder speaks to itself.
    let plain = match url.host_str() {
        _ if url.scheme() != "http" => None,
        Some("localhost") => Some(std::net::Ipv4Addr::LOCALHOST),
        Some(host) => host.parse::<std::net::Ipv4Addr>().ok(),
        None => None,
    };
    let Some(addr) = plain else {
        let text = url.as_str();
        let sendable = matches!(url.scheme(), "http" | "https")
            && text.len() <= MAX_CURL_URL
            && text.bytes().all(|b| b.is_ascii_graphic());
        return sendable.then(|| format!("U {n} {text}\n"));
    };
    let port = url.port_or_known_default()?;
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path = format!("{path}?{q}");
    }
    let printable = path.len() <= 200 && path.bytes().all(|b| b.is_ascii_graphic());
    (path.starts_with('/') && printable).then(|| format!("G {n} {addr} {port} {path}\n"))
}

/// Parse one line (without its newline).
pub fn parse(line: &str) -> Result<Line, String> {
    if line.len() > MAX_LINE {
        return Err(format!("a line of {} bytes", line.len()));
    }
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["COLDBOOT-NET", "1", uptime, _pid] => Ok(Line::Hello(micros(uptime)?)),
        ["COLDBOOT-NET", "1", uptime, _pid, "untraced"] => Ok(Line::Untraced(micros(uptime)?)),
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
        ["P", n, sent, answered, word] => {
            let word_ok =
                word.len() <= 16 && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !word_ok {
                return Err(format!("probe answer {:?}", truncate(word)));
            }
            let (sent_us, answered_us) = (micros(sent)?, micros(answered)?);
            if answered_us < sent_us {
                return Err(format!(
                    "a probe answered at {answered} before it was sent at {sent}"
                ));
            }
            Ok(Line::GateAnswer(GateAnswer {
                gate: n.parse().map_err(|_| format!("gate {:?}", truncate(n)))?,
                sent_us,
                answered_us: answered_us + UPTIME_STEP_US,
                word: word.to_string(),
            }))
        }
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
        assert_eq!(
            parse("COLDBOOT-NET 1 7.25 301 untraced"),
            Ok(Line::Untraced(7_250_000))
        );
        assert!(parse("COLDBOOT-NET 1 7.25 301 traced").is_err());
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
    fn gate_probes_are_asked_and_answered_strictly() {
        assert_eq!(
            gate_line(0, "http://127.0.0.1:8082/ping").as_deref(),
            Some("G 0 127.0.0.1 8082 /ping\n")
        );
        assert_eq!(
            gate_line(2, "http://localhost/health?full=1").as_deref(),
            Some("G 2 127.0.0.1 80 /health?full=1\n")
        );
        // TLS or a name: the guest's curl.
        assert_eq!(
            gate_line(1, "https://ci.commoninternet.net/").as_deref(),
            Some("U 1 https://ci.commoninternet.net/\n")
        );
        assert_eq!(
            gate_line(3, "http://[::1]:80/x").as_deref(),
            Some("U 3 http://[::1]/x\n")
        );
        let long = format!("https://example.org/{}", "a".repeat(MAX_CURL_URL));
        for unprobed in ["ftp://example.org/", "not a url", long.as_str()] {
            assert_eq!(gate_line(0, unprobed), None, "{unprobed}");
        }
        let Ok(Line::GateAnswer(a)) = parse("P 0 19.82 19.84 200") else {
            panic!("a probe line")
        };
        assert_eq!(
            (a.gate, a.sent_us, a.answered_us),
            (0, 19_820_000, 19_850_000)
        );
        assert!(a.healthy());
        let Ok(Line::GateAnswer(a)) = parse("P 1 3.50 3.50 refused") else {
            panic!("a probe line")
        };
        assert_eq!((a.status(), a.healthy()), (None, false));
        // The words of the harness's own probes, whoever probed.
        for (word, shown) in [
            ("timed_out", "timed out"),
            ("curl_35", "curl exit 35"),
            ("502", "502"),
        ] {
            let Ok(Line::GateAnswer(a)) = parse(&format!("P 1 3.50 3.60 {word}")) else {
                panic!("a probe line")
            };
            assert_eq!(a.shown_word(), shown);
        }
        for bad in [
            "P 0 19.84 19.82 200",
            "P x 1.0 1.0 200",
            "P 0 1.0 1.0 2$0",
            "P 0 1.0 1.0",
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
