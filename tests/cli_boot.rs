//! End to end through the real binary: image build and cache hit, a cold boot with a
//! command over SSH, a masked sshd that must fail fast and clearly, and Ctrl-C during a
//! boot leaving nothing behind. Real QEMU (TCG here), real systemd, real SSH.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{coldboot, run};

/// VM tests in this binary run one at a time: the machines have 2 cores.
static VM: Mutex<()> = Mutex::new(());

/// PIDs of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // A zombie has an empty command line; it holds nothing.
            if text.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn run_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("coldboot-test-{name}-"))
        .tempdir()
        .expect("tempdir")
}

fn assert_nothing_left(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    let left = processes_mentioning(&needle);
    assert!(
        left.is_empty(),
        "processes still running for {needle}: {left:?}"
    );
    assert!(
        !dir.join("overlay.qcow2").exists(),
        "the overlay in {needle} was not removed"
    );
}

#[test]
fn image_build_then_cache_hit() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let first = run(&["image", "build", "vm-images/debian-stock"]);
    assert!(first.status.success());
    let started = Instant::now();
    let second = run(&["image", "build", "vm-images/debian-stock"]);
    let took = started.elapsed();
    assert!(second.status.success());
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        text.contains("cached in"),
        "second build was not a cache hit: {text}"
    );
    // The same image both times.
    let id = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("id:"))
            .map(str::to_string)
    };
    assert_eq!(id(&first), id(&second));
    eprintln!("cache hit took {took:?}");
}

#[test]
fn boot_runs_a_command_and_tears_down() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = run_dir("boot");
    let d = dir.path().to_str().expect("utf-8 path");
    // Several words after `--` keep their argv: `sh -c SCRIPT NAME ARGS...`, with an
    // argument holding spaces, both quotes and `$` that the guest's shell must not touch.
    let tricky = "a b 'c' \"d\" $HOME $(id -u)";
    let out = run(&[
        "boot",
        "recipe:vm-images/debian-stock",
        "--run-dir",
        d,
        "--",
        "sh",
        "-c",
        "s=$(systemctl is-system-running --wait); echo \"$s\"; printf '<%s>\\n' \"$@\"; [ \"$s\" = running ]",
        "sh",
        tricky,
        "two",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let state = lines.next().unwrap_or_default().trim();
    assert!(
        state == "running" || state == "degraded",
        "the guest said {stdout:?}"
    );
    assert_eq!(
        lines.collect::<Vec<_>>(),
        [format!("<{tricky}>"), "<two>".to_string()],
        "argv did not survive: {stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(if state == "running" { 0 } else { 1 })
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("QEMU start to SSH in"),
        "no boot timing: {stderr}"
    );
    // The guest presented this run's host key (a recipe image must: else exit 3).
    assert!(
        stderr.contains("boot: host key ssh-ed25519 SHA256:") && stderr.contains(" pinned"),
        "no pinned host key: {stderr}"
    );
    assert!(
        dir.path().join("serial-1.log").exists(),
        "the serial log is kept"
    );
    assert!(
        !std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| std::fs::read(e.unwrap().path())
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains("PRIVATE KEY"))),
        "a private key was left in the run folder"
    );
    assert_nothing_left(dir.path());
}

#[test]
fn masked_sshd_fails_clearly_within_its_deadline() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = run_dir("mask");
    let d = dir.path().to_str().expect("utf-8 path");
    let started = Instant::now();
    let out = run(&[
        "boot",
        "recipe:vm-images/debian-stock",
        "--mask",
        "ssh.service",
        "--ssh-timeout",
        "60",
        "--run-dir",
        d,
        "--",
        "true",
    ]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "an infrastructure error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no SSH from the guest"),
        "the error says what failed: {stderr}"
    );
    assert!(
        took < Duration::from_secs(60 + 120),
        "ended {took:?} after start, past its 60 s SSH deadline plus image and QEMU start"
    );
    assert_nothing_left(dir.path());
}

#[test]
fn ctrl_c_during_a_boot_leaves_nothing_behind() {
    require_vm!();
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    // Make sure the image exists, so the interrupt lands during the boot.
    assert!(
        run(&["image", "build", "vm-images/debian-stock"])
            .status
            .success()
    );
    let dir = run_dir("ctrlc");
    let d: PathBuf = dir.path().to_path_buf();
    let mut child = coldboot()
        .args(["boot", "recipe:vm-images/debian-stock", "--run-dir"])
        .arg(&d)
        .args(["--", "sleep", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coldboot starts");
    // Wait until QEMU runs for this run folder.
    let deadline = Instant::now() + Duration::from_secs(60);
    let needle = d.to_string_lossy().to_string();
    while processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let waited = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if waited.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("coldboot did not end within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(&d);
}

#[test]
fn a_bad_target_is_a_usage_error() {
    let out = run(&["boot", "floppy:/dev/fd0", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("floppy:/dev/fd0"),
        "names the value: {stderr}"
    );
}

#[test]
fn a_bad_variant_is_a_usage_error_naming_it() {
    let out = run(&[
        "image",
        "build",
        "vm-images/debian-stock",
        "--variant",
        "nosuch=1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nosuch"), "names the variant: {stderr}");
}
