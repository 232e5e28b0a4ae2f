//! The systemd parsers against text recorded from a real Debian 12 guest (systemd 252) by
//! `guest_ssh.rs` (`COLDBOOT_RECORD_FIXTURES=1`). No VM needed.
//!
//! The recording set up `cb-slow.service` (oneshot, sleeps), `cb-after.service`
//! (`After=cb-slow.service`) and `cb-fail.service` (exits 3); see `guest_ssh.rs`.

use std::path::Path;

use coldboot::guest::systemd::journal::Entry;
use coldboot::guest::systemd::{self, jobs};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/guest")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn version_of_debian_12() {
    assert_eq!(
        systemd::parse_version(&fixture("systemctl-version.txt")).unwrap(),
        252
    );
}

#[test]
fn show_snapshot_of_eight_units() {
    let units = systemd::parse_show(&fixture("systemctl-show.txt")).unwrap();
    let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ssh.service",
            "coldboot-authorized-key.service",
            "systemd-journald.service",
            "multi-user.target",
            "cb-slow.service",
            "cb-after.service",
            "cb-fail.service",
            "no-such-unit.service",
        ]
    );
    let ssh = &units[0];
    assert_eq!(ssh.service_type.as_deref(), Some("notify"));
    assert_eq!(ssh.exec_main_exit_us, None);
    assert!(ssh.inactive_exit_us.unwrap() < ssh.active_enter_us.unwrap());
    // The adapter's key unit ran to completion before sshd was started.
    let key = &units[1];
    assert_eq!(
        (key.sub_state.as_str(), key.exec_main_code),
        ("exited", Some(1))
    );
    assert!(key.active_enter_us.unwrap() < ssh.inactive_exit_us.unwrap());
    // Targets have no Result/Type/ExecMain* properties.
    let target = &units[3];
    assert_eq!(
        (target.result.clone(), target.service_type.clone()),
        (None, None)
    );
    assert_eq!(target.exec_main_status, None);
    let slow = &units[4];
    assert_eq!(
        (slow.active_state.as_str(), slow.sub_state.as_str()),
        ("activating", "start")
    );
    assert_eq!(slow.active_enter_us, None);
    let fail = &units[6];
    assert_eq!(
        (fail.active_state.as_str(), fail.result.as_deref()),
        ("failed", Some("exit-code"))
    );
    assert_eq!(
        (fail.exec_main_code, fail.exec_main_status),
        (Some(1), Some(3))
    );
    assert_eq!(units[7].load_state, "not-found");
}

#[test]
fn job_queue_labels_are_true_on_252() {
    let text = fixture("list-jobs-after-before.txt");
    let jobs = systemd::parse_jobs(&text, false).unwrap();
    let after = jobs.iter().find(|j| j.unit == "cb-after.service").unwrap();
    let slow = jobs.iter().find(|j| j.unit == "cb-slow.service").unwrap();
    assert_eq!(
        (after.state.as_str(), slow.state.as_str()),
        ("waiting", "running")
    );
    // cb-after is After=cb-slow, and 252 prints it "waiting for" cb-slow: labels are true.
    assert_eq!(after.waiting_for.len(), 1);
    assert_eq!(after.waiting_for[0].id, slow.id);
    assert_eq!(after.waiting_for[0].unit, "cb-slow.service");
    assert_eq!(slow.blocking[0].id, after.id);
    assert!(after.blocking.is_empty() && slow.waiting_for.is_empty());
    // The running cb-slow job is printed "blocking" cb-after: the queue itself says the
    // labels are true, whatever the version.
    assert_eq!(jobs::labels_swapped(&jobs), Some(false));
    assert_eq!(jobs::orient(jobs.clone(), 251), jobs);
    assert!(!jobs::labels_swapped_for_version(252));
}

#[test]
fn boot_time_of_a_tcg_boot() {
    let boot = systemd::parse_boot_time(&fixture("systemd-analyze.txt"))
        .unwrap()
        .expect("boot had finished");
    assert!(boot.kernel_us.is_some() && boot.userspace_us.is_some());
    assert_eq!(
        boot.initrd_us, None,
        "Debian's initramfs is not a systemd initrd"
    );
    let sum = boot.kernel_us.unwrap() + boot.userspace_us.unwrap();
    assert!(sum.abs_diff(boot.total_us) <= 1_000, "{boot:?}");
    let reached = boot.reached.unwrap();
    assert_eq!(reached.target, "graphical.target");
    assert!(reached.after_us <= boot.userspace_us.unwrap());
}

#[test]
fn journal_lines_are_json_from_pid1() {
    let text = fixture("journal-pid1.jsonl");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|v| v["_PID"] == "1"));
    let result = |unit: &str| {
        lines
            .iter()
            .find(|v| v["UNIT"] == unit && v.get("JOB_RESULT").is_some())
            .map(|v| v["JOB_RESULT"].as_str().unwrap().to_owned())
    };
    assert_eq!(result("cb-fail.service").as_deref(), Some("failed"));
    assert_eq!(result("cb-after.service").as_deref(), Some("done"));
}

#[test]
fn systemds_own_ordering_cycle_as_pid1_logged_it() {
    // Recorded by guest_ssh.rs: cb-cyc-a and cb-cyc-b each Wants= and After= the other.
    let text = fixture("journal-ordering-cycle.jsonl");
    let entries: Vec<Entry> = text.lines().filter_map(Entry::parse).collect();
    assert!(entries.iter().all(|e| e.from_manager));
    let cycles = coldboot::check::live::ordering_cycles(
        entries.iter().map(|e| (e.mono_us, e.message.as_str())),
    );
    assert_eq!(cycles.len(), 1, "{text}");
    let c = &cycles[0];
    assert!(
        c.units.contains(&"cb-cyc-a.service".to_string())
            && c.units.contains(&"cb-cyc-b.service".to_string()),
        "{c:?}"
    );
    let deleted = c
        .deleted
        .as_deref()
        .expect("systemd names the job it deleted");
    assert!(
        deleted.starts_with("cb-cyc-") && deleted.ends_with("/start"),
        "{deleted}"
    );
}
