//! Go TLS plaintext of a real client, mapped to its socket.
//!
//! The client is the real `kubectl` (a stripped Go binary) in the worker namespace; the
//! server is `openssl s_server` in the control namespace — not traced, so each event here
//! comes from kubectl's own `crypto/tls` uprobes. Two ways of connecting, because Go
//! programs hand `tls.Client` different `net.Conn`s:
//! - a kubeconfig with certificate *files*: client-go dials through its cert-rotating
//!   dialer, which wraps the TCP connection (`connrotation.closableConn`);
//! - a kubeconfig with a token: the plain `*net.TCPConn`.
//!
//! Each request's plaintext must carry the fd and the 4-tuple of kubectl's connection.
//!
//! Run as root with `cargo xtask test`; it loads the agents' eBPF programs for real.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ktrail_tests::json::json_lines;
use ktrail_tests::{
    netns_command, run_in_netns, skip_unless_root, wait_for, Check, ChildGuard, ClusterOptions,
    TwoNodes, CONTROL, CONTROL_IP, SUBSCRIBE_GRACE, WORKER, WORKER_IP,
};
use serde_json::Value;

const TLS_PORT: u16 = 8443;
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A self-signed certificate and key, used by the server and as kubectl's client cert.
fn make_cert(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=ktrail-go-tls-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(out.status.success(), "openssl req: {out:?}");
    (cert.display().to_string(), key.display().to_string())
}

fn kubeconfig(dir: &Path, name: &str, user: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- cluster:\n    insecure-skip-tls-verify: true\n    server: https://{CONTROL_IP}:{TLS_PORT}\n  name: t\n\
         contexts:\n- context: {{cluster: t, user: u}}\n  name: t\n\
         current-context: t\n\
         users:\n- name: u\n  user:\n{user}"
    );
    std::fs::write(&path, text).expect("write kubeconfig");
    path.display().to_string()
}

fn spawn_server(fx: &TwoNodes, cert: &str, key: &str) -> ChildGuard {
    let mut cmd = netns_command(CONTROL, "openssl");
    cmd.args(["s_server", "-www", "-accept", &TLS_PORT.to_string()])
        .args(["-cert", cert, "-key", key]);
    let mut server = fx.spawn("tls-server", cmd).expect("spawn openssl s_server");
    wait_for(
        "openssl s_server to accept",
        Duration::from_secs(10),
        || {
            server.ensure_running()?;
            Ok(if server.stdout().contains("ACCEPT") {
                Check::Done(())
            } else {
                Check::NotYet("no ACCEPT line yet".into())
            })
        },
    )
    .expect("server up");
    server
}

/// `kubectl get --raw PATH` in the worker namespace; its answer does not matter (the
/// server is not an API server), only that the request went out.
fn kubectl_get(kubeconfig: &str, path: &str) {
    let out = run_in_netns(
        WORKER,
        "kubectl",
        ["--kubeconfig", kubeconfig, "get", "--raw", path],
    )
    .expect("run kubectl");
    eprintln!(
        "kubectl get --raw {path}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubectl's `tls_write` whose plaintext starts with `GET PATH `.
fn tls_write_of(trace: &ChildGuard, path: &str) -> Option<Value> {
    let request = format!("GET {path} ");
    json_lines(&trace.stdout()).into_iter().find(|e| {
        e["comm"] == "kubectl"
            && e["syscall"]["name"] == "tls_write"
            && e["syscall"]["data"]
                .as_str()
                .is_some_and(|d| d.starts_with(&request))
    })
}

fn assert_on_kubectls_socket(event: &Value, what: &str) {
    let call = &event["syscall"];
    let socket = &call["socket"];
    let fd = call["fd"].as_i64().unwrap_or(-1);
    assert!(fd >= 0, "{what}: the plaintext has no fd: {event}");
    assert_eq!(socket["kind"], "socket", "{what}: not on a socket: {event}");
    assert_eq!(socket["local_addr"], WORKER_IP, "{what}: {event}");
    assert_eq!(socket["remote_addr"], CONTROL_IP, "{what}: {event}");
    assert_eq!(socket["remote_port"], TLS_PORT, "{what}: {event}");
}

#[test]
fn kubectl_plaintext_is_mapped_to_its_socket_with_and_without_a_wrapped_conn() {
    skip_unless_root();
    let fx = TwoNodes::start(ClusterOptions::default()).expect("start collector and agents");
    let (cert, key) = make_cert(fx.dir());
    let _server = spawn_server(&fx, &cert, &key);
    let with_files = kubeconfig(
        fx.dir(),
        "files.kubeconfig",
        &format!("    client-certificate: {cert}\n    client-key: {key}\n"),
    );
    let with_token = kubeconfig(fx.dir(), "token.kubeconfig", "    token: not-a-secret\n");

    let trace = fx
        .spawn_cli("trace", ["trace", "--comm", "kubectl*", "--output", "json"])
        .expect("spawn ktrail trace");
    std::thread::sleep(SUBSCRIBE_GRACE);

    kubectl_get(&with_files, "/through-cert-rotation");
    kubectl_get(&with_token, "/through-plain-tcp");

    for (path, what) in [
        ("/through-cert-rotation", "client-go's wrapped connection"),
        ("/through-plain-tcp", "a plain *net.TCPConn"),
    ] {
        let event = wait_for(what, EVENT_TIMEOUT, || {
            Ok(match tls_write_of(&trace, path) {
                Some(e) => Check::Done(e),
                None => Check::NotYet(format!("no tls_write of GET {path} yet")),
            })
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", trace.logs(), fx.logs()));
        assert_on_kubectls_socket(&event, what);
    }
}
