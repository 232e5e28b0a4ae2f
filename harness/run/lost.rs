//! A VM lost in the middle of a phase: QEMU killed from outside, or the guest rebooting
//! or powering off by itself. Whatever a phase awaits on the guest is raced against its
//! QEMU exiting (and against a console failure), so the pair ends within seconds with an
//! infrastructure error that says which, quoting QEMU's exit status and the serial tail,
//! instead of at the next deadline.
//!
//! A reboot the scenario asks for (`reboot`/`power_cycle` actions, `start: reboot`) is
//! made by the harness and is never raced: only a change the scenario did not ask for
//! lands here.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use super::watch::Journal;
use crate::error::infra;
use crate::vm::{QemuExit, Vm};

/// How long to wait for QEMU's exit to be published once an SSH call failed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long a guest whose journal stream ended may take to go down (a guest shutting
/// itself down stops its services first) before the wait's own result stands.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How often QEMU's run state is read while a phase waits.
const STATE_EVERY: Duration = Duration::from_secs(2);

/// What happened to the guest, read from QEMU's exit and the console's last lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The kernel printed "reboot: Power down": the guest shut itself down.
    PoweredOff,
    /// The kernel printed "reboot: Restarting system" (QEMU runs with `-no-reboot`).
    Rebooted,
    /// QEMU died of a signal that the harness did not send.
    Killed,
    /// QEMU exited for another reason.
    Exited,
}

/// Classify a QEMU exit during a phase.
pub fn classify(exit: &QemuExit, tail: &[String]) -> Loss {
    let said = |needle: &str| tail.iter().any(|l| l.contains(needle));
    if said("reboot: Power down") {
        Loss::PoweredOff
    } else if said("reboot: Restarting system") {
        Loss::Rebooted
    } else if exit.status.starts_with("signal") {
        Loss::Killed
    } else {
        Loss::Exited
    }
}

/// The infrastructure error for QEMU ending during `during` (e.g. "phase boot, while
/// checking unit:x=active"), quoting its exit status, stderr and the serial tail.
pub fn describe(
    exit: &QemuExit,
    tail: &[String],
    serial_log: &Path,
    during: &str,
) -> anyhow::Error {
    let what = match classify(exit, tail) {
        Loss::PoweredOff => "the guest powered off by itself",
        Loss::Rebooted => "the guest rebooted by itself",
        Loss::Killed => "QEMU was killed from outside the harness",
        Loss::Exited => "QEMU exited unexpectedly",
    };
    let mut msg = format!(
        "{what} during {during} (boot {}, QEMU {}); the scenario did not ask for it",
        exit.boot_index, exit.status
    );
    let stderr = exit.stderr.trim();
    if !stderr.is_empty() {
        msg.push_str(&format!("\nQEMU's stderr:\n{stderr}"));
    }
    if tail.is_empty() {
        msg.push_str(&format!(
            "\nthe serial console ({}) was empty",
            serial_log.display()
        ));
    } else {
        msg.push_str(&format!(
            "\nlast lines of the serial console ({}):",
            serial_log.display()
        ));
        for line in tail {
            msg.push_str(&format!("\n  | {line}"));
        }
    }
    infra(msg)
}

/// Run `work` on the guest of `vm`, but end with the reason as soon as QEMU exits or
/// the console shows a failure. An error from `work` (SSH usually notices first) is
/// replaced by the reason when QEMU turns out to be gone.
pub async fn guarded<T>(
    vm: &Vm,
    journal: &Journal,
    during: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let lost = |exit: QemuExit| describe(&exit, &vm.serial_tail(), vm.serial_log_path(), during);
    let result = tokio::select! {
        biased;
        exit = vm.exited() => return Err(lost(exit)),
        failure = vm.console_failure() => return Err(infra(format!("{failure} (during {during})"))),
        state = stopped_on_io_error(vm) => return Err(infra(format!(
            "QEMU paused the guest on a failed disk write (run state {state}) during {during}: \
             the disk holding its overlay {} is full or failing",
            vm.overlay_path().display()
        ))),
        result = work => result,
    };
    // A wait that ended because the guest went away (the journal stream closed, SSH
    // reset) is the loss, not a verdict on the system.
    let grace = if journal.ended() {
        SHUTDOWN_GRACE
    } else if result.is_err() || !vm.is_running() {
        EXIT_GRACE
    } else {
        return result;
    };
    match tokio::time::timeout(grace, vm.exited()).await {
        Ok(exit) => Err(lost(exit)),
        Err(_) => result,
    }
}

/// Resolves when QEMU has paused the guest on a disk error (by default it does so on
/// ENOSPC instead of failing the guest's write): otherwise the guest would hang silently.
async fn stopped_on_io_error(vm: &Vm) -> String {
    loop {
        tokio::time::sleep(STATE_EVERY).await;
        if let Some(state) = vm.run_state().await
            && state == "io-error"
        {
            return state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: &str) -> QemuExit {
        QemuExit {
            boot_index: 1,
            status: status.into(),
            stderr: String::new(),
        }
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    // Tails as the console scanner keeps them, from recorded debian-stock boots.
    const POWER_DOWN: &str =
        "[  OK  ] Reached target System Power Off.\n[   41.602911] reboot: Power down";
    const RESTART: &str =
        "[  OK  ] Reached target System Reboot.\n[   39.116120] reboot: Restarting system";

    #[test]
    fn a_poweroff_a_reboot_and_a_kill_are_told_apart() {
        assert_eq!(
            classify(&exit("exit status: 0"), &lines(POWER_DOWN)),
            Loss::PoweredOff
        );
        assert_eq!(
            classify(&exit("exit status: 0"), &lines(RESTART)),
            Loss::Rebooted
        );
        assert_eq!(
            classify(
                &exit("signal: 9 (SIGKILL)"),
                &lines("Debian GNU/Linux 12 vm ttyS0")
            ),
            Loss::Killed
        );
        assert_eq!(classify(&exit("exit status: 1"), &[]), Loss::Exited);
    }

    #[test]
    fn the_message_quotes_the_status_and_the_serial_tail() {
        let e = describe(
            &exit("signal: 9 (SIGKILL)"),
            &lines("a\nb"),
            Path::new("/r/serial-1.log"),
            "phase boot",
        );
        assert_eq!(crate::error::exit_code(&e), crate::error::exit::INFRA);
        assert_eq!(
            e.to_string(),
            "QEMU was killed from outside the harness during phase boot (boot 1, QEMU \
             signal: 9 (SIGKILL)); the scenario did not ask for it\nlast lines of the serial \
             console (/r/serial-1.log):\n  | a\n  | b"
        );
    }
}
