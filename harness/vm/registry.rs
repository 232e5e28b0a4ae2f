//! The process-wide list of live VMs, so that a Ctrl-C handler or the panic hook can end
//! every QEMU and remove every throwaway overlay even when no destructor will run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::Pid;

/// What cleanup needs to know about one live VM.
#[derive(Debug, Clone, Default)]
struct LiveVm {
    pid: Option<i32>,
    /// The overlay to delete, or `None` when the VM is kept.
    overlay: Option<PathBuf>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static LIVE: Mutex<BTreeMap<u64, LiveVm>> = Mutex::new(BTreeMap::new());

fn with_live<T>(f: impl FnOnce(&mut BTreeMap<u64, LiveVm>) -> T) -> T {
    // A poisoned lock still holds a usable map: cleanup must work after a panic.
    let mut guard = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Handle of one registered VM; unregisters itself when dropped.
#[derive(Debug)]
pub(crate) struct Registration(u64);

impl Registration {
    /// Register a VM whose overlay is removed by cleanup unless `keep`.
    pub(crate) fn new(overlay: PathBuf, keep: bool) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let entry = LiveVm {
            pid: None,
            overlay: (!keep).then_some(overlay),
        };
        with_live(|live| live.insert(id, entry));
        Registration(id)
    }

    /// Record the PID of the VM's current QEMU (`None` between boots).
    pub(crate) fn set_pid(&self, pid: Option<Pid>) {
        with_live(|live| {
            if let Some(entry) = live.get_mut(&self.0) {
                entry.pid = pid.map(|p| p.as_raw_nonzero().get());
            }
        });
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        with_live(|live| live.remove(&self.0));
    }
}

/// How many VMs are registered now (for tests and diagnostics).
pub fn live_count() -> usize {
    with_live(|live| live.len())
}

/// Kill every live QEMU (SIGKILL to its process group) and remove the overlays of VMs
/// that are not kept. For the Ctrl-C handler and the panic hook; safe to call twice.
pub fn cleanup_all() {
    let entries: Vec<LiveVm> = with_live(|live| std::mem::take(live).into_values().collect());
    for entry in entries {
        if let Some(pid) = entry.pid.and_then(Pid::from_raw) {
            super::process::kill_group(pid);
        }
        if let Some(overlay) = entry.overlay {
            let _ = std::fs::remove_file(overlay);
        }
    }
}
