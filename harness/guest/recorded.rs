//! Commands and their outputs, recorded from a real guest and played back: how the
//! runner's logic is tested without a VM ([`super::ssh::Guest::recorded`]).
//!
//! Recording: with `COLDBOOT_RECORD_COMMANDS=FILE`, every command a [`Guest`] runs over
//! SSH is appended to FILE as one JSON line ([`Exchange`]): the command, its output, and
//! when it was answered. Playback answers a command with the first unused recorded
//! exchange of the same command, in the order they were recorded; a command never
//! recorded is an error naming it, so a test cannot pass on an answer nobody saw.
//!
//! [`Guest`]: super::ssh::Guest

use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::exec::ExecOutput;

/// The environment variable naming the file commands are recorded to.
pub const RECORD_ENV: &str = "COLDBOOT_RECORD_COMMANDS";

/// One command and what it left behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The command line, as sent.
    pub cmd: String,
    /// What it printed and its status.
    #[serde(flatten)]
    pub output: ExecOutput,
    /// Seconds since the Unix epoch when the answer arrived (for the reader; playback
    /// answers in order, not on time).
    #[serde(default)]
    pub answered_unix: f64,
}

/// Recorded exchanges being played back.
#[derive(Debug, Default)]
pub struct Answers {
    left: Mutex<Vec<Exchange>>,
    asked: Mutex<Vec<String>>,
}

impl Answers {
    /// Play back `exchanges`, in their order.
    pub fn new(exchanges: Vec<Exchange>) -> Answers {
        Answers {
            left: Mutex::new(exchanges),
            asked: Mutex::default(),
        }
    }

    /// Read a recording (JSON lines, as [`record`] writes them); a line that does not
    /// parse is an error naming the file and line.
    pub fn load(path: &Path) -> anyhow::Result<Answers> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let exchanges = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<Vec<Exchange>>>()?;
        Ok(Answers::new(exchanges))
    }

    /// The next recorded answer to `cmd`; an error when none is left.
    pub fn answer(&self, cmd: &str) -> anyhow::Result<ExecOutput> {
        self.asked.lock().expect("asked lock").push(cmd.to_string());
        let mut left = self.left.lock().expect("answers lock");
        match left.iter().position(|e| e.cmd == cmd) {
            Some(i) => Ok(left.remove(i).output),
            None => Err(anyhow::anyhow!(
                "no recorded answer (left) for the command `{cmd}`"
            )),
        }
    }

    /// Every command asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked lock").clone()
    }
}

/// Append one exchange to the file [`RECORD_ENV`] names, if it names one. Recording is a
/// tool for making fixtures: a write that fails is logged, never a failed run.
pub fn record(cmd: &str, output: &ExecOutput) {
    let Some(path) = std::env::var_os(RECORD_ENV) else {
        return;
    };
    let line = Exchange {
        cmd: cmd.to_string(),
        output: output.clone(),
        answered_unix: crate::unix::now(),
    };
    let written = serde_json::to_string(&line)
        .map_err(anyhow::Error::from)
        .and_then(|json| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            // One write per line: sessions record side by side.
            f.write_all(format!("{json}\n").as_bytes())?;
            Ok(())
        });
    if let Err(e) = written {
        tracing::warn!(path = %Path::new(&path).display(), "cannot record a command: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(stdout: &str) -> ExecOutput {
        ExecOutput {
            status: 0,
            signal: None,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    fn ex(cmd: &str, stdout: &str) -> Exchange {
        Exchange {
            cmd: cmd.into(),
            output: out(stdout),
            answered_unix: 0.0,
        }
    }

    #[test]
    fn answers_in_recorded_order_and_never_invents_one() {
        let a = Answers::new(vec![ex("a", "1"), ex("b", "x"), ex("a", "2")]);
        assert_eq!(a.answer("a").unwrap().stdout, "1");
        assert_eq!(a.answer("a").unwrap().stdout, "2");
        let err = a.answer("a").unwrap_err().to_string();
        assert!(err.contains("no recorded answer"), "{err}");
        assert_eq!(a.answer("b").unwrap().stdout, "x");
        assert_eq!(a.asked(), ["a", "a", "a", "b"]);
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(
            &p,
            format!(
                "{}\nnot json\n",
                serde_json::to_string(&ex("a", "1")).unwrap()
            ),
        )
        .unwrap();
        let err = Answers::load(&p).unwrap_err().to_string();
        assert!(err.contains("r.jsonl:2: "), "{err}");
    }
}
