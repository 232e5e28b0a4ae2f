//! Shell quoting for guest commands, and the interactive shell of `coldboot boot TARGET`.
//!
//! The interactive shell uses the system `ssh` client, which already does terminals well.
//! It needs the private key as a file: that file lives in a fresh 0700 temporary folder,
//! is created 0600, and is deleted as soon as the `ssh` process ends (also on error).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

pub use super::quote::quote;
use super::ssh::Guest;
use crate::error::infra;

/// Words of the shell grammar that are special as a command's first word.
const RESERVED: [&str; 16] = [
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done",
    "in", "function", "select", "time",
];

/// The command line the guest's shell runs for the words after `coldboot boot T --`.
/// One word is a shell string as written (`-- 'a | b'` pipes in the guest); several are
/// each quoted, so the program gets the argv that was typed (`-- sh -c 'x; y'` runs
/// `sh` with two arguments). `None` when there are no words.
pub fn command_line(words: &[String]) -> Option<String> {
    match words {
        [] => None,
        [one] => Some(one.clone()),
        many => Some(
            many.iter()
                .map(|w| {
                    // `quote` leaves `A=B` and `if` bare; as a first word they would be an
                    // assignment or grammar, not the program the user typed.
                    if w.contains('=') || RESERVED.contains(&w.as_str()) {
                        format!("'{}'", w.replace('\'', "'\\''"))
                    } else {
                        quote(w)
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// Arguments for the system `ssh` client: the per-run key only, root at the forwarded
/// port, no `known_hosts` writes. With `known_hosts` (a file holding the run's pinned host
/// key) ssh refuses any other key; without one (a guest whose key is not pinned) it
/// checks nothing. A remote command may follow after `--` (ssh also reads options after
/// the destination; a `--` there ends them, while one before the destination would be
/// sent to the remote shell).
pub fn ssh_client_args(
    key_file: &Path,
    addr: SocketAddr,
    known_hosts: Option<&Path>,
) -> Vec<String> {
    let opt = |o: &str| ["-o".to_owned(), o.to_owned()];
    let mut args = vec!["-i".to_owned(), key_file.display().to_string()];
    let hosts = match known_hosts {
        Some(file) => vec![
            "StrictHostKeyChecking=yes".to_owned(),
            format!("UserKnownHostsFile={}", file.display()),
            "HostKeyAlgorithms=ssh-ed25519".to_owned(),
        ],
        None => vec![
            "StrictHostKeyChecking=no".to_owned(),
            "UserKnownHostsFile=/dev/null".to_owned(),
        ],
    };
    for o in ["IdentitiesOnly=yes", "IdentityAgent=none"]
        .into_iter()
        .chain(hosts.iter().map(String::as_str))
        .chain(["GlobalKnownHostsFile=/dev/null", "LogLevel=ERROR"])
    {
        args.extend(opt(o));
    }
    args.extend([
        "-p".to_owned(),
        addr.port().to_string(),
        format!("root@{}", addr.ip()),
    ]);
    args
}

impl Guest {
    /// Open an interactive root shell in the guest on the caller's terminal, using the
    /// system `ssh` client. Returns the shell's exit status.
    pub async fn interactive_shell(&self) -> anyhow::Result<i32> {
        self.system_ssh(None).await
    }

    /// Run `cmd` in the guest through the system `ssh` client, stdin from /dev/null and
    /// output on the caller's stdout/stderr. Returns its exit status (255: ssh failed).
    pub async fn system_ssh_exec(&self, cmd: &str) -> anyhow::Result<i32> {
        self.system_ssh(Some(cmd)).await
    }

    async fn system_ssh(&self, cmd: Option<&str>) -> anyhow::Result<i32> {
        let dir = private_tempdir()?;
        let key_file = dir.path().join("id_ed25519");
        write_private_key(&key_file, &self.key().private_openssh()?)?;
        // The guest already showed the run's host key on this port; hold ssh to it too.
        let known_hosts = dir.path().join("known_hosts");
        let pinned = if self.host_key().pinned {
            let blob =
                base64::engine::general_purpose::STANDARD.encode(self.key().host_public_blob());
            let line = format!(
                "[{}]:{} ssh-ed25519 {blob}\n",
                self.addr().ip(),
                self.addr().port()
            );
            std::fs::write(&known_hosts, line)
                .map_err(|e| infra(format!("cannot write {}: {e}", known_hosts.display())))?;
            Some(known_hosts.as_path())
        } else {
            None
        };
        let mut command = tokio::process::Command::new("ssh");
        command.args(ssh_client_args(&key_file, self.addr(), pinned));
        if let Some(cmd) = cmd {
            command
                .arg("--")
                .arg(cmd)
                .stdin(std::process::Stdio::null());
        }
        let status = command.status().await;
        // Delete the key before anything else can fail; the folder goes when `dir` drops.
        let removed = std::fs::remove_file(&key_file);
        let status =
            status.map_err(|e| infra(format!("cannot run the system `ssh` client: {e}")))?;
        removed
            .with_context(|| format!("cannot delete the temporary key {}", key_file.display()))?;
        Ok(status.code().unwrap_or(255))
    }
}

/// A fresh temporary folder only the current user can enter (0700).
fn private_tempdir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("coldboot-ssh-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| {
            infra(format!(
                "cannot create a temporary folder for the SSH key: {e}"
            ))
        })
}

/// Create `path` 0600 (never replacing an existing file) and write the key into it.
fn write_private_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_word_stays_a_shell_string() {
        assert_eq!(command_line(&[]), None);
        assert_eq!(
            command_line(&words(&["systemctl status x | head -3"])).unwrap(),
            "systemctl status x | head -3"
        );
    }

    #[test]
    fn several_words_keep_their_argv() {
        let line = command_line(&words(&["sh", "-c", "sleep 30; systemctl is-active x"])).unwrap();
        assert_eq!(line, "sh -c 'sleep 30; systemctl is-active x'");
        let line = command_line(&words(&["FOO=1", "if", "x=y"])).unwrap();
        assert_eq!(line, "'FOO=1' 'if' 'x=y'");
    }

    /// The real test of quoting: a local POSIX shell reads the line back into the same
    /// argv, for a word with spaces, both quotes, `$`, a backslash and a newline.
    #[test]
    fn a_shell_reads_back_the_words_as_typed() {
        let typed = words(&[
            "printf",
            "[%s]\\n",
            "a b",
            "it's \"quoted\"",
            "$HOME and $(id) and `id`",
            "back\\slash\nnewline",
            "*",
            "",
            "~",
        ]);
        let line = command_line(&typed).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .env("HOME", "/home/should-not-appear")
            .output()
            .unwrap();
        let expected: String = typed[2..].iter().map(|w| format!("[{w}]\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{line}");
    }

    #[test]
    fn client_args_pin_the_key_and_skip_known_hosts() {
        let addr: SocketAddr = "127.0.0.1:41193".parse().unwrap();
        let args = ssh_client_args(Path::new("/tmp/k/id"), addr, None).join(" ");
        assert!(args.starts_with("-i /tmp/k/id "), "{args}");
        assert!(args.contains("-o UserKnownHostsFile=/dev/null"), "{args}");
        assert!(args.contains("-o StrictHostKeyChecking=no"), "{args}");
        assert!(args.ends_with("-p 41193 root@127.0.0.1"), "{args}");
        let pinned = ssh_client_args(
            Path::new("/tmp/k/id"),
            addr,
            Some(Path::new("/tmp/k/known_hosts")),
        )
        .join(" ");
        assert!(pinned.contains("-o StrictHostKeyChecking=yes"), "{pinned}");
        assert!(
            pinned.contains("-o UserKnownHostsFile=/tmp/k/known_hosts"),
            "{pinned}"
        );
        assert!(!pinned.contains("StrictHostKeyChecking=no"), "{pinned}");
    }

    #[test]
    fn private_key_file_is_0600_and_never_overwrites() {
        let dir = private_tempdir().unwrap();
        let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let path = dir.path().join("k");
        write_private_key(&path, "secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private_key(&path, "other").is_err());
    }
}
