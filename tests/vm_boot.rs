//! Real QEMU boots through `coldboot::vm`. One VM at a time (the test machines have two
//! cores), serialized by a static lock.
//!
//! Inputs (tests skip with a printed reason when missing):
//! - `COLDBOOT_TEST_IMAGE_DIR`: a built image folder (`disk.qcow2`, `vmlinuz`, `initrd.img`).
//! - `COLDBOOT_TEST_KERNEL`: any x86_64 kernel (else the image's `vmlinuz`), for the
//!   kernel-only boots that exercise the panic detector and the KVM probe.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coldboot::vm::{Accel, AccelChoice, ConsoleFailureKind, Vm, VmConfig, accel};

/// Held by each test for its whole run. A tokio mutex: the guard lives across awaits.
static ONE_VM_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn test_kernel() -> Option<PathBuf> {
    std::env::var_os("COLDBOOT_TEST_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            common::image_dir(&["disk.qcow2"])
                .ok()
                .map(|d| d.join("vmlinuz"))
        })
        .filter(|k| k.is_file())
}

fn tcg() -> AccelChoice {
    AccelChoice {
        accel: Accel::Tcg,
        reason: "tcg requested by the test".into(),
    }
}

fn blank_base(dir: &Path) -> PathBuf {
    let base = dir.join("blank.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .status()
        .expect("qemu-img runs");
    assert!(status.success());
    base
}

fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The SSH server's banner line at `addr`, if one arrives within `wait`.
fn ssh_banner(addr: SocketAddr, wait: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, wait).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.starts_with("SSH-").then(|| text.trim().to_string())
}

/// Poll for the SSH banner until `deadline`, failing fast on a console failure or exit.
async fn wait_for_ssh(vm: &Vm, deadline: Duration) -> String {
    let addr = vm.ssh_addr();
    let poll = async {
        let until = Instant::now() + deadline;
        loop {
            let got = tokio::task::spawn_blocking(move || ssh_banner(addr, Duration::from_secs(3)))
                .await
                .unwrap();
            if let Some(banner) = got {
                return banner;
            }
            assert!(
                Instant::now() < until,
                "no SSH banner at {addr} within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        banner = poll => banner,
        err = vm.boot_failure() => panic!("boot failed: {err:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_without_root_fs_panics_and_teardown_is_complete() {
    let _one = ONE_VM_AT_A_TIME.lock().await;
    let Some(kernel) = test_kernel() else {
        common::skip("set COLDBOOT_TEST_KERNEL or COLDBOOT_TEST_IMAGE_DIR to boot a kernel");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let base = blank_base(tmp.path());
    let base_before = std::fs::read(&base).unwrap();
    let run_dir = tmp.path().join("run");
    let mut config = VmConfig::new(&base, &run_dir, tcg());
    config.kernel = Some(kernel);
    config.cmdline = vec!["console=ttyS0".into(), "coldboot.secret=HIDEME".into()];
    config.guest_forwards = vec![8080];
    config.redact = vec!["HIDEME".into()];

    let started = Instant::now();
    let mut vm = Vm::start(config).await.expect("QEMU starts");
    println!("QEMU up with QMP and ports after {:?}", started.elapsed());
    let pid = vm.pid();
    assert!(process_exists(pid) && vm.is_running());
    let overlay = vm.overlay_path().to_path_buf();
    assert!(overlay.is_file());
    let argv = vm.qemu_argv().join(" ");
    assert!(
        argv.contains("coldboot.secret=<redacted>") && !argv.contains("HIDEME"),
        "{argv}"
    );

    // Both forwards are real listening loopback ports chosen by the kernel, and different.
    let ssh = vm.ssh_addr();
    let web = vm.forward_addr(8080).expect("8080 is forwarded");
    assert!(ssh.ip().is_loopback() && ssh.port() != 0 && ssh.port() != web.port());
    TcpStream::connect_timeout(&ssh, Duration::from_secs(2)).expect("QEMU listens on the SSH port");
    TcpStream::connect_timeout(&web, Duration::from_secs(2)).expect("QEMU listens on port 8080");

    // No root file system: the kernel must panic, and the detector must quote it.
    let failure = tokio::time::timeout(Duration::from_secs(120), vm.console_failure())
        .await
        .expect("a kernel panic within 120s");
    println!("panic seen after {:?}:\n{failure}", started.elapsed());
    assert_eq!(failure.kind, ConsoleFailureKind::KernelPanic);
    assert!(
        failure
            .lines
            .last()
            .unwrap()
            .contains("Kernel panic - not syncing: VFS")
    );
    assert_eq!(failure.serial_log, run_dir.join("serial-1.log"));
    let serial = std::fs::read_to_string(vm.serial_log_path()).unwrap();
    assert!(serial.contains("Kernel panic - not syncing"));
    assert!(
        vm.exited_now().is_none(),
        "panic=0: QEMU keeps running after the panic"
    );

    // A power cycle is a new QEMU on the same overlay, with a new console log and ports.
    vm.power_cycle().await.expect("power cycle");
    assert_eq!(vm.boot_index(), 2);
    assert_ne!(vm.pid(), pid);
    assert!(
        !process_exists(pid),
        "the first QEMU is gone after the power cycle"
    );
    assert_eq!(vm.serial_log_path(), run_dir.join("serial-2.log"));
    assert!(
        vm.console_failure_now().is_none(),
        "the new boot starts with a clean console"
    );
    let failure = tokio::time::timeout(Duration::from_secs(120), vm.console_failure())
        .await
        .expect("the second boot panics too");
    assert_eq!(failure.serial_log, run_dir.join("serial-2.log"));

    let pid2 = vm.pid();
    drop(vm);
    assert!(!process_exists(pid2), "QEMU {pid2} is gone after drop");
    assert!(!overlay.exists(), "overlay removed after drop");
    assert!(
        run_dir.join("serial-1.log").is_file(),
        "serial logs stay as evidence"
    );
    assert_eq!(
        std::fs::read(&base).unwrap(),
        base_before,
        "base image unchanged"
    );
    assert_eq!(coldboot::vm::registry::live_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_that_cannot_start_is_an_infra_error_quoting_stderr() {
    let _one = ONE_VM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let base = blank_base(tmp.path());
    let not_a_kernel = tmp.path().join("not-a-kernel");
    std::fs::write(&not_a_kernel, b"this is not a kernel").unwrap();
    let mut config = VmConfig::new(&base, tmp.path().join("run"), tcg());
    config.kernel = Some(not_a_kernel);
    let err = match Vm::start(config).await {
        Ok(_) => panic!("QEMU must refuse a file that is not a kernel"),
        Err(e) => e,
    };
    let text = format!("{err:#}");
    println!("{text}");
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::INFRA
    );
    assert!(
        text.contains("QEMU exited unexpectedly during boot 1"),
        "{text}"
    );
    assert!(
        text.contains("invalid kernel header"),
        "stderr is quoted: {text}"
    );
    assert!(!tmp.path().join("run/overlay.qcow2").exists());
    assert_eq!(coldboot::vm::registry::live_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_accel_probes_once_then_uses_the_cache() {
    let _one = ONE_VM_AT_A_TIME.lock().await;
    let Some(kernel) = test_kernel() else {
        common::skip("set COLDBOOT_TEST_KERNEL or COLDBOOT_TEST_IMAGE_DIR for the KVM probe");
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let first = accel::choose(Accel::Auto, &kernel, cache.path())
        .await
        .unwrap();
    println!("probe took {:?}: {first:?}", started.elapsed());
    assert_ne!(first.accel, Accel::Auto);
    assert!(first.reason.starts_with("kvm "), "{}", first.reason);
    assert!(started.elapsed() < accel::PROBE_DEADLINE + Duration::from_secs(5));
    assert!(cache.path().join(accel::CACHE_FILE).is_file());

    let started = Instant::now();
    let second = accel::choose(Accel::Auto, &kernel, cache.path())
        .await
        .unwrap();
    assert_eq!(second.accel, first.accel);
    assert!(second.reason.starts_with(&first.reason) && second.reason.ends_with("cached)"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the cache avoids a second probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_image_boots_to_ssh_and_link_and_power_cycle_work() {
    let _one = ONE_VM_AT_A_TIME.lock().await;
    let Ok(dir) = common::image_dir(&["disk.qcow2"]) else {
        common::skip(
            "set COLDBOOT_TEST_IMAGE_DIR to a built image (disk.qcow2, vmlinuz, initrd.img)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let mut config = VmConfig::new(dir.join("disk.qcow2"), &run_dir, tcg());
    config.kernel = Some(dir.join("vmlinuz"));
    config.initrd = Some(dir.join("initrd.img"));
    config.cmdline = ["root=LABEL=root", "rw", "console=ttyS0"]
        .map(String::from)
        .to_vec();

    let started = Instant::now();
    let mut vm = Vm::start(config).await.expect("QEMU starts");
    let overlay = vm.overlay_path().to_path_buf();
    let banner = wait_for_ssh(&vm, Duration::from_secs(180)).await;
    println!("SSH banner '{banner}' after {:?}", started.elapsed());

    // Pulling the cable: slirp still accepts on the host, but no banner comes back.
    vm.set_link(false).await.expect("link down");
    let ssh = vm.ssh_addr();
    let down = tokio::task::spawn_blocking(move || ssh_banner(ssh, Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(down.is_none(), "no SSH with the link down, got {down:?}");
    vm.set_link(true).await.expect("link up");
    wait_for_ssh(&vm, Duration::from_secs(60)).await;

    let first_port = vm.ssh_addr().port();
    let cycled = Instant::now();
    vm.power_cycle().await.expect("power cycle");
    assert_eq!(vm.boot_index(), 2);
    wait_for_ssh(&vm, Duration::from_secs(180)).await;
    println!(
        "SSH again {:?} after the power cycle (port {first_port} -> {})",
        cycled.elapsed(),
        vm.ssh_addr().port()
    );

    let pid = vm.pid();
    vm.shutdown();
    assert!(!process_exists(pid));
    assert!(!overlay.exists());
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_all_kills_every_qemu_and_removes_overlays_even_in_a_deep_run_dir() {
    let _one = ONE_VM_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let base = blank_base(tmp.path());
    // Deeper than the 107-byte limit of unix socket paths: QMP must still connect.
    let run_dir = tmp
        .path()
        .join("a-rather-long-evidence-folder-name/".repeat(4))
        .join("run");
    assert!(run_dir.join("qmp.sock").as_os_str().len() > 108);
    // No kernel: the firmware looks for something to boot, which is enough for plumbing.
    let vm = Vm::start(VmConfig::new(&base, &run_dir, tcg()))
        .await
        .expect("QEMU starts in a deep run directory");
    let pid = vm.pid();
    let overlay = vm.overlay_path().to_path_buf();
    assert!(process_alive(pid) && overlay.is_file());
    assert_eq!(coldboot::vm::registry::live_count(), 1);

    coldboot::vm::registry::cleanup_all();
    let gone = Instant::now();
    while process_alive(pid) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!process_alive(pid), "cleanup_all killed QEMU {pid}");
    assert!(!overlay.exists(), "cleanup_all removed the overlay");
    assert_eq!(coldboot::vm::registry::live_count(), 0);
    let exit = tokio::time::timeout(Duration::from_secs(5), vm.exited())
        .await
        .expect("the VM notices that QEMU is gone");
    assert!(exit.status.contains("signal: 9"), "{exit:?}");
    drop(vm); // a second teardown after cleanup_all is harmless
    assert!(!process_exists(pid), "reaped by drop");
}

#[test]
fn qemu_dies_with_the_thread_that_started_it() {
    let _one = ONE_VM_AT_A_TIME.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let base = blank_base(tmp.path());
    let run_dir = tmp.path().join("run");
    // A thread with its own runtime starts QEMU and ends without any teardown, as when
    // the harness is killed with SIGKILL: only the parent-death signal can end QEMU.
    let pid = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let vm = Vm::start(VmConfig::new(&base, &run_dir, tcg()))
                .await
                .expect("QEMU starts");
            let pid = vm.pid();
            std::mem::forget(vm);
            pid
        })
    })
    .join()
    .unwrap();
    let since = Instant::now();
    while process_alive(pid) && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive = process_alive(pid);
    coldboot::vm::registry::cleanup_all(); // the forgotten VM's overlay, and QEMU if it survived
    assert!(!alive, "QEMU {pid} outlived the thread that spawned it");
}
