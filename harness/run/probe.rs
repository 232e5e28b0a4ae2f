//! The harness's own HTTP probes: from inside the guest (curl over SSH, the one place
//! that builds a curl command) or from the host (through the loopback forward the
//! harness made for the URL's port). Expectations and the wait-cycle watcher's gate
//! probes both come here, so a probe means the same thing wherever it is made.

use std::time::Duration;

use crate::guest::Guest;
use crate::guest::shell::quote;
use crate::vm::Vm;

/// How a probe treats the server's certificate.
#[derive(Debug, Clone, Copy)]
pub enum Tls<'a> {
    /// Verified against the system's roots.
    Verify,
    /// Verified against this CA only (a path in the guest).
    Ca(&'a str),
    /// Not verified: the question is only whether, and with what, the URL answers.
    Insecure,
}

impl<'a> Tls<'a> {
    /// `Ca` when a CA is named, else `Verify`.
    pub fn from_ca(ca: Option<&'a str>) -> Tls<'a> {
        ca.map_or(Tls::Verify, Tls::Ca)
    }
}

/// What a probe from the guest saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server answered.
    Http {
        /// Its status code.
        status: u16,
        /// Its body.
        body: String,
    },
    /// No HTTP answer: curl's exit status and what it said.
    None {
        /// curl's exit status (7: refused, 28: timed out).
        exit: i32,
        /// curl's error output.
        why: String,
    },
}

impl Answer {
    /// No HTTP answer, in curl's words (`curl exit 7: curl: (7) Failed to connect...`).
    pub fn failure(&self) -> Option<String> {
        match self {
            Answer::Http { .. } => None,
            Answer::None { exit, why } => Some(format!("curl exit {exit}: {why}")),
        }
    }

    /// The answer in a word or two, for a gate's probe record: the status, `refused`,
    /// `timed out`, or curl's exit status.
    pub fn word(&self) -> String {
        match self {
            Answer::Http { status, .. } => status.to_string(),
            Answer::None { exit: 7, .. } => "refused".into(),
            Answer::None { exit: 28, .. } => "timed out".into(),
            Answer::None { exit, .. } => format!("curl exit {exit}"),
        }
    }
}

/// The curl command of a probe: the body, then the status code on a line of its own.
fn curl_command(url: &str, tls: Tls<'_>, max_time: Duration) -> String {
    let tls = match tls {
        Tls::Verify => String::new(),
        Tls::Ca(ca) => format!(" --cacert {}", quote(ca)),
        Tls::Insecure => " -k".into(),
    };
    format!(
        "curl -sS --max-time {}{tls} -w '\\n%{{http_code}}' {}",
        max_time.as_secs().max(1),
        quote(url)
    )
}

/// What curl's exit status, output and error say, as an [`Answer`].
fn answer_of(status: i32, stdout: &str, stderr: &str) -> Answer {
    match status {
        0 => {
            let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout));
            match code.trim().parse::<u16>() {
                Ok(c) if c > 0 => Answer::Http {
                    status: c,
                    body: body.to_string(),
                },
                _ => Answer::None {
                    exit: 0,
                    why: format!("curl printed no status: {stdout:?}"),
                },
            }
        }
        exit => Answer::None {
            exit,
            why: stderr.trim().to_string(),
        },
    }
}

/// Probe `url` with curl inside the guest. An error is the SSH channel's, not the URL's.
pub async fn from_guest(
    guest: &Guest,
    url: &str,
    tls: Tls<'_>,
    max_time: Duration,
) -> anyhow::Result<Answer> {
    let out = guest.exec(&curl_command(url, tls, max_time)).await?;
    Ok(answer_of(out.status, &out.stdout, &out.stderr))
}

/// An error with its causes, so a refused certificate says why ("invalid peer
/// certificate: UnknownIssuer"), not only "error sending request".
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Probe `url` from the host through the loopback forward the harness made for its port.
/// A named CA is read from the guest, where the proxy made it.
pub async fn from_host(
    vm: &Vm,
    guest: &Guest,
    url: &str,
    ca: Option<&str>,
    max_time: Duration,
) -> Result<(u16, String), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("bad URL {url}: {e}"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("{url} has no port"))?;
    let fwd = vm
        .forward_addr(port)
        .ok_or_else(|| format!("guest port {port} is not forwarded"))?;
    let host = parsed.host_str().unwrap_or("guest").to_string();
    let mut via = parsed.clone();
    via.set_port(Some(fwd.port()))
        .map_err(|_| "cannot set the port".to_string())?;
    // A name resolves to the forward; an IP literal is replaced by it.
    let mut builder = reqwest::Client::builder()
        .timeout(max_time)
        .resolve(&host, fwd);
    if let Some(ca) = ca {
        let pem = guest
            .exec_checked(&format!("cat {}", quote(ca)))
            .await
            .map_err(|e| format!("cannot read the CA {ca} in the guest: {e:#}"))?
            .stdout;
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| format!("{ca} in the guest is not a PEM certificate: {e}"))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    if host.parse::<std::net::IpAddr>().is_ok() {
        via.set_host(Some("127.0.0.1")).map_err(|e| e.to_string())?;
    }
    let resp = client.get(via).send().await.map_err(|e| causes(&e))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The first 200 characters of a body, for messages and evidence.
pub fn excerpt(body: &str) -> String {
    let trimmed = body.trim_end();
    match trimmed.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &trimmed[..i]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_asks_for_the_status_after_the_body_and_quotes_the_url() {
        let five = Duration::from_secs(5);
        assert_eq!(
            curl_command("http://127.0.0.1:8082/ping", Tls::Verify, five),
            "curl -sS --max-time 5 -w '\\n%{http_code}' http://127.0.0.1:8082/ping"
        );
        assert_eq!(
            curl_command("https://a/?x=1&y", Tls::Ca("/c a.crt"), five),
            "curl -sS --max-time 5 --cacert '/c a.crt' -w '\\n%{http_code}' 'https://a/?x=1&y'"
        );
        assert!(curl_command("https://a/", Tls::Insecure, Duration::from_secs(2)).contains(" -k "));
    }

    #[test]
    fn curl_exits_become_answers() {
        assert_eq!(
            answer_of(0, "OK\n200", ""),
            Answer::Http {
                status: 200,
                body: "OK".into()
            }
        );
        // A body with newlines keeps them; the status is the last line.
        assert_eq!(
            answer_of(0, "a\nb\n503", ""),
            Answer::Http {
                status: 503,
                body: "a\nb".into()
            }
        );
        assert_eq!(answer_of(7, "\n000", "Failed to connect").word(), "refused");
        assert_eq!(answer_of(28, "\n000", "").word(), "timed out");
        let bad_cert = answer_of(60, "\n000", "curl: (60) SSL certificate problem\n");
        assert_eq!(bad_cert.word(), "curl exit 60");
        assert_eq!(
            bad_cert.failure().as_deref(),
            Some("curl exit 60: curl: (60) SSL certificate problem")
        );
        assert_eq!(answer_of(0, "OK\n200", "").failure(), None);
        assert!(answer_of(0, "\n000", "").failure().is_some());
    }
}
