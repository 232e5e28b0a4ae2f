//! The serial console: written to `serial-N.log` as it arrives, and scanned line by line
//! for the signs of a boot that cannot succeed (kernel panic, emergency mode, the
//! initramfs shell).
//!
//! The scanner is pure ([`ConsoleScanner`]) and tested on recorded console text; the
//! reader task around it only moves bytes.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

/// Lines before the failing line that are quoted with it (they usually say why).
const CONTEXT_LINES: usize = 6;
/// A console "line" longer than this is scanned in pieces of this size.
const MAX_LINE: usize = 64 * 1024;

/// The kind of boot failure seen on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleFailureKind {
    /// "Kernel panic - not syncing".
    KernelPanic,
    /// systemd's emergency shell (a required mount or unit failed).
    EmergencyMode,
    /// The initramfs gave up finding the root file system and opened its shell.
    InitramfsShell,
}

impl fmt::Display for ConsoleFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConsoleFailureKind::KernelPanic => "kernel panic",
            ConsoleFailureKind::EmergencyMode => "emergency mode",
            ConsoleFailureKind::InitramfsShell => "initramfs shell (root file system not found)",
        })
    }
}

/// A failed boot seen on the console, with the lines that show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsoleFailure {
    /// What kind of failure.
    pub kind: ConsoleFailureKind,
    /// The console lines quoted as evidence; the last one is the line that matched.
    pub lines: Vec<String>,
    /// The serial log that holds the whole console (empty when scanned from memory).
    pub serial_log: PathBuf,
}

impl fmt::Display for ConsoleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on the serial console", self.kind)?;
        if !self.serial_log.as_os_str().is_empty() {
            write!(f, " ({})", self.serial_log.display())?;
        }
        f.write_str(":")?;
        for line in &self.lines {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

/// Which failure, if any, one cleaned console line announces.
pub fn match_failure(line: &str) -> Option<ConsoleFailureKind> {
    const PANIC: &[&str] = &["Kernel panic - not syncing"];
    const EMERGENCY: &[&str] = &[
        "You are in emergency mode",
        "Welcome to emergency mode",
        "Give root password for maintenance",
        // sulogin's answer in emergency (and rescue) mode when root has no password.
        "Cannot open access to console, the root account is locked",
    ];
    const INITRAMFS: &[&str] = &["Dropping to a shell!"];
    if PANIC.iter().any(|p| line.contains(p)) {
        Some(ConsoleFailureKind::KernelPanic)
    } else if EMERGENCY.iter().any(|p| line.contains(p)) {
        Some(ConsoleFailureKind::EmergencyMode)
    } else if INITRAMFS.iter().any(|p| line.contains(p)) {
        Some(ConsoleFailureKind::InitramfsShell)
    } else {
        None
    }
}

/// Whether a console line shows that the guest kernel itself is running.
pub fn shows_kernel_running(line: &str) -> bool {
    line.contains("Linux version")
}

/// A console line without the carriage return and terminal escape sequences (colours).
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte (0x40..=0x7e); other escapes: drop ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\t' => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

/// Line-by-line state of one console: recent lines, the first failure, kernel seen.
#[derive(Debug, Clone, Default)]
pub struct ConsoleScanner {
    recent: VecDeque<String>,
    partial: Vec<u8>,
    /// The first failure seen, if any.
    pub failure: Option<ConsoleFailure>,
    /// Whether a line showed the kernel running.
    pub kernel_running: bool,
    /// How many complete lines were scanned.
    pub lines_seen: usize,
}

impl ConsoleScanner {
    /// Scan one complete line; returns the failure when this line is the first one.
    pub fn push_line(&mut self, raw: &str) -> Option<&ConsoleFailure> {
        let line = clean_line(raw);
        self.lines_seen += 1;
        if shows_kernel_running(&line) {
            self.kernel_running = true;
        }
        let matched = if self.failure.is_none() {
            match_failure(&line)
        } else {
            None
        };
        if !line.is_empty() {
            self.recent.push_back(line);
            if self.recent.len() > CONTEXT_LINES + 1 {
                self.recent.pop_front();
            }
        }
        let kind = matched?;
        self.failure = Some(ConsoleFailure {
            kind,
            lines: self.recent.iter().cloned().collect(),
            serial_log: PathBuf::new(),
        });
        self.failure.as_ref()
    }

    /// Scan a chunk of raw console bytes (lines may be split across chunks).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            self.push_line(&String::from_utf8_lossy(&line[..nl]));
        }
        // A guest that writes without newlines must not grow this without bound.
        if self.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.push_line(&String::from_utf8_lossy(&line));
        }
    }

    /// The last non-empty text on the console: the unfinished line, or else the last line.
    pub fn last_text(&self) -> String {
        let partial = clean_line(&String::from_utf8_lossy(&self.partial));
        if partial.is_empty() {
            self.recent.back().cloned().unwrap_or_default()
        } else {
            partial
        }
    }
}

/// What the reader task publishes after every chunk.
#[derive(Debug, Clone, Default)]
pub struct ConsoleState {
    /// The first failure seen, with the serial log path filled in.
    pub failure: Option<ConsoleFailure>,
    /// Whether the kernel was seen running.
    pub kernel_running: bool,
    /// The last text on the console, for "stuck at ..." messages.
    pub last_text: String,
    /// The console reached end of file (QEMU closed it, normally by exiting).
    pub closed: bool,
    /// The last few non-empty lines, cleaned, oldest first (quoted when QEMU ends).
    pub tail: Vec<String>,
}

/// The most a `serial-N.log` keeps: a guest that floods its console cannot fill the
/// evidence disk. Past it the log ends with [`CUT_MARK`] and the console is still scanned
/// (for panics) but no longer written.
pub const SERIAL_LOG_CAP: u64 = 4 * 1024 * 1024;

/// The line that ends an evidence file cut at its cap.
pub fn cut_mark(cap: u64) -> String {
    format!(
        "\n[coldboot: cut here, the file reached its cap of {} MiB; the rest was not kept]\n",
        cap / (1024 * 1024)
    )
}

/// Copy the console from `reader` into the log file at `log_path` (if any), scanning as
/// it goes and publishing the state on `state`. Returns when the console closes.
pub async fn capture(
    mut reader: impl AsyncRead + Unpin,
    log_path: Option<PathBuf>,
    state: watch::Sender<ConsoleState>,
) {
    let mut log = log_path
        .as_ref()
        .and_then(|p| std::fs::File::create(p).ok());
    let mut scanner = ConsoleScanner::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(file) = log.as_mut() {
            // Unbuffered on purpose: the log is evidence even if the harness dies next.
            let room = SERIAL_LOG_CAP.saturating_sub(written);
            let take = (n as u64).min(room) as usize;
            let _ = file.write_all(&buf[..take]);
            written += take as u64;
            if take < n {
                let _ = file.write_all(cut_mark(SERIAL_LOG_CAP).as_bytes());
                tracing::warn!(
                    "serial console log {} reached its cap of {SERIAL_LOG_CAP} bytes; cut",
                    log_path
                        .as_deref()
                        .unwrap_or(std::path::Path::new("?"))
                        .display()
                );
                log = None;
            }
        }
        scanner.push_bytes(&buf[..n]);
        publish(&state, &scanner, log_path.as_ref(), false);
    }
    publish(&state, &scanner, log_path.as_ref(), true);
}

fn publish(
    state: &watch::Sender<ConsoleState>,
    scanner: &ConsoleScanner,
    log_path: Option<&PathBuf>,
    closed: bool,
) {
    let failure = scanner.failure.clone().map(|mut f| {
        f.serial_log = log_path.cloned().unwrap_or_default();
        f
    });
    state.send_replace(ConsoleState {
        failure,
        kernel_running: scanner.kernel_running,
        last_text: scanner.last_text(),
        closed,
        tail: scanner.recent.iter().cloned().collect(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ROOTFS: &str = include_str!("../../tests/fixtures/vm/serial-no-rootfs-panic.log");

    #[test]
    fn recorded_panic_without_root_fs_is_a_kernel_panic_with_its_reason() {
        let mut scanner = ConsoleScanner::default();
        scanner.push_bytes(NO_ROOTFS.as_bytes());
        assert!(scanner.kernel_running);
        let failure = scanner.failure.expect("the recorded console shows a panic");
        assert_eq!(failure.kind, ConsoleFailureKind::KernelPanic);
        let last = failure.lines.last().unwrap();
        assert!(
            last.contains("Kernel panic - not syncing: VFS: Unable to mount root fs"),
            "{last}"
        );
        assert!(failure.lines.len() > 1 && failure.lines.len() <= CONTEXT_LINES + 1);
        assert!(failure.lines.iter().all(|l| !l.contains('\r')));
    }

    #[test]
    fn a_flood_without_newlines_is_scanned_in_bounded_pieces() {
        let mut scanner = ConsoleScanner::default();
        for _ in 0..100 {
            scanner.push_bytes(&[b'x'; 16 * 1024]);
            assert!(scanner.partial.len() <= MAX_LINE + 16 * 1024);
        }
        assert!(scanner.lines_seen >= 20);
        scanner.push_bytes(b"\nKernel panic - not syncing: after the flood\n");
        assert_eq!(
            scanner.failure.map(|f| f.kind),
            Some(ConsoleFailureKind::KernelPanic)
        );
    }

    #[tokio::test]
    async fn a_flooded_console_log_is_cut_at_its_cap_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial-1.log");
        let line = "flood flood flood flood flood flood flood flood flood flood flood\n";
        let total = SERIAL_LOG_CAP as usize + 1024 * 1024;
        let text: String = line.repeat(total / line.len() + 1);
        let (tx, rx) = watch::channel(ConsoleState::default());
        let reader = std::io::Cursor::new(format!("{text}Kernel panic - not syncing: late\n"));
        capture(reader, Some(log.clone()), tx).await;
        let kept = std::fs::read(&log).unwrap();
        let mark = cut_mark(SERIAL_LOG_CAP);
        assert_eq!(kept.len(), SERIAL_LOG_CAP as usize + mark.len());
        assert!(kept.ends_with(mark.as_bytes()));
        let state = rx.borrow().clone();
        assert!(state.closed);
        assert!(
            state.failure.is_some(),
            "the console is still scanned past the cap"
        );
        assert!(state.tail.last().unwrap().contains("Kernel panic"));
    }

    #[test]
    fn recorded_boot_before_the_panic_is_clean() {
        let before: String = NO_ROOTFS
            .lines()
            .take_while(|l| !l.contains("Kernel panic"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut scanner = ConsoleScanner::default();
        scanner.push_bytes(before.as_bytes());
        assert!(scanner.failure.is_none());
        assert!(scanner.kernel_running);
        assert!(scanner.lines_seen > 300);
    }

    fn scan(text: &str) -> ConsoleScanner {
        let mut scanner = ConsoleScanner::default();
        scanner.push_bytes(text.as_bytes());
        scanner
    }

    #[test]
    fn recorded_emergency_target_boot_is_emergency_mode() {
        // Debian 12, systemd 252, booted with systemd.unit=emergency.target.
        let text = include_str!("../../tests/fixtures/vm/serial-emergency-mode.log");
        let failure = scan(text)
            .failure
            .expect("the recorded console shows emergency mode");
        assert_eq!(failure.kind, ConsoleFailureKind::EmergencyMode);
        let last = failure.lines.last().unwrap();
        assert!(last.starts_with("You are in emergency mode."), "{last}");
        assert!(
            failure
                .lines
                .iter()
                .any(|l| l.contains("Reached target emergency.target")),
            "colour codes are gone from the context: {:?}",
            failure.lines
        );
    }

    #[test]
    fn recorded_missing_root_device_is_the_initramfs_shell() {
        // Debian 12 initramfs booted with root=LABEL=nope.
        let text = include_str!("../../tests/fixtures/vm/serial-initramfs-no-root.log");
        let failure = scan(text)
            .failure
            .expect("the recorded console shows the initramfs shell");
        assert_eq!(failure.kind, ConsoleFailureKind::InitramfsShell);
        assert_eq!(
            failure.lines.last().unwrap(),
            "ALERT!  LABEL=nope does not exist.  Dropping to a shell!"
        );
        assert!(
            failure
                .lines
                .iter()
                .any(|l| l.starts_with("Gave up waiting for root"))
        );
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut scanner = ConsoleScanner::default();
        for chunk in ["[  3.3] Kernel pa", "nic - not syn", "cing: boom\r\n"] {
            scanner.push_bytes(chunk.as_bytes());
        }
        assert_eq!(
            scanner.failure.unwrap().lines,
            vec!["[  3.3] Kernel panic - not syncing: boom".to_string()]
        );
    }

    #[test]
    fn emergency_mode_lines_match_after_colour_codes_are_removed() {
        for line in [
            "You are in emergency mode. After logging in, type \"journalctl -xb\"",
            "\u{1b}[0;1;31mWelcome to emergency mode!\u{1b}[0m",
            "Give root password for maintenance",
        ] {
            assert_eq!(
                match_failure(&clean_line(line)),
                Some(ConsoleFailureKind::EmergencyMode),
                "{line}"
            );
        }
        assert_eq!(
            match_failure("Cannot open access to console, the root account is locked."),
            Some(ConsoleFailureKind::EmergencyMode)
        );
        assert_eq!(match_failure("Reached target emergency.target"), None);
        assert_eq!(match_failure("[  OK  ] Started ssh.service"), None);
    }

    #[test]
    fn last_text_prefers_the_unfinished_line() {
        let mut scanner = ConsoleScanner::default();
        scanner.push_bytes(b"SeaBIOS\r\nBooting from ROM..");
        assert_eq!(scanner.last_text(), "Booting from ROM..");
        scanner.push_bytes(b"\r\n");
        assert_eq!(scanner.last_text(), "Booting from ROM..");
    }
}
