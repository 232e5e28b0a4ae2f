//! The `nix:` target's contract with Nix and with NixOS's VM runner, tested with a real
//! boot. A stand-in `nix` on `PATH` (its first line says so) answers the harness's
//! documented `nix flake metadata`, `nix build --json --no-link` and `nix eval --json`
//! calls, with a store-like folder whose `bin/run-ccci-model-vm` follows the runner
//! contract of nixpkgs' `nixos/modules/virtualisation/qemu-vm.nix`: it honours
//! `NIX_DISK_IMAGE` (created as a qcow2 overlay when missing), `TMPDIR`/`USE_TMPDIR`,
//! `QEMU_NET_OPTS`, `QEMU_KERNEL_PARAMS` and `QEMU_OPTS`, and `exec`s QEMU on the
//! debian-stock image's kernel, initrd and disk.
//!
//! This tests everything on the harness's side of the interface with real QEMU. It does
//! not claim that NixOS boots: these machines cannot build NixOS (no nixpkgs, no binary
//! cache). `nix_e2e_builds_and_boots_the_model` is the test that would, where `nix
//! build` works.
//!
//! Input: `COLDBOOT_TEST_IMAGE_DIR`, a built debian-stock image folder (`disk.qcow2`,
//! `vmlinuz`, `initrd.img`); the test skips with the reason when it is missing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use common::coldboot;

/// VM tests in this binary run one at a time: the machines have 2 cores.
static VM: Mutex<()> = Mutex::new(());

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn write_exec(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A store-like folder with the VM and the system, and a stand-in `nix` answering for it.
struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new(image: &Path) -> StandIn {
        let dir = tempfile::Builder::new()
            .prefix("coldboot-nix-standin-")
            .tempdir()
            .unwrap();
        let store = dir.path().join("store");
        let system = store.join("00000000000000000000000000000001-nixos-system-ccci-model");
        let vm = store.join("00000000000000000000000000000002-nixos-vm");
        std::fs::create_dir_all(&system).unwrap();
        std::os::unix::fs::symlink(image.join("vmlinuz"), system.join("kernel")).unwrap();
        std::os::unix::fs::symlink(image.join("initrd.img"), system.join("initrd")).unwrap();
        // The system's own kernel parameters, as NixOS writes them to toplevel/kernel-params.
        std::fs::write(system.join("kernel-params"), "root=LABEL=root rw").unwrap();
        // qemu-vm.nix: `ln -s ${config.system.build.toplevel} $out/system`, the VM's own
        // system, which is what coldboot records and probes.
        std::fs::create_dir_all(&vm).unwrap();
        std::os::unix::fs::symlink(&system, vm.join("system")).unwrap();

        // The runner: the shape of qemu-vm.nix's startVM, with graphics = false and the
        // coldboot adapter's serial console (nix/modules/coldboot-guest.nix).
        let runner = format!(
            r#"#!/bin/sh
# run-ccci-model-vm for the coldboot contract test: follows the runner contract of
# nixpkgs nixos/modules/virtualisation/qemu-vm.nix (startVM), booting debian-stock.
set -e
NIX_DISK_IMAGE=$(readlink -f "${{NIX_DISK_IMAGE:-./ccci-model.qcow2}}") || test -z "$NIX_DISK_IMAGE"
if test -n "$NIX_DISK_IMAGE" && ! test -e "$NIX_DISK_IMAGE"; then
    echo "Disk image do not exist, creating the virtualisation disk image..."
    qemu-img create -q -f qcow2 -b {base} -F qcow2 "$NIX_DISK_IMAGE"
    echo "Virtualisation disk image created."
fi
if [ -z "$TMPDIR" ] || [ -z "$USE_TMPDIR" ]; then
    TMPDIR=$(mktemp -d nix-vm.XXXXXXXXXX --tmpdir)
fi
mkdir -p "$TMPDIR/xchg"
cd "$TMPDIR"
exec qemu-system-x86_64 -machine accel=kvm:tcg -cpu max \
    -name ccci-model \
    -m 1024 \
    -smp 2 \
    -device virtio-rng-pci \
    -net nic,netdev=user.0,model=virtio -netdev user,id=user.0,"$QEMU_NET_OPTS" \
    -drive cache=writeback,file="$NIX_DISK_IMAGE",id=drive1,if=none,index=1,werror=report -device virtio-blk-pci,bootindex=1,drive=drive1,serial=root \
    -kernel {system}/kernel \
    -initrd {system}/initrd \
    -append "$(cat {system}/kernel-params) console=ttyS0,115200n8 $QEMU_KERNEL_PARAMS" \
    -nographic \
    $QEMU_OPTS \
    "$@"
"#,
            base = image.join("disk.qcow2").display(),
            system = system.display(),
        );
        write_exec(&vm.join("bin/run-ccci-model-vm"), &runner);

        let log = dir.path().join("nix-calls.log");
        let nix = format!(
            r##"#!/usr/bin/env -S sh \c STAND-IN for nix, not Nix: answers coldboot's nix calls for the contract test (tests/nix_runner.rs)
echo "$*" >> {log}
# Every call names local flakes only: the target is a local path and the wrapper's
# nixpkgs comes from its committed lock, never from a branch name on the network.
case "$*" in *github:*|*gitlab:*|*sourcehut:*|*http://*|*https://*|*git+ssh:*|*flake:*)
    echo "stand-in nix: refused, a remote flake reference: $*" >&2; exit 1 ;; esac
case "$*" in *"#coldbootTargets."*) case "$*" in *"{wrapper}#coldbootTargets."*) ;;
    *) echo "stand-in nix: not the wrapper copy {wrapper}: $*" >&2; exit 1 ;; esac ;; esac
[ "$1" = --extra-experimental-features ] && shift 2
case "$1 $2" in
"flake metadata")
    echo '{{"description":"stand-in","lastModified":1795951074,"locked":{{"lastModified":1795951074,"narHash":"sha256-STANDINSTANDINSTANDINSTANDINSTANDINSTANDIN00=","rev":"1111111111111111111111111111111111111111","type":"git","url":"file:///standin/cc-ci"}},"path":"/nix/store/standin-source","revision":"1111111111111111111111111111111111111111","url":"git+file:///standin/cc-ci?rev=1111111111111111111111111111111111111111"}}'
    ;;
"build --json")
    case "$*" in *"--no-link"*"--override-input target "*"#coldbootTargets.ccci-model.config.system.build.vm") ;;
    *) echo "stand-in nix: unexpected build (only the VM is built): $*" >&2; exit 1 ;; esac
    echo '[{{"drvPath":"/nix/store/standin-vm.drv","outputs":{{"out":"{vm}"}}}}]'
    ;;
"eval --json")
    case "$*" in
    *"#coldbootTargets.ccci-model.config.coldboot.harness")
        echo '{{"gates":{{"deploy-proxy.service":{{"servedBy":"traefik.service","url":"http://127.0.0.1:8082/ping"}}}},"faults":{{"standin-mark":{{"doc":"marks the guest","run":"printf %s \"injected by the flake'"'"'s fault\" > /run/coldboot-standin-fault"}}}}}}' ;;
    *) echo "stand-in nix: unexpected eval: $*" >&2; exit 1 ;;
    esac
    ;;
*)
    echo "stand-in nix: unsupported: $*" >&2; exit 1 ;;
esac
"##,
            log = log.display(),
            vm = vm.display(),
            wrapper = dir.path().join("wrapper").display(),
        );
        // The wrapper flake as a copy of nix/ in a plain folder (no .git above it).
        common::copy_dir(Path::new("nix"), &dir.path().join("wrapper"));
        write_exec(&dir.path().join("bin/nix"), &nix);
        StandIn { dir }
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.dir.path().join("bin")];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nix-calls.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = coldboot()
            .args(args)
            .env("PATH", self.path_env())
            .env("COLDBOOT_NIX_DIR", self.dir.path().join("wrapper"))
            .output()
            .expect("coldboot runs");
        eprintln!(
            "$ coldboot {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// PIDs of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

const TARGET_FLAKE: &str = "git+file:/standin/cc-ci?rev=1111111111111111111111111111111111111111";

#[test]
fn boot_and_run_through_the_nixos_runner_contract() {
    let image = match common::image_dir(&["disk.qcow2", "vmlinuz", "initrd.img"]) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    for tool in ["qemu-system-x86_64", "qemu-img"] {
        if !on_path(tool) {
            eprintln!("SKIPPED: {tool} is not installed (scripts/setup installs it)");
            return;
        }
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let standin = StandIn::new(&image);
    let target = format!("nix:{TARGET_FLAKE}#nixosConfigurations.ccci-model");

    // Bad input is a usage error before anything runs.
    let out = standin.run(&["boot", "nix:.#packages.x86_64-linux.vm", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a configuration name"));

    // 1. `coldboot boot`: build through nix, boot the runner, run a command over SSH.
    let run_dir = standin.dir.path().join("boot-run");
    let out = standin.run(&[
        "boot",
        &target,
        "--accel",
        "tcg",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--mask",
        "cron.service",
        "--",
        "systemctl is-active ssh.service; tr ' ' '\\n' < /proc/cmdline | grep -c '^systemd.mask=cron.service$'",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "coldboot boot through the runner"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["active", "1"],
        "{stdout}"
    );
    let calls = standin.calls();
    assert!(
        calls.contains(&format!("flake metadata --json {TARGET_FLAKE}")),
        "{calls}"
    );
    assert!(
        calls.contains(&format!(
            "--no-write-lock-file --override-input target {TARGET_FLAKE} "
        )),
        "{calls}"
    );
    // The runner's disk was created in the run folder, then removed; QEMU is gone.
    let serial = std::fs::read_to_string(run_dir.join("serial-1.log")).unwrap();
    assert!(
        serial.contains("Virtualisation disk image created."),
        "the runner made the disk"
    );
    assert!(
        !run_dir.join("nixos.qcow2").exists(),
        "the runner's disk was not removed"
    );
    assert!(
        run_dir.join("xchg").is_dir(),
        "the runner did not use the run folder as TMPDIR"
    );
    assert_eq!(
        processes_mentioning(run_dir.to_str().unwrap()),
        Vec::<u32>::new()
    );

    // 2. `coldboot run`: a scenario with a fault that the flake declares.
    let evidence = standin.dir.path().join("evidence");
    let out = standin.run(&[
        "run",
        "--accel",
        "tcg",
        "--target",
        &format!("standin={target}"),
        "tests/scenarios/nix-standin.yaml",
        "--evidence",
        evidence.to_str().unwrap(),
    ]);
    let pair = evidence.join("standin__nix-standin");
    if out.status.code() != Some(0) {
        // The test's folder goes with it: say what the guest's console said.
        let serial = std::fs::read_to_string(pair.join("serial-1.log")).unwrap_or_default();
        let lines: Vec<&str> = serial.lines().collect();
        eprintln!(
            "--- the guest's serial console, last 60 lines\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "coldboot run through the runner"
    );
    let identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pair.join("identity.json")).unwrap())
            .unwrap();
    let t = &identity["target"];
    assert_eq!(t["kind"], "nix");
    assert_eq!(t["name"], "ccci-model");
    assert_eq!(t["revision"], "1111111111111111111111111111111111111111");
    assert_eq!(
        t["nar_hash"],
        "sha256-STANDINSTANDINSTANDINSTANDINSTANDINSTANDIN00="
    );
    // The system that boots: the runner's own `system` link, not an outer toplevel.
    let vm_out = t["vm"].as_str().unwrap();
    assert_eq!(
        t["system"].as_str().unwrap(),
        std::fs::canonicalize(Path::new(vm_out).join("system"))
            .unwrap()
            .to_str()
            .unwrap()
    );
    let calls = standin.calls();
    assert!(!calls.contains("toplevel"), "{calls}");
    let vm: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pair.join("vm.json")).unwrap()).unwrap();
    let launch: Vec<&str> = vm["qemu_argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        launch.last().unwrap().ends_with("/bin/run-ccci-model-vm"),
        "{launch:?}"
    );
    assert!(
        launch
            .iter()
            .any(|a| a.starts_with("QEMU_KERNEL_PARAMS=") && a.contains("<redacted>")),
        "{launch:?}"
    );
    assert!(
        !vm.to_string().contains("ssh-ed25519"),
        "the key is redacted"
    );
    assert!(!pair.join("nixos.qcow2").exists());
    assert_eq!(
        processes_mentioning(evidence.to_str().unwrap()),
        Vec::<u32>::new()
    );
}

/// Why `nix build` of a NixOS system cannot run here, if it cannot.
fn cannot_build_nixos() -> Option<String> {
    if !on_path("nix") {
        return Some("`nix` is not on PATH".into());
    }
    // A NixOS system needs nixpkgs: fetched (network) or substituted (binary cache).
    let probe = std::process::Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "flake",
            "metadata",
            "--json",
            "github:NixOS/nixpkgs/nixos-24.05",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match probe {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "nix cannot fetch nixpkgs (no network or binary cache on this machine): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Err(e) => Some(format!("cannot run nix: {e}")),
    }
}

/// The real thing: `nix build` of `nix#ccci-model-after` (NixOS from nixpkgs), booted by
/// NixOS's own runner, with the model's clean cold boot scenario.
#[test]
fn nix_e2e_builds_and_boots_the_model() {
    if let Some(why) = cannot_build_nixos() {
        eprintln!(
            "SKIPPED: {why}. Not run here: building and booting NixOS (nix#ccci-model-after) \
             through `nix build`; the contract test above covers the harness's side with a \
             stand-in nix and runner. See nix/README.md to run it on a host with Nix."
        );
        return;
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let evidence = tempfile::tempdir().unwrap();
    let out = common::run(&[
        "run",
        "--target",
        "after=nix:./nix#ccci-model-after",
        "scenarios/clean-cold-boot.yaml",
        "--evidence",
        evidence.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
}

/// The issue's acceptance command: M1 against the two model configurations of `nix/`,
/// printed, not run.
#[test]
fn dry_run_prints_the_nix_commands_and_the_runner_environment() {
    let out = common::run(&[
        "run",
        "--dry-run",
        "--plan",
        "scenarios/plans/m1.yaml",
        "--target",
        "before=nix:./nix#ccci-model-before",
        "--target",
        "after=nix:./nix#ccci-model-after",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["ccci-model-before", "ccci-model-after"] {
        assert!(
            text.contains(&format!("#coldbootTargets.{name}.config.system.build.vm")),
            "{text}"
        );
        assert!(text.contains(&format!("#coldbootTargets.{name}.config.coldboot.harness")));
    }
    assert!(text.contains("build --json --no-link --no-write-lock-file --override-input target /"));
    assert!(text.contains("'QEMU_KERNEL_PARAMS=coldboot.authorized_key=<redacted> systemd.mask=deploy-dashboard.service'"));
    // One runner environment per pair of the plan.
    let pairs = text
        .matches("\n                                         scenario ")
        .count();
    assert!(pairs >= 6, "{text}");
    assert_eq!(
        text.matches("OUT/bin/run-HOSTNAME-vm").count(),
        pairs,
        "{text}"
    );
}
