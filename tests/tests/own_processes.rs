//! ktrail's own processes are never traced, not even for a moment.
//!
//! Deployed, the collector descends from a containerd shim, a target, so it would be
//! tracked like a pod's process, and tracing it feeds back into itself. A traced
//! "kubelet" (a shell) runs two copies of the HTTP test peer, one after the other: one
//! named `ktrail`, one named `peer-child`. Both talk to the traced `kube-apiserver` peer
//! at once after exec; the agent must report the second and nothing of the first.
//!
//! Run as root with `cargo xtask test`; it loads the agents' eBPF programs for real.

use std::time::Duration;

use ktrail_tests::json::json_lines;
use ktrail_tests::{
    skip_unless_root, wait_for, workspace_bin, Check, ClusterOptions, TwoNodes, PEER_BIN, WORKER,
};

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_tracked_process_that_execs_ktrail_is_dropped_before_its_first_syscall() {
    skip_unless_root();
    let fx = TwoNodes::start(ClusterOptions::default()).expect("start collector and agents");
    let _server = fx.spawn_server().expect("kube-apiserver peer");
    let dir = fx.dir().join("own-processes");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let peer = workspace_bin(PEER_BIN).expect("test peer built");
    for name in ["ktrail", "peer-child"] {
        std::fs::copy(&peer, dir.join(name)).expect("copy the peer");
    }
    let trace = fx.spawn_trace(WORKER).expect("spawn ktrail trace");
    let url = TwoNodes::pods_url();
    let script = format!(
        "{d}/ktrail client --url {url} --count 3 && {d}/peer-child client --url {url} --count 3",
        d = dir.display()
    );
    fx.run_traced_shell(&dir, &script)
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The control: the child that is not ktrail is traced, its writes reported.
    let events = wait_for("peer-child's writes", EVENT_TIMEOUT, || {
        let events = json_lines(&trace.stdout());
        let writes = events
            .iter()
            .filter(|e| e["comm"] == "peer-child" && e["syscall"]["name"] == "write")
            .count();
        Ok(if writes >= 3 {
            Check::Done(events)
        } else {
            Check::NotYet(format!("{writes} writes of peer-child so far"))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", trace.logs(), fx.logs()));
    let own: Vec<_> = events.iter().filter(|e| e["comm"] == "ktrail").collect();
    assert!(
        own.is_empty(),
        "{} events of the process named ktrail, e.g. {}",
        own.len(),
        own[0]
    );
}
