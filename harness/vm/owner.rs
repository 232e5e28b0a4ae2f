//! Who owns a run folder, so that what a killed harness left behind can be found and
//! removed, and what a live one uses is never touched.
//!
//! A harness killed with SIGKILL runs no destructor: its QEMUs die of their parent-death
//! signal, but their overlays (and `coldboot boot`'s run folders under the cache) stay.
//! So every process that starts a VM writes `owner.json` into the run folder and lists the
//! folder in its own index, `CACHE/runs/owners/PID-START.json`, where START is the
//! process's start time in clock ticks since boot (`/proc/PID/stat`, field 22): a PID
//! the kernel has given to another process since does not match, so a reused PID is never
//! mistaken for the owner. [`collect_stale`] (run by `coldboot gc` and at the start of
//! `coldboot run`) removes the leftovers of owners that are gone and says what it removed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The record in each run folder (and, with every folder, in the owner's index).
pub const OWNER_FILE: &str = "owner.json";

/// Files in a run folder that are throwaway: the overlay disks and QMP's socket.
const THROWAWAY: &[&str] = &[
    super::argv::OVERLAY_FILE,
    super::argv::NIX_DISK_FILE,
    super::argv::QMP_SOCKET_FILE,
];

/// One process, told apart from a later process with the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The process id.
    pub pid: i32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start_ticks: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> Option<Owner> {
        let pid = std::process::id() as i32;
        Some(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether this very process still runs (same PID and the same start time).
    pub fn is_alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }

    fn index_name(&self) -> String {
        format!("{}-{}.json", self.pid, self.start_ticks)
    }
}

/// What `owner.json` and an index hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    owner: Owner,
    /// `--keep`: the overlays are wanted afterwards, never removed.
    keep: bool,
    /// The run folders (in an index; empty in `owner.json`).
    #[serde(default)]
    dirs: Vec<PathBuf>,
}

/// The start time of process `pid`, or `None` when there is no such process.
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow the name: field 22 is the 20th of them.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The folder of the owners' indexes.
fn owners_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("runs").join("owners")
}

static CLAIMED: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

/// Record this process as the owner of `run_dir` (before an overlay is made in it).
/// Failures are logged only: a missing record costs a manual clean-up, not the run.
pub fn claim(run_dir: &Path, keep: bool) {
    let Some(me) = Owner::me() else {
        tracing::warn!(
            "cannot read this process's start time; {} has no owner record",
            run_dir.display()
        );
        return;
    };
    let record = Record {
        owner: me,
        keep,
        dirs: Vec::new(),
    };
    if let Err(e) = write(&run_dir.join(OWNER_FILE), &record) {
        tracing::warn!("cannot write {}: {e:#}", run_dir.join(OWNER_FILE).display());
    }
    let dirs = {
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        if !claimed.iter().any(|(d, _)| d == run_dir) {
            claimed.push((run_dir.to_path_buf(), keep));
        }
        claimed.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()
    };
    let index = Record {
        owner: me,
        keep,
        dirs,
    };
    let result = crate::dirs::cache_root(None)
        .map(|root| owners_dir(&root).join(me.index_name()))
        .and_then(|path| write(&path, &index).map(|()| path));
    if let Err(e) = result {
        tracing::warn!("cannot record the owner of {}: {e:#}", run_dir.display());
    }
}

/// Remove `run_dir`'s `owner.json` when it names this process (its VM was torn down
/// properly, so the folder holds nothing stale).
pub fn disown(run_dir: &Path) {
    let path = run_dir.join(OWNER_FILE);
    if read(&path).is_some_and(|r| Some(r.owner) == Owner::me()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Remove this process's index (at a normal exit, once every VM is gone).
pub fn release() {
    if let (Some(me), Ok(root)) = (Owner::me(), crate::dirs::cache_root(None)) {
        let _ = std::fs::remove_file(owners_dir(&root).join(me.index_name()));
    }
}

fn write(path: &Path, record: &Record) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))?;
    serde_json::to_writer_pretty(&mut tmp, record)?;
    tmp.persist(path)?;
    Ok(())
}

fn read(path: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The files that live owners' overlays are backed by (read from each overlay's qcow2
/// header): the cache images a running VM boots from, which `coldboot gc --images` must
/// never remove.
pub fn live_backing_files(cache_root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(read_dir) = std::fs::read_dir(owners_dir(cache_root)) else {
        return files;
    };
    for item in read_dir.flatten() {
        let Some(index) = read(&item.path()) else {
            continue;
        };
        if !index.owner.is_alive() {
            continue;
        }
        for dir in &index.dirs {
            for overlay in [super::argv::OVERLAY_FILE, super::argv::NIX_DISK_FILE] {
                if let Some(backing) = backing_file(&dir.join(overlay)) {
                    // A relative name is relative to the overlay's folder (qemu-img's rule).
                    files.push(dir.join(backing));
                }
            }
        }
    }
    files
}

/// The backing file an overlay names, if it is a qcow2 image with one.
fn backing_file(overlay: &Path) -> Option<PathBuf> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(overlay).ok()?;
    let mut header = [0u8; 20];
    f.read_exact(&mut header).ok()?;
    let (offset, len) = qcow2_backing_span(&header)?;
    let mut name = vec![0u8; len];
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.read_exact(&mut name).ok()?;
    let name: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(name);
    Some(PathBuf::from(name))
}

/// Where a qcow2 header's backing file name is: `(offset, length)` from its first 20
/// bytes (magic `QFI\xfb`, version, then the big-endian offset and length), or `None`
/// for another format or no backing file. Names are at most 1023 bytes (qcow2's spec).
pub fn qcow2_backing_span(header: &[u8; 20]) -> Option<(u64, usize)> {
    if header[..4] != *b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().ok()?);
    let len = u32::from_be_bytes(header[16..20].try_into().ok()?) as usize;
    (offset != 0 && (1..=1023).contains(&len)).then_some((offset, len))
}

/// Remove what owners that are gone left behind: their overlays and QMP sockets, and
/// whole run folders under `CACHE/runs/` (`coldboot boot`'s throwaway folders); an
/// evidence folder keeps its evidence. A folder whose `owner.json` names a live process
/// (or another owner than the index's) is never touched, nor a `--keep` run's overlay.
/// Returns one line per thing removed.
pub fn collect_stale(cache_root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(read_dir) = std::fs::read_dir(owners_dir(cache_root)) else {
        return removed;
    };
    let runs = cache_root.join("runs");
    for item in read_dir.flatten() {
        let index_path = item.path();
        let Some(index) = read(&index_path) else {
            continue;
        };
        if index.owner.is_alive() {
            continue;
        }
        let gone = format!("owner PID {} is gone", index.owner.pid);
        for dir in &index.dirs {
            // The folder's own record must name the same owner: a folder reused by a
            // later run belongs to that run.
            match read(&dir.join(OWNER_FILE)) {
                Some(r) if r.owner == index.owner => {
                    if r.keep {
                        continue;
                    }
                }
                _ => continue,
            }
            if dir.starts_with(&runs) && dir.parent() == Some(runs.as_path()) {
                if std::fs::remove_dir_all(dir).is_ok() {
                    removed.push(format!(
                        "removed stale run folder {} ({gone})",
                        dir.display()
                    ));
                }
                continue;
            }
            for file in THROWAWAY {
                let path = dir.join(file);
                if std::fs::remove_file(&path).is_ok() {
                    removed.push(format!("removed stale {} ({gone})", path.display()));
                }
            }
            let _ = std::fs::remove_file(dir.join(OWNER_FILE));
        }
        let _ = std::fs::remove_file(&index_path);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qcow2_header_gives_its_backing_file_span_and_nothing_else_does() {
        // The first 20 bytes of an overlay made as the harness makes them (qemu-img 7.2,
        // `create -f qcow2 -b BASE -F qcow2`, BASE a 104-byte path in the image cache).
        let h: [u8; 20] = [
            0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x10, 0x00, 0x00, 0x00, 0x68,
        ];
        assert_eq!(qcow2_backing_span(&h), Some((0x210, 104)));
        let mut none = h;
        none[8..16].copy_from_slice(&0u64.to_be_bytes());
        none[16..20].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(qcow2_backing_span(&none), None);
        let mut raw = h;
        raw[..4].copy_from_slice(b"\x7fELF");
        assert_eq!(qcow2_backing_span(&raw), None);
    }

    #[test]
    fn start_ticks_are_field_22_even_with_spaces_and_parentheses_in_the_name() {
        // A real line of `/proc/PID/stat` (Linux 6.1), command name edited to be awkward.
        let stat = "4242 (qemu) (x y) S 1 4242 4242 0 -1 4194560 1516 0 0 0 3 1 0 0 20 0 1 0 \
                    987654 12345678 1000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_different_start_time_is_not() {
        let me = Owner::me().expect("a /proc");
        assert!(me.is_alive());
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive(), "same PID, other start: another process");
    }

    #[test]
    fn only_the_leftovers_of_gone_owners_are_removed() {
        let cache = tempfile::tempdir().unwrap();
        let root = cache.path();
        let gone = Owner {
            pid: i32::MAX - 1,
            start_ticks: 1,
        };
        let me = Owner::me().unwrap();
        let evidence = root.join("evidence/pair");
        let boot = root.join("runs/boot-abc");
        let live = root.join("evidence/live");
        let reused = root.join("evidence/reused");
        for d in [&evidence, &boot, &live, &reused] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("overlay.qcow2"), b"x").unwrap();
            std::fs::write(d.join("serial-1.log"), b"x").unwrap();
        }
        let record = |owner, dirs: Vec<PathBuf>| Record {
            owner,
            keep: false,
            dirs,
        };
        for d in [&evidence, &boot] {
            write(&d.join(OWNER_FILE), &record(gone, vec![])).unwrap();
        }
        write(&live.join(OWNER_FILE), &record(me, vec![])).unwrap();
        write(&reused.join(OWNER_FILE), &record(me, vec![])).unwrap();
        write(
            &owners_dir(root).join(gone.index_name()),
            &record(gone, vec![evidence.clone(), boot.clone(), reused.clone()]),
        )
        .unwrap();
        write(
            &owners_dir(root).join(me.index_name()),
            &record(me, vec![live.clone()]),
        )
        .unwrap();

        let removed = collect_stale(root);
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!evidence.join("overlay.qcow2").exists());
        assert!(evidence.join("serial-1.log").exists(), "evidence is kept");
        assert!(!boot.exists(), "a throwaway boot folder goes");
        assert!(
            live.join("overlay.qcow2").exists(),
            "a live owner's folder stays"
        );
        assert!(
            reused.join("overlay.qcow2").exists(),
            "a folder another run took over stays"
        );
        assert!(!owners_dir(root).join(gone.index_name()).exists());
        assert!(owners_dir(root).join(me.index_name()).exists());
    }
}
