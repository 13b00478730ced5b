//! `--scheduling`: every thread of the collector binary (the runtime's workers and the
//! blocking pool that commits the store) runs under SCHED_IDLE by default, so the
//! control-plane components it shares a node with never wait for a CPU it holds; asks
//! for 0.3-ms time slices with `short-slices`; and keeps the kernel's defaults with
//! `default`.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, CollectorProcess};
use ktrail_collector::scheduling::SHORT_SLICE_NS;

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// One thread's name, policy and time slice (ns).
#[derive(Debug)]
struct ThreadSched {
    #[allow(dead_code, reason = "shown by the assertions' Debug output")]
    name: String,
    policy: u32,
    /// Absent for SCHED_IDLE threads, whose sched file has no `se.slice`.
    slice_ns: Option<u64>,
}

/// Every thread of `pid`: the policy from field 41 of /proc/PID/task/TID/stat (counted
/// after the parenthesised name, which may hold spaces), the slice from `se.slice` of
/// /proc/PID/task/TID/sched (EEVDF kernels, 6.6 and later).
fn thread_policies(pid: u32) -> Vec<ThreadSched> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the collector's tasks") {
        let task = task.expect("a task entry").path();
        let (Ok(stat), Ok(sched)) = (
            std::fs::read_to_string(task.join("stat")),
            std::fs::read_to_string(task.join("sched")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let after_name = &stat[stat.rfind(')').expect("stat has the name in parentheses") + 1..];
        let policy: u32 = after_name
            .split_whitespace()
            .nth(41 - 3)
            .expect("stat has the policy field")
            .parse()
            .expect("the policy is a number");
        let slice_ns = sched
            .lines()
            .find_map(|l| l.strip_prefix("se.slice"))
            .and_then(|l| l.trim_start_matches([' ', ':']).trim().parse().ok());
        out.push(ThreadSched {
            name: comm.trim().to_string(),
            policy,
            slice_ns,
        });
    }
    out
}

/// Starts the collector with `extra` flags and waits until it serves, so that its
/// runtime and the store's first commit have started their threads.
fn serving(dir: &std::path::Path, extra: &[&str]) -> CollectorProcess {
    let port = free_port();
    let mut collector = CollectorProcess::spawn(dir, port, extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = collector.0.try_wait() {
            panic!("the collector exited before serving: {status}");
        }
        assert!(Instant::now() < deadline, "the collector never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    collector
}

/// Every thread of a collector started with `extra` flags.
fn threads_with(extra: &[&str]) -> Vec<ThreadSched> {
    let dir = tempfile::tempdir().expect("temp dir");
    let collector = serving(dir.path(), extra);
    let threads = thread_policies(collector.0.id());
    assert!(
        threads.len() > 1,
        "a runtime has several threads: {threads:?}"
    );
    threads
}

#[test]
fn every_thread_of_the_collector_runs_under_sched_idle_by_default() {
    let threads = threads_with(&[]);
    assert!(
        threads.iter().all(|t| t.policy == SCHED_IDLE),
        "every thread under SCHED_IDLE ({SCHED_IDLE}): {threads:?}"
    );
}

#[test]
fn short_slices_asks_for_short_slices_on_every_thread() {
    let threads = threads_with(&["--scheduling", "short-slices"]);
    assert!(
        threads
            .iter()
            .all(|t| t.policy == SCHED_OTHER && t.slice_ns == Some(SHORT_SLICE_NS)),
        "every thread under SCHED_OTHER with a {SHORT_SLICE_NS}-ns slice: {threads:?}"
    );
}

#[test]
fn default_leaves_the_kernels_policy_and_slice() {
    let threads = threads_with(&["--scheduling", "default"]);
    assert!(
        threads
            .iter()
            .all(|t| t.policy == SCHED_OTHER && t.slice_ns.is_some_and(|ns| ns != SHORT_SLICE_NS)),
        "every thread under SCHED_OTHER with the kernel's slice: {threads:?}"
    );
}
