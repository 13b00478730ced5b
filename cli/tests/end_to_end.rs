//! The `ktrail` binary against a real collector (in-process, fed by a fake
//! agent: see fake.rs).

mod fake;

use std::process::Stdio;

use fake::*;
use ktrail_proto::Socket;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn ktrail(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ktrail"));
    cmd.arg("--collector")
        .arg(url)
        .arg("--insecure")
        .args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn lines(child: &mut Child) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().expect("stdout")).lines()
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("a line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_prints_the_paired_hop() {
    let fx = start().await;
    let _agents = one_exchange(&fx.url).await;
    wait_hops(&fx.url, 1).await;
    let mut watch = ktrail(&fx.url, &["watch", "--output", "json", "--replay", "5"])
        .spawn()
        .expect("spawn ktrail");
    let mut out = lines(&mut watch);
    let line = next_line(&mut out).await;
    let hop: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(hop["type"], "hop");
    assert_eq!(hop["client"]["node"], "k8s-worker");
    assert_eq!(hop["client"]["comm"], "kubelet");
    assert_eq!(hop["client"]["pid"], 42);
    assert_eq!(hop["server"]["node"], "k8s-cp");
    assert_eq!(hop["server"]["pid"], 7);
    assert_eq!(hop["server"]["observed"], true);
    // The response has no length: it ends at the close, which the fake agent sends.
    assert_eq!(hop["summary"], "GET /healthz → 200");
    assert_eq!(hop["app_protocol"], "http1");
    assert_eq!(hop["method"], "GET");
    assert_eq!(hop["path"], "/healthz");
    assert_eq!(hop["status_code"], 200);
    assert_eq!(hop["grpc_status"], Value::Null);
    assert_eq!(hop["request"], "GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(hop["events"].as_array().map(Vec::len), Some(8));
    assert!(hop["start"].as_str().is_some_and(|s| s.ends_with('Z')));
    watch.kill().await.expect("stop watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_hops_prints_one_line_without_colour_into_a_pipe() {
    let fx = start().await;
    let _agents = one_exchange(&fx.url).await;
    wait_hops(&fx.url, 1).await;
    let mut watch = ktrail(&fx.url, &["watch", "--view", "hops", "--replay", "1"])
        .spawn()
        .expect("spawn");
    let line = next_line(&mut lines(&mut watch)).await;
    assert!(
        line.contains(
            "k8s-worker/kubelet[42] → k8s-cp/kube-apiserver[7] tcp/http1 GET /healthz → 200"
        ),
        "{line}"
    );
    assert!(line.ends_with(" ms"), "{line}");
    assert!(!line.contains('\x1b'), "no colour into a pipe: {line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_agents() {
    let fx = start().await;
    let _agents = one_exchange(&fx.url).await;
    wait_hops(&fx.url, 1).await;
    let out = ktrail(&fx.url, &["status", "--output", "json"])
        .output()
        .await
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let agents = status["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 2);
    assert!(agents
        .iter()
        .all(|a| a["connected"] == true && a["contiguous_seq"] == 4));
    assert_eq!(status["hops_total"], 1);
    // The healthz hop starts no flow: the collector reports it waiting for one
    // (its counters are taken on the hop task's next tick).
    let mut waiting = 0;
    for _ in 0..50 {
        let out = ktrail(&fx.url, &["status", "--output", "json"])
            .output()
            .await
            .expect("run");
        let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        waiting = status["pipeline"]["hops_pending"].as_u64().unwrap_or(0);
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(waiting, 1, "the hop waiting for a flow in status.pipeline");

    let out = ktrail(&fx.url, &["status"]).output().await.expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NODE"), "{text}");
    assert!(
        text.contains("k8s-worker") && text.contains("agents: 2 (2 connected)"),
        "{text}"
    );
    assert!(
        text.contains("hops waiting for a flow: 1") && text.contains("collector drops:"),
        "{text}"
    );
    // The collector's store: its file on disk holds what was written.
    assert!(text.contains("on disk (no cap)"), "{text}");
    let store = &status["store"];
    assert!(store["file_bytes"].as_u64().unwrap_or(0) > 0, "{status}");
    assert_eq!(store["max_bytes"], 0);
    assert_eq!(store["evicted_events"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_follows_a_process_by_name() {
    let fx = start().await;
    let mut trace = ktrail(
        &fx.url,
        &["trace", "--comm", "kube*", "--node", "k8s-worker"],
    )
    .spawn()
    .expect("spawn");
    let mut out = lines(&mut trace);
    let agent = Agent::connect(&fx.url, "k8s-worker").await;
    let s = Socket::inet(("192.168.56.20", 40000), ("192.168.56.10", 8080));
    // Until the trace has subscribed, events go unseen: keep sending.
    let mut seq = 0;
    let line = loop {
        seq += 1;
        agent
            .send(vec![syscall(seq, 42, "kubelet", "write", REQ, &s)])
            .await;
        match tokio::time::timeout(std::time::Duration::from_millis(200), out.next_line()).await {
            Ok(line) => break line.expect("readable").expect("a line"),
            Err(_) => assert!(seq < 50, "no trace output"),
        }
    };
    assert!(line.starts_with("k8s-worker kubelet[42] "), "{line}");
    assert!(
        line.contains(r#"write(3<TCP:192.168.56.20:40000->192.168.56.10:8080>, "GET /healthz HTTP/1.1\r\n\r\n", 25) = 25 <0.000010>"#),
        "{line}"
    );
}

#[tokio::test]
async fn an_unreachable_collector_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let url = format!("http://127.0.0.1:{port}");
    let out = ktrail(&url, &["status"]).output().await.expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the collector at {url}")),
        "{err}"
    );
    assert!(
        err.contains("is ktrail-collector running? pass --collector"),
        "{err}"
    );
}
