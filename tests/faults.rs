//! Faults injected for real (issue 12): the harness killed with SIGKILL or stopped with
//! SIGTERM during a boot, a run past its `--deadline`, QEMU killed from outside and a
//! guest powering itself off in the middle of a phase, a guest flooding its console and
//! journal, two builds of the same image at once, damaged cache entries, and an evidence
//! folder that is read-only or full. Real QEMU (TCG), real systemd, real SSH, on the
//! debian-stock image; each test is kept short (see README, "Faults").

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{coldboot, run};
use rustix::process::{Pid, Signal, kill_process};

/// VM runs in this binary go one at a time (the lost-guests run itself uses three VMs).
static VM: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// PIDs of the QEMU processes that run in folder `dir` (QEMU runs in its run folder).
fn processes_mentioning(dir: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for item in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = item.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(item.path().join("cmdline")) else {
            continue;
        };
        let in_dir =
            std::fs::read_link(item.path().join("cwd")).is_ok_and(|cwd| cwd == Path::new(dir));
        if in_dir && String::from_utf8_lossy(&cmdline).contains("qemu-system") {
            pids.push(pid);
        }
    }
    pids
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only a process in another state still runs.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Wait (up to `limit`) until QEMU runs for `needle`; its PID.
fn wait_for_qemu(needle: &str, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(pid) = processes_mentioning(needle).first() {
            return *pid;
        }
        assert!(Instant::now() < deadline, "QEMU never started for {needle}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(child: &Child, sig: Signal) {
    let pid = Pid::from_raw(child.id() as i32).expect("a pid");
    kill_process(pid, sig).expect("signal sent");
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coldboot did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `coldboot ARGS` in the background, its stderr going to a file (a pipe nobody reads
/// could fill up and stall it).
fn spawn(args: &[&str]) -> (Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = coldboot()
        .args(args)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("coldboot starts");
    (child, log)
}

/// `coldboot run` of `scenario` on debian-stock into `bundle`, in the background.
fn spawn_run(scenario: &str, bundle: &Path, extra: &[&str]) -> (Child, tempfile::NamedTempFile) {
    let mut args = vec![
        "run",
        "--target",
        "stock=recipe:vm-images/debian-stock",
        scenario,
        "--evidence",
        bundle.to_str().unwrap(),
    ];
    args.extend(extra);
    spawn(&args)
}

fn stderr_of(log: &tempfile::NamedTempFile) -> String {
    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
    eprintln!("--- coldboot stderr\n{text}");
    text
}

fn report_json(bundle: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(bundle.join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json is JSON")
}

fn image_ready() {
    assert!(
        run(&["image", "build", "vm-images/debian-stock"])
            .status
            .success()
    );
}

const BOOT_ONLY: &str = "tests/scenarios/faults/boot-only.yaml";
const PAIR: &str = "stock__boot-only";

#[test]
fn sigkill_during_a_boot_qemu_dies_and_gc_removes_only_what_is_stale() {
    require_vm!();
    let _vm = lock();
    image_ready();
    let bundle = tempfile::tempdir().unwrap();
    let (mut child, _log) = spawn_run(BOOT_ONLY, bundle.path(), &[]);
    let run_dir = bundle.path().join(PAIR);
    let qemu = wait_for_qemu(&run_dir.to_string_lossy(), Duration::from_secs(120));
    let overlay = run_dir.join("overlay.qcow2");
    assert!(overlay.is_file() && run_dir.join("owner.json").is_file());

    // The owner is alive: gc leaves its folder alone.
    let gc = run(&["gc"]);
    assert!(gc.status.success());
    assert!(overlay.is_file(), "gc touched a live run's overlay");
    assert!(alive(qemu));

    signal(&child, Signal::KILL);
    let killed = Instant::now();
    let _ = child.wait();
    while alive(qemu) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "QEMU {qemu} outlived the killed harness by 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "QEMU died {:?} after the harness's SIGKILL",
        killed.elapsed()
    );
    assert!(overlay.is_file(), "no destructor ran: the overlay is stale");

    let gc = run(&["gc"]);
    assert!(gc.status.success());
    let said = String::from_utf8_lossy(&gc.stdout);
    assert!(
        said.contains(&format!("removed stale {}", overlay.display())),
        "gc says what it removed: {said}"
    );
    assert!(!overlay.exists());
    assert!(
        run_dir.join("serial-1.log").is_file(),
        "the evidence in the folder is kept"
    );
}

#[test]
fn sigterm_tears_everything_down_and_marks_the_bundle_incomplete() {
    require_vm!();
    let _vm = lock();
    image_ready();
    let bundle = tempfile::tempdir().unwrap();
    let (mut child, log) = spawn_run(BOOT_ONLY, bundle.path(), &[]);
    let run_dir = bundle.path().join(PAIR);
    let qemu = wait_for_qemu(&run_dir.to_string_lossy(), Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, Signal::TERM);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = stderr_of(&log);
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(!alive(qemu), "QEMU still runs after SIGTERM");
    assert!(
        !run_dir.join("overlay.qcow2").exists(),
        "overlay left behind"
    );
    let report = report_json(bundle.path());
    let pair = &report["pairs"][0];
    assert_eq!(pair["complete"], false, "{pair}");
    let why = std::fs::read_to_string(bundle.path().join("interrupted.txt")).unwrap();
    assert!(why.contains("SIGTERM"), "{why}");
    assert!(stderr.contains("what ran so far"), "{stderr}");
}

#[test]
fn a_bad_deadline_is_a_usage_error_naming_flag_and_value() {
    let out = run(&[
        "run",
        "--target",
        "stock=recipe:vm-images/debian-stock",
        BOOT_ONLY,
        "--deadline",
        "5 minutes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--deadline \"5 minutes\"") && stderr.contains("invalid duration"),
        "{stderr}"
    );
}

#[test]
fn a_run_past_its_deadline_is_stopped_and_exits_3() {
    require_vm!();
    let _vm = lock();
    image_ready();
    let bundle = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (mut child, log) = spawn_run(BOOT_ONLY, bundle.path(), &["--deadline", "25s"]);
    let run_dir = bundle.path().join(PAIR);
    let qemu = wait_for_qemu(&run_dir.to_string_lossy(), Duration::from_secs(60));
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let took = started.elapsed();
    let stderr = stderr_of(&log);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("did not end within its --deadline 25s"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(40), "ended after {took:?}");
    assert!(!alive(qemu), "QEMU still runs past the deadline");
    assert!(
        !run_dir.join("overlay.qcow2").exists(),
        "overlay left behind"
    );
    assert_eq!(report_json(bundle.path())["pairs"][0]["complete"], false);
}

/// The timeline events of a run folder, as (seconds, event, detail).
fn timeline(dir: &Path) -> Vec<(f64, String, String)> {
    std::fs::read_to_string(dir.join("timeline.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["t_secs"].as_f64().unwrap_or(0.0),
                v["event"].as_str().unwrap_or_default().to_string(),
                v["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn verdict(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("verdict.json")).expect("verdict.json"))
        .expect("JSON")
}

#[test]
fn lost_guests_are_errors_that_say_why_and_a_flood_is_capped() {
    require_vm!();
    let _vm = lock();
    image_ready();
    let bundle = tempfile::tempdir().unwrap();
    let b = bundle.path();
    let started = Instant::now();
    let (mut child, log) = spawn(&[
        "run",
        "--plan",
        "tests/scenarios/faults/plan.yaml",
        "--jobs",
        "3",
        "--evidence",
        b.to_str().unwrap(),
    ]);

    // Kill the wait-long pair's QEMU once its phase is under way (the journal watched).
    let killed_dir = b.join("stock__wait-long");
    let deadline = Instant::now() + Duration::from_secs(400);
    while !timeline(&killed_dir)
        .iter()
        .any(|(_, e, d)| e == "held" && d.starts_with("sshd-up"))
    {
        assert!(
            Instant::now() < deadline,
            "the wait-long pair never got going"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let qemu = processes_mentioning(&killed_dir.to_string_lossy());
    assert_eq!(qemu.len(), 1, "one QEMU for the pair: {qemu:?}");
    kill_process(Pid::from_raw(qemu[0]).unwrap(), Signal::KILL).unwrap();
    let killed_at = Instant::now();
    while !killed_dir.join("verdict.json").exists() {
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no verdict 60 s after QEMU was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let decided_in = killed_at.elapsed();
    eprintln!("the killed pair's verdict came {decided_in:?} after the kill");

    let status = wait_exit(&mut child, Duration::from_secs(600));
    let stderr = stderr_of(&log);
    eprintln!("the run took {:?}", started.elapsed());
    assert_eq!(status.code(), Some(3), "infrastructure errors: exit 3");

    let killed = verdict(&killed_dir);
    let message = killed["verdict"]["message"].as_str().unwrap_or_default();
    assert_eq!(killed["verdict"]["verdict"], "error", "{killed}");
    assert!(
        message.contains("QEMU was killed from outside the harness")
            && message.contains("signal: 9 (SIGKILL)")
            && message.contains("last lines of the serial console"),
        "{message}"
    );
    assert!(
        decided_in < Duration::from_secs(15),
        "decided {decided_in:?} after the kill, not within seconds"
    );

    let off_dir = b.join("stock__poweroff-itself");
    let off = verdict(&off_dir);
    let message = off["verdict"]["message"].as_str().unwrap_or_default();
    assert_eq!(off["verdict"]["verdict"], "error", "{off}");
    assert!(
        message.contains("the guest powered off by itself")
            && message.contains("reboot: Power down"),
        "{message}"
    );
    // Decided when QEMU went, not at the phase's 5-minute deadline.
    let events = timeline(&off_dir);
    let action = events
        .iter()
        .find(|(_, e, _)| e == "action")
        .expect("action");
    let error = events
        .iter()
        .find(|(_, e, _)| e == "infrastructure error")
        .expect("error");
    assert!(
        error.0 - action.0 < 90.0,
        "decided {:.0} s after the poweroff was scheduled",
        error.0 - action.0
    );

    let flood_dir = b.join("stock__flood");
    let flood = verdict(&flood_dir);
    assert_eq!(
        flood["verdict"]["verdict"], "pass",
        "the run went on: {flood}"
    );
    let serial = std::fs::read(flood_dir.join("serial-1.log")).unwrap();
    let tail = String::from_utf8_lossy(&serial[serial.len().saturating_sub(200)..]).to_string();
    assert!(
        serial.len() < 4 * 1024 * 1024 + 200 && tail.contains("[coldboot: cut here"),
        "serial-1.log is {} bytes, ending {tail:?}",
        serial.len()
    );
    let journal = std::fs::read_to_string(flood_dir.join("journal-boot-1.json")).unwrap();
    assert!(
        journal.len() <= 8 * 1024 * 1024 + 200,
        "{} bytes",
        journal.len()
    );
    let last: serde_json::Value =
        serde_json::from_str(journal.lines().last().unwrap()).expect("the cut mark is JSON");
    assert!(
        last["COLDBOOT_CUT"]
            .as_str()
            .unwrap_or_default()
            .contains("cap"),
        "{last}"
    );
    assert!(stderr.contains("3 pairs"), "{stderr}");
}

/// A recipe folder that is debian-stock's with a file of its own, so its image key is
/// this test's alone (the rootfs tarball is shared: no mmdebstrap run).
fn own_recipe(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("vm-images/debian-stock");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let etc = dir.path().join("overlay/etc");
    std::fs::create_dir_all(&etc).unwrap();
    let unique = format!(
        "{tag} {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    std::fs::write(etc.join("coldboot-fault-test"), unique).unwrap();
    dir
}

fn disk_of(out: &std::process::Output) -> PathBuf {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("disk:").map(|p| PathBuf::from(p.trim())))
        .expect("`image build` prints disk:")
}

#[test]
fn two_builds_of_one_image_at_once_build_it_once_and_a_damaged_entry_is_rebuilt() {
    require_vm!();
    image_ready();
    let recipe = own_recipe("concurrent");
    let dir = recipe.path().to_str().unwrap().to_string();
    let spawn = || {
        coldboot()
            .args(["-v", "image", "build", &dir])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success());
    }
    assert_eq!(disk_of(&a), disk_of(&b), "both use the same entry");
    let built = [&a, &b]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("\nbuilt in "))
        .count();
    let reused = [&a, &b]
        .iter()
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("\ncached in "))
        .count();
    assert_eq!((built, reused), (1, 1), "one build, one reuse");

    // Truncate the image (as a full disk or a crash would): it is caught and rebuilt.
    let disk = disk_of(&a);
    let len = std::fs::metadata(&disk).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let again = run(&["image", "build", &dir]);
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("is damaged")
            && stderr.contains("disk.qcow2")
            && stderr.contains("rebuilding"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&disk).unwrap().len(),
        len,
        "rebuilt whole"
    );

    // A warm resolve checks the record with a stat per file: time it.
    let t = Instant::now();
    let warm = run(&["image", "build", &dir]);
    let took = t.elapsed();
    assert!(warm.status.success());
    assert!(!String::from_utf8_lossy(&warm.stderr).contains("damaged"));
    eprintln!("warm resolve (process start to exit): {took:?}");
    assert!(took < Duration::from_secs(1), "warm resolve took {took:?}");
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

/// A tmpfs of `size` mounted on a fresh folder, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_read_only_evidence_folder_is_an_infra_error_naming_it() {
    require_vm!();
    let fs = Tmpfs::mount("1m");
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(fs.path())
        .status()
        .unwrap();
    assert!(status.success());
    let bundle = fs.path().join("bundle");
    let out = run(&[
        "run",
        "--target",
        "stock=recipe:vm-images/debian-stock",
        BOOT_ONLY,
        "--evidence",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot create the evidence folder {}",
            bundle.display()
        )) && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    assert!(processes_mentioning(&bundle.to_string_lossy()).is_empty());
}

#[test]
fn a_full_evidence_disk_mid_run_is_an_infra_error_naming_the_path() {
    require_vm!();
    let _vm = lock();
    image_ready();
    let fs = Tmpfs::mount("96m");
    let bundle = fs.path().join("bundle");
    let started = Instant::now();
    let (mut child, log) = spawn_run("tests/scenarios/faults/fill-disk.yaml", &bundle, &[]);
    let run_dir = bundle.join("stock__fill-disk");
    let deadline = Instant::now() + Duration::from_secs(300);
    while !timeline(&run_dir).iter().any(|(_, e, _)| e == "watching") {
        assert!(Instant::now() < deadline, "the pair never got going");
        std::thread::sleep(Duration::from_millis(200));
    }
    let qemu = wait_for_qemu(&run_dir.to_string_lossy(), Duration::from_secs(1));
    // Fill what is left, as another process on the host would.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", fs.path().join("filler").display()))
        .status();
    let filled = Instant::now();
    let status = wait_exit(&mut child, Duration::from_secs(120));
    let stderr = stderr_of(&log);
    eprintln!(
        "ended {:?} after the disk filled ({:?} in all)",
        filled.elapsed(),
        started.elapsed()
    );
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("is full or failing")
            && stderr.contains(&run_dir.join("overlay.qcow2").display().to_string()),
        "{stderr}"
    );
    assert!(!alive(qemu), "QEMU still runs");
    assert!(
        filled.elapsed() < Duration::from_secs(60),
        "not within seconds of the disk filling up"
    );
}
