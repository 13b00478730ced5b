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

/// The port a `server --listen 127.0.0.1:0` test peer printed.
fn listening_port(server: &ktrail_tests::ChildGuard) -> Check<u16> {
    match server
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("listening on "))
        .and_then(|a| a.trim().rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
    {
        Some(port) => Check::Done(port),
        None => Check::NotYet(server.stdout()),
    }
}

/// The kernel programs cache what lies behind each fd of a traced process (fd_cache.rs
/// in agent-ebpf). Every event must still name the socket its fd holds at that moment,
/// whatever was behind the same fd number before: a shell opens, closes and reopens fd
/// 5 to three servers in turn (each new socket also passes through fd 3, reused every
/// time, and bash's `>&5` dup2s it onto fd 1, the stdout pipe, for the write and back),
/// then dup2s one live socket onto another's fd. Each write says which server it went
/// to; its event must carry that server's port, and so must each connect.
#[test]
fn every_event_names_the_socket_its_fd_holds_then() {
    skip_unless_root();
    let fx = TwoNodes::start(ClusterOptions::default()).expect("start collector and agents");
    let mut ports = Vec::new();
    let mut sinks = Vec::new();
    for i in 0..3 {
        let mut sink = fx
            .spawn_target(WORKER, "sink", ["server", "--listen", "127.0.0.1:0"])
            .expect("a test peer server");
        let port = wait_for("a sink to listen", EVENT_TIMEOUT, || {
            sink.ensure_running()?;
            Ok(listening_port(&sink))
        })
        .unwrap_or_else(|e| panic!("sink {i}: {e:#}"));
        ports.push(port);
        sinks.push(sink);
    }
    let dir = fx.dir().join("fd-reuse");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let trace = fx.spawn_trace(WORKER).expect("spawn ktrail trace");
    let [a, b, c] = [ports[0], ports[1], ports[2]];
    let script = format!(
        "for p in {a} {b} {c} {a} {c} {b}; do \
           exec 5<>/dev/tcp/127.0.0.1/$p; echo to-$p >&5; echo to-$p >&5; exec 5>&-; \
         done; \
         exec 5<>/dev/tcp/127.0.0.1/{a}; exec 6<>/dev/tcp/127.0.0.1/{b}; \
         echo to-{a} >&5; exec 5>&6; echo to-{b} >&5; exec 5>&- 6>&-; \
         exec 5<>/dev/tcp/127.0.0.1/{c}; echo to-{c} >&5; echo done-fd-reuse"
    );
    fx.run_traced_shell(&dir, &script)
        .unwrap_or_else(|e| panic!("{e:#}"));

    let port_of = |e: &Value| e["syscall"]["socket"]["remote_port"].as_u64();
    let is_write = |e: &Value| {
        e["comm"] == "kubelet"
            && e["syscall"]["name"] == "write"
            && e["syscall"]["data"]
                .as_str()
                .is_some_and(|d| d.starts_with("to-"))
    };
    // 6 × 2 in the loop, 2 around the dup2, 1 at the end.
    let expected_writes = 15;
    let events = wait_for("the shell's socket writes", EVENT_TIMEOUT, || {
        let events = json_lines(&trace.stdout());
        let n = events.iter().filter(|e| is_write(e)).count();
        Ok(if n >= expected_writes {
            Check::Done(events)
        } else {
            Check::NotYet(format!("{n} of {expected_writes} writes"))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", trace.logs(), fx.logs()));

    let mut wrong = Vec::new();
    for w in events.iter().filter(|e| is_write(e)) {
        let data = w["syscall"]["data"].as_str().unwrap_or("");
        let to: u64 = data
            .trim_start_matches("to-")
            .trim_end()
            .parse()
            .unwrap_or_else(|_| panic!("data {data:?}"));
        if port_of(w) != Some(to) {
            wrong.push(w.clone());
        }
    }
    // Only the TCP connects: glibc may also try nscd's unix socket (ENOENT where no
    // nscd runs) when bash looks up its user, and that says nothing about fd reuse.
    let connects: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["comm"] == "kubelet"
                && e["syscall"]["name"] == "connect"
                && e["syscall"]["socket"]["family"] == "inet"
        })
        .collect();
    let connected_to: Vec<Option<u64>> = connects.iter().map(|e| port_of(e)).collect();
    let [a, b, c] = [a, b, c].map(|p| Some(p as u64));
    assert_eq!(
        connected_to,
        vec![a, b, c, a, c, b, a, b, c],
        "each connect names its own server: {connects:#?}"
    );
    assert!(
        wrong.is_empty(),
        "writes whose event names another socket than the one written to: {wrong:#?}"
    );
    drop(sinks);
}
