//! The guest channel against a real Debian 12 guest booted with `coldboot::vm` (TCG).
//!
//! Input: `COLDBOOT_TEST_IMAGE_DIR`, a built image folder (`disk.qcow2`, `vmlinuz`,
//! `initrd.img`) whose image carries the harness adapter. Skips with a reason without it.
//! With `COLDBOOT_RECORD_FIXTURES=1` the raw systemd outputs are written to
//! `tests/fixtures/guest/` (parsed again, VM-free, by `guest_fixtures.rs`).
//!
//! One VM for the whole file (the machine has two cores): every check runs in one test.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coldboot::check::live;
use coldboot::guest::systemd::journal::Entry;
use coldboot::guest::systemd::{self, UnitState};
use coldboot::guest::{Guest, SshKey, StreamEnd};
use coldboot::vm::{Accel, AccelChoice, Vm, VmConfig};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest")
}

/// Save raw guest output as a fixture when recording is asked for.
fn record(name: &str, text: &str) {
    if std::env::var_os("COLDBOOT_RECORD_FIXTURES").is_some() {
        std::fs::create_dir_all(fixture_dir()).unwrap();
        std::fs::write(fixture_dir().join(name), text).unwrap();
        println!("recorded tests/fixtures/guest/{name}");
    }
}

fn unit<'a>(units: &'a [UnitState], id: &str) -> &'a UnitState {
    units
        .iter()
        .find(|u| u.id == id)
        .unwrap_or_else(|| panic!("{id} missing"))
}

const SLOW_UNIT: &str = "[Unit]\nDescription=coldboot test: slow oneshot\n\
[Service]\nType=oneshot\nExecStart=/bin/sleep 600\n";
const AFTER_UNIT: &str = "[Unit]\nDescription=coldboot test: ordered after the slow one\n\
After=cb-slow.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n";
const FAIL_UNIT: &str = "[Unit]\nDescription=coldboot test: fails\n\
[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo failing; exit 3'\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_channel_on_a_real_debian_guest() {
    let Ok(image) = common::image_dir(&["disk.qcow2"]) else {
        common::skip(
            "set COLDBOOT_TEST_IMAGE_DIR to a built image folder (disk.qcow2, vmlinuz, initrd.img)",
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = SshKey::generate().unwrap();
    let mut config = VmConfig::new(
        image.join("disk.qcow2"),
        tmp.path().join("run"),
        AccelChoice {
            accel: Accel::Tcg,
            reason: "tcg requested by the test".into(),
        },
    );
    config.kernel = Some(image.join("vmlinuz"));
    config.initrd = Some(image.join("initrd.img"));
    config.cmdline = ["root=LABEL=root", "rw", "console=ttyS0", &key.kernel_arg()]
        .map(String::from)
        .to_vec();
    config
        .fw_cfg
        .push(coldboot::run::boot::host_key_fw_cfg(&key).unwrap());
    let started = Instant::now();
    let vm = Vm::start(config).await.expect("QEMU starts");

    // Connect: retries while the guest boots; fails fast if the boot itself fails.
    let guest = tokio::select! {
        g = Guest::connect(vm.ssh_addr(), &key, Duration::from_secs(240)) => g.expect("ssh connects"),
        err = vm.boot_failure() => panic!("boot failed: {err:#}"),
    };
    println!("ssh authenticated {:?} after QEMU start", started.elapsed());
    assert!(guest.host_key_fingerprint().starts_with("SHA256:"));
    println!("guest host key: {:?}", guest.host_key());
    // The run's own host key, handed over by fw_cfg and checked before authenticating.
    assert!(guest.host_key().pinned, "{:?}", guest.host_key());
    assert_eq!(guest.host_key_fingerprint(), key.host_fingerprint());
    // Only root can read the private key in the guest; it is not on the command line.
    let raw = "/sys/firmware/qemu_fw_cfg/by_name/opt/coldboot/ssh_host_ed25519_key/raw";
    let mode = guest
        .exec_checked(&format!("stat -c %a {raw}"))
        .await
        .unwrap();
    assert_eq!(mode.stdout.trim(), "400");
    let cmdline = guest.exec_checked("cat /proc/cmdline").await.unwrap();
    assert!(!cmdline.stdout.contains("PRIVATE"), "{}", cmdline.stdout);
    let keys = guest
        .exec_checked("cat /root/.ssh/authorized_keys")
        .await
        .unwrap();
    let blob = key.public_openssh().split(' ').nth(1).unwrap().to_owned();
    assert!(keys.stdout.contains(&blob), "{}", keys.stdout);

    // A long-lived watcher started early sees PID 1's messages as they happen.
    let mut journal = guest
        .stream_lines("journalctl -f -n0 -o json _PID=1")
        .await
        .expect("journalctl streams");

    let t = Instant::now();
    let state = guest
        .exec_timeout(
            "systemctl is-system-running --wait",
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    println!(
        "is-system-running: {:?} (status {}) after {:?} more",
        state.stdout.trim(),
        state.status,
        t.elapsed()
    );
    assert!(
        matches!(state.stdout.trim(), "running" | "degraded"),
        "{state:?}"
    );

    // Non-zero status is data, both streams come through, stderr is quoted when checked.
    let out = guest.exec("echo out; echo oops >&2; exit 3").await.unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "oops\n")
    );
    let err = guest
        .exec_checked("echo nope >&2; exit 4")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("status 4: nope"), "{err}");
    let killed = guest.exec("kill -TERM $$").await.unwrap();
    assert_eq!(
        (killed.status, killed.signal.as_deref()),
        (143, Some("TERM"))
    );

    // Large output on both streams at once must not deadlock on the shared window.
    let t = Instant::now();
    let big = guest
        .exec("head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 3000000 /dev/zero | tr '\\0' o")
        .await
        .unwrap();
    assert_eq!((big.stdout.len(), big.stderr.len()), (3_000_000, 3_000_000));
    println!("6 MB over both streams in {:?}", t.elapsed());

    // An exec that overruns its limit is an infra error, and the session stays usable.
    let err = guest
        .exec_timeout("sleep 30", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        coldboot::error::exit_code(&err),
        coldboot::error::exit::INFRA
    );
    assert!(format!("{err:#}").contains("1s"), "{err:#}");
    assert_eq!(
        guest.exec_checked("echo still").await.unwrap().stdout,
        "still\n"
    );

    // Lines arrive as they are written, not when the command ends.
    let mut lines = guest
        .stream_lines("for i in 1 2 3; do echo line$i; sleep 0.5; done; echo bye >&2; exit 7")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await {
        seen.push((line, Instant::now()));
    }
    let texts: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(texts, ["line1", "line2", "line3"]);
    assert!(
        seen[2].1 - seen[0].1 >= Duration::from_millis(800),
        "lines were not streamed"
    );
    match lines.end() {
        Some(StreamEnd::Exited { status, stderr }) => {
            assert_eq!((status, stderr.as_str()), (7, "bye\n"))
        }
        other => panic!("unexpected end {other:?}"),
    }

    // write_file: content and mode, through a path with a space.
    guest
        .write_file("/tmp/cb dir/f.txt", b"hello\n", 0o640)
        .await
        .unwrap();
    let back = guest
        .exec_checked("stat -c %a '/tmp/cb dir/f.txt'; cat '/tmp/cb dir/f.txt'")
        .await
        .unwrap();
    assert_eq!(back.stdout, "640\nhello\n");

    // Units for the job queue and snapshot checks.
    for (name, text) in [
        ("cb-slow", SLOW_UNIT),
        ("cb-after", AFTER_UNIT),
        ("cb-fail", FAIL_UNIT),
    ] {
        let path = format!("/etc/systemd/system/{name}.service");
        guest
            .write_file(&path, text.as_bytes(), 0o644)
            .await
            .unwrap();
    }
    guest.exec_checked("systemctl daemon-reload").await.unwrap();
    let failed = guest.exec("systemctl start cb-fail.service").await.unwrap();
    assert_ne!(failed.status, 0);
    guest
        .exec_checked("systemctl start --no-block cb-slow.service cb-after.service")
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while systemd::unit_snapshot(&guest, &["cb-slow.service"])
        .await
        .unwrap()[0]
        .active_state
        != "activating"
    {
        assert!(Instant::now() < until, "cb-slow never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The job queue: record the raw text, then check the parser's true relation.
    let version_text = guest
        .exec_checked("systemctl --version")
        .await
        .unwrap()
        .stdout;
    record("systemctl-version.txt", &version_text);
    let version = systemd::parse_version(&version_text).unwrap();
    let raw_jobs = guest
        .exec_checked("systemctl list-jobs --after --before --no-legend --full --no-pager")
        .await
        .unwrap()
        .stdout;
    println!("list-jobs (systemd {version}):\n{raw_jobs}");
    record("list-jobs-after-before.txt", &raw_jobs);
    let jobs = systemd::list_jobs(&guest).await.unwrap();
    let slow = jobs
        .iter()
        .find(|j| j.unit == "cb-slow.service")
        .expect("cb-slow job");
    let after = jobs
        .iter()
        .find(|j| j.unit == "cb-after.service")
        .expect("cb-after job");
    assert_eq!(
        (slow.state.as_str(), after.state.as_str()),
        ("running", "waiting")
    );
    assert!(
        after.waiting_for.iter().any(|r| r.id == slow.id),
        "{jobs:#?}"
    );
    assert!(slow.blocking.iter().any(|r| r.id == after.id), "{jobs:#?}");
    assert!(
        slow.waiting_for.iter().all(|r| r.id != after.id),
        "{jobs:#?}"
    );

    // One snapshot of several units, recorded while cb-slow is still activating.
    let names = [
        "ssh.service",
        "coldboot-authorized-key.service",
        "systemd-journald.service",
        "multi-user.target",
        "cb-slow.service",
        "cb-after.service",
        "cb-fail.service",
        "no-such-unit.service",
    ];
    let raw_show = guest
        .exec_checked(&systemd::show_command(&names))
        .await
        .unwrap()
        .stdout;
    record("systemctl-show.txt", &raw_show);
    let units = systemd::unit_snapshot(&guest, &names).await.unwrap();
    let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, names);
    let ssh = unit(&units, "ssh.service");
    assert_eq!(
        (ssh.active_state.as_str(), ssh.sub_state.as_str()),
        ("active", "running")
    );
    let key_unit = unit(&units, "coldboot-authorized-key.service");
    assert!(key_unit.active_enter_us.unwrap() <= ssh.active_enter_us.unwrap());
    let fail = unit(&units, "cb-fail.service");
    assert_eq!(
        (fail.active_state.as_str(), fail.result.as_deref()),
        ("failed", Some("exit-code"))
    );
    assert_eq!(fail.exec_main_status, Some(3));
    let slow = unit(&units, "cb-slow.service");
    assert_eq!(
        (slow.active_state.as_str(), slow.sub_state.as_str()),
        ("activating", "start")
    );
    assert!(slow.inactive_exit_us.is_some() && slow.active_enter_us.is_none());
    assert_eq!(unit(&units, "no-such-unit.service").load_state, "not-found");
    guest
        .exec_checked("systemctl stop cb-slow.service")
        .await
        .unwrap();

    // Boot time.
    let analyze = guest.exec("systemd-analyze --no-pager").await.unwrap();
    record("systemd-analyze.txt", &analyze.stdout);
    let boot = systemd::boot_time(&guest)
        .await
        .unwrap()
        .expect("boot finished");
    println!("boot time: {boot:?}");
    assert!(boot.kernel_us.is_some() && boot.userspace_us.is_some());
    assert!(boot.total_us >= boot.userspace_us.unwrap());

    // The journal watcher saw PID 1 finish the test units' jobs, as JSON lines, up to
    // cb-after's start job (which could only run once cb-slow was stopped).
    let mut journal_lines = String::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let next = tokio::time::timeout_at(until.into(), journal.next_line()).await;
        let line = next
            .expect("cb-after's job result in the journal within 20s")
            .expect("stream open");
        let v: serde_json::Value = serde_json::from_str(&line).expect("journal line is JSON");
        assert_eq!(v["_PID"], "1");
        journal_lines.push_str(&line);
        journal_lines.push('\n');
        if v["UNIT"] == "cb-after.service" && v["JOB_RESULT"] == "done" {
            break;
        }
    }
    assert!(journal_lines.contains("\"JOB_RESULT\":\"failed\""));
    record("journal-pid1.jsonl", &journal_lines);
    // Dropping the stream ends journalctl in the guest.
    drop(journal);
    let until = Instant::now() + Duration::from_secs(10);
    while guest.exec("pgrep -x journalctl").await.unwrap().status == 0 {
        assert!(
            Instant::now() < until,
            "journalctl still running after the stream was dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // systemd's own ordering cycle: two units, each Wants= and After= the other. PID 1
    // logs the cycle and deletes one job to break it; the watcher's parser reads that.
    for (name, other) in [("cb-cyc-a", "cb-cyc-b"), ("cb-cyc-b", "cb-cyc-a")] {
        let text = format!(
            "[Unit]\nDescription=coldboot test: ordering cycle\nWants={other}.service\n\
             After={other}.service\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
        );
        let path = format!("/etc/systemd/system/{name}.service");
        guest
            .write_file(&path, text.as_bytes(), 0o644)
            .await
            .unwrap();
    }
    guest.exec_checked("systemctl daemon-reload").await.unwrap();
    let _ = guest
        .exec("systemctl start cb-cyc-a.service")
        .await
        .unwrap();
    let cycle_json = guest
        .exec_checked(
            "journalctl -b -o json --no-pager _PID=1 --output-fields=MESSAGE,UNIT,_PID,JOB_RESULT,MESSAGE_ID \
             | grep -e 'ordering cycle' -e 'Found dependency on'",
        )
        .await
        .unwrap()
        .stdout;
    record("journal-ordering-cycle.jsonl", &cycle_json);
    let entries: Vec<Entry> = cycle_json.lines().filter_map(Entry::parse).collect();
    let cycles = live::ordering_cycles(entries.iter().map(|e| (e.mono_us, e.message.as_str())));
    println!("ordering cycles: {cycles:?}");
    assert_eq!(cycles.len(), 1, "{cycle_json}");
    assert!(
        cycles[0].units.iter().any(|u| u == "cb-cyc-a.service")
            && cycles[0].units.iter().any(|u| u == "cb-cyc-b.service"),
        "{cycles:?}"
    );
    assert!(cycles[0].deleted.is_some(), "{cycles:?}");

    // The system ssh client with the per-run key (what the interactive shell uses).
    let status = guest
        .system_ssh_exec("test -s /root/.ssh/authorized_keys && exit 5")
        .await
        .unwrap();
    assert_eq!(status, 5);

    drop(guest);
    let pid = vm.pid();
    drop(vm);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "QEMU {pid} gone"
    );
    println!("whole test took {:?}", started.elapsed());
}
