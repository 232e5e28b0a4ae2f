//! The QMP connection to one QEMU, and the parser for `info usernet`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use crate::error::infra;

type Writer = QmpStreamTokio<WriteHalf<UnixStream>>;

/// Longest time one QMP command may take before the VM is treated as wedged.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A negotiated QMP session; commands may be issued concurrently.
pub struct Qmp {
    service: QapiService<Writer>,
    events: JoinHandle<()>,
}

impl Qmp {
    /// Connect to the QMP socket at `path` (which must exist) and negotiate capabilities.
    pub async fn connect(path: &Path) -> Result<Qmp> {
        // Unix socket paths are limited to 107 bytes; reach a deep run directory through
        // an open descriptor of it instead (`/proc/self/fd/N/qmp.sock`).
        let (_dir, short) = short_socket_path(path)?;
        let negotiation = QmpStreamTokio::open_uds(&short)
            .await
            .map_err(|e| infra(format!("cannot connect to QMP at {}: {e}", path.display())))?;
        let stream = negotiation
            .negotiate()
            .await
            .map_err(|e| infra(format!("QMP handshake at {} failed: {e}", path.display())))?;
        let (service, events) = stream.spawn_tokio();
        Ok(Qmp { service, events })
    }

    async fn run<C>(&self, command: C) -> Result<C::Ok>
    where
        C: qapi::Command,
        Writer: futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.service.execute(command)).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(e)) => Err(infra(format!("QMP {} failed: {e}", C::NAME))),
            Err(_) => Err(infra(format!(
                "QMP {} got no answer in {}s",
                C::NAME,
                COMMAND_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Run a human monitor command (such as `info usernet`) and return its text.
    pub async fn human(&self, command_line: &str) -> Result<String> {
        self.run(qmp::human_monitor_command {
            command_line: command_line.to_string(),
            cpu_index: None,
        })
        .await
    }

    /// The host ports that user-mode networking forwards to the guest.
    pub async fn host_forwards(&self) -> Result<Vec<HostForward>> {
        let text = self.human("info usernet").await?;
        Ok(parse_usernet(&text))
    }

    /// QEMU's run state as QMP spells it: `running`, `paused`, `io-error`...
    pub async fn run_state(&self) -> Result<String> {
        let info = self.run(qmp::query_status {}).await?;
        Ok(serde_json::to_value(info.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string()))
    }

    /// Plug (`up`) or unplug the cable of the device or netdev called `name`.
    pub async fn set_link(&self, name: &str, up: bool) -> Result<()> {
        self.run(qmp::set_link {
            name: name.to_string(),
            up,
        })
        .await
        .map(|_| ())
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// `path` itself when short enough for a unix socket, else a `/proc/self/fd` path through
/// its directory, which stays valid while the returned directory handle is open.
fn short_socket_path(path: &Path) -> Result<(Option<std::fs::File>, PathBuf)> {
    const MAX_SUN_PATH: usize = 100;
    if path.as_os_str().len() < MAX_SUN_PATH {
        return Ok((None, path.to_path_buf()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok((None, path.to_path_buf()));
    };
    let handle = std::fs::File::open(dir)
        .map_err(|e| infra(format!("cannot open run directory {}: {e}", dir.display())))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
    Ok((
        Some(handle),
        Path::new(&format!("/proc/self/fd/{fd}")).join(name),
    ))
}

/// One `hostfwd` rule as QEMU reports it: a host address that reaches a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostForward {
    /// Where the host listens.
    pub host: SocketAddr,
    /// The guest TCP port it reaches.
    pub guest_port: u16,
}

/// Parse `info usernet` output: every `TCP[HOST_FORWARD]` line, for example
/// `TCP[HOST_FORWARD]  12       127.0.0.1 35441       10.0.2.15    22     0     0`.
/// Lines that do not parse are skipped.
pub fn parse_usernet(text: &str) -> Vec<HostForward> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next()? != "TCP[HOST_FORWARD]" {
                return None;
            }
            let _fd = fields.next()?;
            let host_ip: Ipv4Addr = fields.next()?.parse().ok()?;
            let host_port: u16 = fields.next()?.parse().ok()?;
            let _guest_ip = fields.next()?;
            let guest_port: u16 = fields.next()?.parse().ok()?;
            Some(HostForward {
                host: SocketAddr::V4(SocketAddrV4::new(host_ip, host_port)),
                guest_port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_qemu_7_2_usernet_gives_both_forwards() {
        let text = include_str!("../../tests/fixtures/vm/info-usernet-qemu7.2.txt");
        assert_eq!(
            parse_usernet(text),
            vec![
                HostForward {
                    host: "127.0.0.1:35441".parse().unwrap(),
                    guest_port: 22
                },
                HostForward {
                    host: "127.0.0.1:34809".parse().unwrap(),
                    guest_port: 80
                },
            ]
        );
    }

    #[test]
    fn other_connections_and_garbage_are_ignored() {
        let text = "Hub -1 (n0):\r\n  TCP[ESTABLISHED]  15  127.0.0.1 35441  10.0.2.15 22 0 0\r\n  TCP[HOST_FORWARD]  x\r\n  TCP[HOST_FORWARD] 3 127.0.0.1 99999 10.0.2.15 22 0 0\r\n";
        assert!(parse_usernet(text).is_empty());
    }
}
