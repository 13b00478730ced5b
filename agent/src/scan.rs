//! The /proc scan at start: processes that were running before the agent attached
//! are tracked the same way exec and fork would have tracked them.

use std::collections::HashMap;

use ktrail_agent_common::{
    TargetPattern, TrackedProcess, COMM_LEN, TRACKED_BY_PARENT, TRACKED_BY_SCAN,
};

use crate::procfs;

#[derive(Debug, Clone)]
pub struct ProcEntry {
    pub comm: String,
    pub ppid: u32,
    pub netns: u32,
}

pub fn comm_bytes(comm: &str) -> [u8; COMM_LEN] {
    let mut out = [0u8; COMM_LEN];
    let n = comm.len().min(COMM_LEN - 1);
    out[..n].copy_from_slice(&comm.as_bytes()[..n]);
    out
}

pub fn read_proc() -> HashMap<u32, ProcEntry> {
    let mut procs = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return procs;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let p = pid.to_string();
        let (Some(comm), Some(ppid)) = (procfs::comm_of(&p), procfs::ppid_of(&p)) else {
            continue;
        };
        let netns = procfs::netns_of(&p).unwrap_or(0);
        procs.insert(pid, ProcEntry { comm, ppid, netns });
    }
    procs
}

/// Decides which processes to track: those whose name matches a target in the
/// scoped namespace (`scope` 0 = any), and every descendant of one.
pub fn select(
    procs: &HashMap<u32, ProcEntry>,
    targets: &[TargetPattern],
    scope: u32,
    exclude: u32,
) -> HashMap<u32, TrackedProcess> {
    let matches = |e: &ProcEntry| {
        let comm = comm_bytes(&e.comm);
        targets.iter().any(|t| t.matches(&comm)) && (scope == 0 || e.netns == scope)
    };
    let mut out = HashMap::new();
    for (&pid, entry) in procs {
        if pid == exclude {
            continue;
        }
        // Walk up to the nearest matching ancestor (bounded: pid loops cannot occur,
        // but a racing /proc read could produce one).
        let mut cur = pid;
        let mut by_parent = false;
        for _ in 0..64 {
            let Some(e) = procs.get(&cur) else { break };
            if matches(e) {
                let flags = TRACKED_BY_SCAN | if by_parent { TRACKED_BY_PARENT } else { 0 };
                out.insert(
                    pid,
                    TrackedProcess {
                        node_netns: e.netns,
                        flags,
                    },
                );
                let _ = entry;
                break;
            }
            if e.ppid == 0 || e.ppid == cur {
                break;
            }
            cur = e.ppid;
            by_parent = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(comm: &str, ppid: u32, netns: u32) -> ProcEntry {
        ProcEntry {
            comm: comm.into(),
            ppid,
            netns,
        }
    }

    #[test]
    fn tracks_targets_and_descendants_in_scope() {
        let procs = HashMap::from([
            (1, entry("systemd", 0, 10)),
            (100, entry("containerd", 1, 10)),
            (200, entry("containerd-shim", 1, 10)),
            (300, entry("nginx", 200, 77)), // pod netns, descends from the node's shim
            (400, entry("curl", 1, 10)),
            (500, entry("kubelet", 1, 20)), // another node's kubelet
            (600, entry("kubectl.1.32", 1, 10)),
        ]);
        let targets = ["containerd", "containerd-shim*", "kubelet", "kubectl*"]
            .map(|t| TargetPattern::new(t.as_bytes()).expect("pattern"));
        let tracked = select(&procs, &targets, 10, 0);
        let mut pids: Vec<u32> = tracked.keys().copied().collect();
        pids.sort();
        assert_eq!(pids, vec![100, 200, 300, 600]);
        assert_eq!(
            tracked[&300].node_netns, 10,
            "pod process belongs to the shim's node"
        );
        assert_eq!(tracked[&300].flags, TRACKED_BY_SCAN | TRACKED_BY_PARENT);
        let all = select(&procs, &targets, 0, 100);
        assert!(all.contains_key(&500) && !all.contains_key(&100));
    }
}
