//! ktrail's own processes are never traced.
//!
//! Deployed as a DaemonSet, the collector (and a `ktrail` run in its pod) descends from
//! a containerd shim, so the kernel tracks it like any pod's process. Tracing it is a
//! feedback loop: every batch the collector reads, every store commit it writes and
//! every hop it sends to `ktrail watch` becomes new events, which become new reads,
//! writes and hops. The agent itself is never tracked (it exec'd before its programs
//! were loaded, and the /proc scan skips it).
//!
//! The kernel side drops a tracked process the moment it execs one of ktrail's
//! binaries (by name, `OWN_COMMS`), before its first syscall. This sweep covers
//! the rest: every `SWEEP`, the tracked processes whose executable is one of
//! ktrail's are removed from TRACKED — those already running when the agent
//! started (its /proc scan selects descendants of targets) and any whose
//! executable was renamed; their children are then not inherited either.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::ebpf::TrackedMaps;

const SWEEP: Duration = Duration::from_millis(200);
pub const OWN_BINARIES: [&str; 3] = ["ktrail-collector", "ktrail-agent", "ktrail"];

/// Whether the process behind `pid` runs one of ktrail's binaries.
fn is_ktrail(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| {
            exe.file_name()
                .map(|n| OWN_BINARIES.contains(&n.to_string_lossy().as_ref()))
        })
        .unwrap_or(false)
}

pub async fn run(mut tracked: TrackedMaps, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let own: Vec<u32> = tracked
            .pids()
            .into_iter()
            .filter(|pid| is_ktrail(*pid))
            .collect();
        for pid in own {
            match tracked.untrack(pid) {
                Ok(()) => info!(pid, "not tracing a ktrail process (collector or CLI)"),
                Err(e) => warn!(pid, error = %e, "cannot untrack a ktrail process"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_not_ktrail_but_a_missing_pid_is_neither() {
        assert!(!is_ktrail(std::process::id()));
        assert!(!is_ktrail(u32::MAX));
    }
}
