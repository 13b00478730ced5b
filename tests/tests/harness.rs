//! Tests of the test harness itself: the HTTP peer, the namespace pair, child guards.
//! They need no eBPF, so they show whether a two-node failure is ktrail's or the harness's.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ktrail_tests::{
    netns_command, netns_exists, netns_of, run_in_netns, skip_unless_root, wait_for, Check,
    ChildGuard, NetnsPair, WorkDir, CONTROL, CONTROL_IP, WORKER,
};

fn peer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ktrail-test-peer"))
}

/// Waits for the server's "listening on ADDR" line and returns ADDR.
fn listening_addr(server: &mut ChildGuard) -> String {
    wait_for("the peer server to listen", Duration::from_secs(10), || {
        server.ensure_running()?;
        let out = server.stdout();
        Ok(
            match out.lines().find_map(|l| l.strip_prefix("listening on ")) {
                Some(addr) => Check::Done(addr.trim().to_string()),
                None => Check::NotYet(format!("stdout: {out:?}")),
            },
        )
    })
    .expect("server listening")
}

fn assert_client_ok(client: &mut ChildGuard, count: usize) {
    let status = client
        .wait_timeout(Duration::from_secs(20))
        .expect("client finishes");
    assert!(
        status.success(),
        "client failed ({status})\n{}",
        client.logs()
    );
    let out = client.stdout();
    let responses: Vec<&str> = out.lines().filter(|l| l.starts_with("response ")).collect();
    assert_eq!(responses.len(), count, "one line per response:\n{out}");
    for line in responses {
        assert!(
            line.contains("HTTP/1.1 200 OK") && line.contains("latency_us="),
            "{line}"
        );
    }
}

#[test]
fn peer_keeps_one_connection_for_all_requests() {
    let dir = WorkDir::new("peer").expect("work dir");
    let mut cmd = Command::new(peer());
    cmd.args(["server", "--listen", "127.0.0.1:0"]);
    let mut server = ChildGuard::spawn("server", cmd, dir.path()).expect("spawn server");
    let addr = listening_addr(&mut server);

    let mut cmd = Command::new(peer());
    let url = format!("http://{addr}/api/v1/namespaces/default/pods");
    cmd.args([
        "client",
        "--url",
        &url,
        "--count",
        "3",
        "--interval-ms",
        "10",
    ]);
    let mut client = ChildGuard::spawn("client", cmd, dir.path()).expect("spawn client");
    assert_client_ok(&mut client, 3);

    let served = server.stdout();
    let lines: Vec<&str> = served.lines().filter(|l| l.contains(" -> 200")).collect();
    assert_eq!(lines.len(), 3, "server log:\n{served}");
    let peers: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        peers.windows(2).all(|w| w[0] == w[1]),
        "all requests on one keep-alive connection (same client address):\n{served}"
    );
    assert!(lines
        .iter()
        .all(|l| l.contains("GET /api/v1/namespaces/default/pods")));
}

#[test]
fn peer_rejects_bad_arguments() {
    let out = Command::new(peer())
        .args(["client", "--url", "https://x/"])
        .output()
        .expect("run peer");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
}

#[test]
fn netns_guard_cleans_up() {
    skip_unless_root();
    {
        let _pair = NetnsPair::create().expect("create namespaces");
        assert!(netns_exists(CONTROL).expect("ip netns list"));
        assert!(netns_exists(WORKER).expect("ip netns list"));
        let out = run_in_netns(CONTROL, "ip", ["-brief", "addr", "show"]).expect("ip addr");
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(addrs.contains(&format!("{CONTROL_IP}/24")), "{addrs}");
    }
    assert!(
        !netns_exists(CONTROL).expect("ip netns list"),
        "k8s-control left behind"
    );
    assert!(
        !netns_exists(WORKER).expect("ip netns list"),
        "k8s-worker left behind"
    );

    // A stale namespace from a crashed run is replaced, not an error.
    let out = Command::new("ip")
        .args(["netns", "add", netns_of(WORKER)])
        .output()
        .expect("ip netns add");
    assert!(out.status.success(), "{out:?}");
    {
        let _pair = NetnsPair::create().expect("create over a stale namespace");
        assert!(netns_exists(WORKER).expect("ip netns list"));
    }
    assert!(
        !netns_exists(CONTROL).expect("ip netns list"),
        "k8s-control left behind"
    );
    assert!(
        !netns_exists(WORKER).expect("ip netns list"),
        "k8s-worker left behind"
    );
}

#[test]
fn netns_guard_refuses_to_delete_a_namespace_in_use() {
    skip_unless_root();
    drop(NetnsPair::create().expect("start from no namespaces"));
    let dir = WorkDir::new("netns-in-use").expect("work dir");
    let out = Command::new("ip")
        .args(["netns", "add", netns_of(WORKER)])
        .output()
        .expect("ip netns add");
    assert!(out.status.success(), "{out:?}");
    // A process inside it, like the local cluster's kubelet.
    let mut cmd = netns_command(WORKER, "sleep");
    cmd.arg("60");
    let sleeper = ChildGuard::spawn("sleeper", cmd, dir.path()).expect("spawn sleep");

    let err = NetnsPair::create()
        .err()
        .expect("must refuse to delete a namespace in use");
    let msg = format!("{err:#}");
    assert!(msg.contains("in use") && msg.contains("sleep"), "{msg}");
    assert!(netns_exists(WORKER).expect("ip netns list"), "left alone");

    drop(sleeper);
    drop(NetnsPair::create().expect("unused now: removed as stale and re-created"));
    assert!(!netns_exists(WORKER).expect("ip netns list"));
}

#[test]
fn netns_guard_cleans_up_on_panic() {
    skip_unless_root();
    let result = std::panic::catch_unwind(|| {
        let _pair = NetnsPair::create().expect("create namespaces");
        assert!(netns_exists(CONTROL).expect("ip netns list"));
        std::panic::panic_any("intended test failure inside the guard's scope");
    });
    let payload = result.expect_err("the closure panics");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"intended test failure inside the guard's scope"),
        "the namespaces were created and the intended panic happened"
    );
    assert!(!netns_exists(CONTROL).expect("ip netns list"));
    assert!(!netns_exists(WORKER).expect("ip netns list"));
}

#[test]
fn peers_talk_across_the_namespace_pair_with_their_own_pid_and_name() {
    skip_unless_root();
    let pair = NetnsPair::create().expect("create namespaces");
    let dir = WorkDir::new("netns-peer").expect("work dir");
    // Copies named like the targets, as the two-node tests run them.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for name in ["kube-apiserver", "kubelet"] {
        std::fs::copy(peer(), bin.join(name)).expect("copy peer");
    }

    let mut cmd = netns_command(CONTROL, bin.join("kube-apiserver"));
    cmd.args(["server", "--listen", "0.0.0.0:8080"]);
    let mut server = ChildGuard::spawn("kube-apiserver", cmd, dir.path()).expect("spawn server");
    listening_addr(&mut server);
    // `ip netns exec` execs the program: the guard's pid is the server's, named by its file.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.pid())).expect("comm");
    assert_eq!(comm.trim(), "kube-apiserver");

    let url = format!("http://{CONTROL_IP}:8080/api/v1/namespaces/default/pods");
    let mut cmd = netns_command(WORKER, bin.join("kubelet"));
    cmd.args([
        "client",
        "--url",
        &url,
        "--count",
        "2",
        "--interval-ms",
        "50",
    ]);
    let mut client = ChildGuard::spawn("kubelet", cmd, dir.path()).expect("spawn client");
    assert_client_ok(&mut client, 2);
    assert!(
        server.stdout().contains("192.168.56.20:"),
        "the request came from the worker's address:\n{}",
        server.stdout()
    );

    let server_pid = server.pid();
    drop(server);
    assert!(
        !PathBuf::from(format!("/proc/{server_pid}")).exists(),
        "the guard killed and reaped the server"
    );
    drop(pair);
}
