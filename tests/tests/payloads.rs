//! Only what crosses a socket leaves the node with its bytes.
//!
//! A traced "kubelet" (a shell named so) writes a marker to a regular file and to its
//! stdout pipe, as the kubelet writes a Secret volume's files and `kubectl get secret -o
//! jsonpath=…` prints a bare value, then the HTTP test peer it starts sends a request
//! over TCP. The writes to the file and the pipe are reported (strace-like) without
//! their bytes; the request over the socket with them.
//!
//! Run as root with `cargo xtask test`; it loads the agents' eBPF programs for real.

use std::time::Duration;

use ktrail_tests::json::json_lines;
use ktrail_tests::{
    skip_unless_root, wait_for, workspace_bin, Check, ClusterOptions, TwoNodes, PEER_BIN, WORKER,
};
use serde_json::Value;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
const MARKER: &str = "not-for-the-collector-5f1c0b";

#[test]
fn file_and_pipe_writes_are_reported_without_their_bytes() {
    skip_unless_root();
    let fx = TwoNodes::start(ClusterOptions::default()).expect("start collector and agents");
    let _server = fx.spawn_server().expect("kube-apiserver peer");
    let dir = fx.dir().join("payloads");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let peer = workspace_bin(PEER_BIN).expect("test peer");
    std::fs::copy(peer, dir.join("peer")).expect("copy the peer");
    let trace = fx.spawn_trace(WORKER).expect("spawn ktrail trace");
    let url = TwoNodes::pods_url();
    let script = format!(
        "echo {MARKER} > {d}/volume-file; echo {MARKER}; {d}/peer client --url {url} --count 2",
        d = dir.display()
    );
    let shell = fx
        .run_traced_shell(&dir, &script)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(shell.stdout().contains(MARKER), "the pipe got the marker");

    let kind = |e: &Value| {
        e["syscall"]["socket"]["kind"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let events = wait_for("the peer's request on its socket", EVENT_TIMEOUT, || {
        let events = json_lines(&trace.stdout());
        let sent = events.iter().any(|e| {
            e["comm"] == "peer"
                && kind(e) == "socket"
                && e["syscall"]["data"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("GET /api/v1/namespaces/default/pods"))
        });
        Ok(if sent {
            Check::Done(events)
        } else {
            Check::NotYet("no request with its bytes yet".into())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", trace.logs(), fx.logs()));

    // The shell's two writes of the marker and its newline are there, bytes withheld.
    let shell_writes: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["comm"] == "kubelet"
                && e["syscall"]["name"] == "write"
                && e["syscall"]["ret"].as_i64() == Some(MARKER.len() as i64 + 1)
        })
        .collect();
    assert_eq!(
        shell_writes.len(),
        2,
        "the file and the pipe write: {shell_writes:#?}"
    );
    for w in &shell_writes {
        assert_ne!(kind(w), "socket", "{w}");
        assert_eq!(w["syscall"]["data"], "", "bytes of a non-socket write: {w}");
    }
    let leaked: Vec<&Value> = events
        .iter()
        .filter(|e| e.to_string().contains(MARKER) && e["kind"] == "syscall")
        .filter(|e| e["syscall"]["name"] != "execve")
        .collect();
    assert!(leaked.is_empty(), "the marker left the node: {leaked:#?}");
}
