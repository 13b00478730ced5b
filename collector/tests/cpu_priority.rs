//! `--cpu-priority`: the collector binary's threads (the runtime's workers and the
//! blocking pool that commits the store) run under SCHED_IDLE by default, so the
//! control-plane components it shares a node with take the CPU from it at once, and
//! under the node's default policy with `--cpu-priority normal`.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, CollectorProcess};

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

/// The scheduling policy of every thread of `pid`, from field 41 of
/// /proc/PID/task/TID/stat (counted after the parenthesised name, which may hold spaces).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the collector's tasks") {
        let task = task.expect("a task entry").path();
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
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
        out.push((comm.trim().to_string(), policy));
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

/// The policy of every thread of a collector started with `extra` flags.
fn policies_with(extra: &[&str]) -> Vec<(String, u32)> {
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
    let threads = policies_with(&[]);
    assert!(
        threads.iter().all(|(_, policy)| *policy == SCHED_IDLE),
        "every thread under SCHED_IDLE ({SCHED_IDLE}): {threads:?}"
    );
}

#[test]
fn normal_leaves_the_collector_under_the_default_policy() {
    let threads = policies_with(&["--cpu-priority", "normal"]);
    assert!(
        threads.iter().all(|(_, policy)| *policy == SCHED_OTHER),
        "every thread under SCHED_OTHER: {threads:?}"
    );
}
