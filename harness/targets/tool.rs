//! Running the external build tools (mmdebstrap, tar, mkfs.ext4, qemu-img) with their
//! output kept in the build log and quoted in the error when they fail.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use tokio::process::Command;

use crate::error::infra;

/// How many trailing lines of a failed tool's stderr go into the error message.
const QUOTED_LINES: usize = 25;

/// Run `cmd` to completion, append its command line, output and duration to `log`,
/// and turn a failure into an infra error quoting the end of its stderr.
pub async fn run(what: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let line = command_line(cmd);
    let started = Instant::now();
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(|e| {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        infra(format!(
            "{what}: cannot run {program}: {e} (is it installed? `coldboot doctor` lists what is needed)"
        ))
    })?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    append_log(
        log,
        &format!(
            "$ {line}\n{}{}[{what}: {} in {secs:.1}s]\n\n",
            String::from_utf8_lossy(&out.stdout),
            stderr,
            out.status
        ),
    );
    if out.status.success() {
        tracing::debug!(what, secs, "build step finished");
        return Ok(());
    }
    Err(infra(format!(
        "{what} failed ({}): {line}\n{}\n(full log: {})",
        out.status,
        quote_tail(&stderr, QUOTED_LINES),
        log.display()
    )))
}

/// Append text to the build log; a log that cannot be written is not worth failing a build.
pub fn append_log(log: &Path, text: &str) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    if let Ok(mut f) = file {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The command as a shell-like line, for logs and error messages.
fn command_line(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(' ') || s.is_empty() {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of `text`, each indented with `| ` so they read as a quote.
pub fn quote_tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "  | (no output on stderr)".into();
    }
    lines[start..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_the_tail() {
        let text = (1..=30).map(|i| format!("line {i}\n")).collect::<String>();
        let q = quote_tail(&text, 3);
        assert_eq!(q, "  | line 28\n  | line 29\n  | line 30");
        assert_eq!(quote_tail("\n\n", 3), "  | (no output on stderr)");
    }

    #[tokio::test]
    async fn failure_quotes_stderr_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo 'bad thing' >&2; exit 3"]);
        let err = run("demo step", &mut cmd, &log).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("demo step failed") && msg.contains("  | bad thing"),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&err), crate::error::exit::INFRA);
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(
            logged.contains("$ sh -c") && logged.contains("out\nbad thing"),
            "{logged}"
        );
    }

    #[tokio::test]
    async fn missing_program_is_an_infra_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/nonexistent/coldboot-tool");
        let err = run("x", &mut cmd, &dir.path().join("l")).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot run /nonexistent/coldboot-tool")
        );
    }
}
