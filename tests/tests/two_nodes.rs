//! Acceptance tests of the foundation: two "nodes" (network namespaces on one kernel), an
//! agent on each, the collector on the control node, and the CLI reading hops and status.
//!
//! Run as root with `cargo xtask test`; each test loads the agents' eBPF programs for real.

use std::collections::BTreeSet;
use std::time::Duration;

use ktrail_tests::json::{agent_for_node, describe_hops, has_string_field, hops, json_lines};
use ktrail_tests::json::{u64_of, EndView, HopView};
use ktrail_tests::{
    run_in_netns, skip_unless_root, wait_for, Check, ChildGuard, ClusterOptions, TwoNodes, CONTROL,
    CONTROL_IP, SERVER_PORT, WORKER,
};
use serde_json::Value;

const PODS_REQUEST: &str = "GET /api/v1/namespaces/default/pods";
/// From the last request to its hop in `ktrail watch` (pairing waits for both agents).
const HOP_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn start(options: ClusterOptions) -> TwoNodes {
    skip_unless_root();
    TwoNodes::start(options).expect("start collector and both agents")
}

/// Waits for the `kubelet` peer to exit 0 after printing `count` responses.
fn finish_kubelet(kubelet: &mut ChildGuard, count: usize) {
    let status = kubelet
        .wait_timeout(CLIENT_TIMEOUT)
        .expect("kubelet finishes");
    assert!(
        status.success(),
        "kubelet failed ({status})\n{}",
        kubelet.logs()
    );
    let responses = kubelet
        .stdout()
        .lines()
        .filter(|l| l.starts_with("response "))
        .count();
    assert_eq!(responses, count, "kubelet responses\n{}", kubelet.logs());
}

/// Everything wrong with `hop` as one kubelet → kube-apiserver request; empty when right.
fn kubelet_hop_problems(hop: &HopView, kubelet_pid: u32, server_pid: u32) -> Vec<String> {
    let mut problems = end_problems("client", &hop.client, WORKER, "kubelet", kubelet_pid);
    problems.extend(end_problems(
        "server",
        &hop.server,
        CONTROL,
        "kube-apiserver",
        server_pid,
    ));
    if !(hop.duration_ns > 0 && hop.duration_ns < 1_000_000_000) {
        problems.push(format!("duration_ns {} not in (0, 1 s)", hop.duration_ns));
    }
    problems
}

/// Everything wrong with one end of a hop (`role` is "client" or "server").
fn end_problems(role: &str, end: &EndView, node: &str, comm: &str, pid: u32) -> Vec<String> {
    let mut problems = Vec::new();
    if end.node != node {
        problems.push(format!("{role}.node {:?} != {node:?}", end.node));
    }
    if end.comm != comm {
        problems.push(format!("{role}.comm {:?} != {comm:?}", end.comm));
    }
    if end.pid != u64::from(pid) {
        problems.push(format!("{role}.pid {} != {comm}'s pid {pid}", end.pid));
    }
    if !end.observed {
        problems.push(format!("{role} not observed"));
    }
    problems
}

/// The hops of `watch` whose request is the kubelet's GET of the pods list.
fn pods_hops(watch: &ChildGuard) -> Vec<HopView> {
    hops(&watch.stdout())
        .into_iter()
        .filter(|h| h.request.contains(PODS_REQUEST))
        .collect()
}

/// The acceptance test of the foundation issue: a request from a process on one node to a
/// process on another becomes one hop with both ends attributed to node, process and pid.
#[test]
fn kubelet_requests_become_hops_across_two_nodes() {
    let cluster = start(ClusterOptions::default());
    let mut watch = cluster.spawn_watch().expect("start ktrail watch");
    let server = cluster.spawn_server().expect("start kube-apiserver");
    let mut kubelet = cluster.spawn_kubelet(5, 50).expect("start kubelet");
    let (kubelet_pid, server_pid) = (kubelet.pid(), server.pid());
    finish_kubelet(&mut kubelet, 5);

    let seen = wait_for(
        "5 correct kubelet -> kube-apiserver hops in `ktrail watch --output json`",
        HOP_TIMEOUT,
        || {
            watch.ensure_running()?;
            let found = pods_hops(&watch);
            let problems: Vec<String> = found
                .iter()
                .filter_map(|h| {
                    let p = kubelet_hop_problems(h, kubelet_pid, server_pid);
                    (!p.is_empty()).then(|| format!("{h}: {}", p.join("; ")))
                })
                .collect();
            Ok(if found.len() >= 5 && problems.is_empty() {
                Check::Done(found)
            } else {
                Check::NotYet(format!(
                    "{} hops with {PODS_REQUEST:?} (want 5); wrong ones:\n  {}\nall hops:\n{}",
                    found.len(),
                    problems.join("\n  "),
                    describe_hops(&hops(&watch.stdout()))
                ))
            })
        },
    )
    .expect("hops");

    // No duplicates turn up a little later: one request, one hop.
    std::thread::sleep(Duration::from_secs(1));
    let settled = pods_hops(&watch);
    assert_eq!(
        settled.len(),
        5,
        "one hop per request, got:\n{}",
        describe_hops(&settled)
    );
    let ids: BTreeSet<&str> = seen.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "distinct hop ids:\n{}", describe_hops(&seen));
}

/// Processes that are not targets are not traced, even when they talk to one that is:
/// the agent filters in the kernel by process, and the hop shows the untraced end as
/// not observed.
#[test]
fn untraced_curl_is_not_captured() {
    let cluster = start(ClusterOptions::default());
    let server = cluster.spawn_server().expect("start kube-apiserver");
    let mut trace = cluster
        .spawn_cli(
            "trace-worker",
            ["trace", "--node", WORKER, "--output", "json"],
        )
        .expect("start ktrail trace");
    // Also gives the trace stream time to subscribe before curl runs.
    let mut watch = cluster.spawn_watch().expect("start ktrail watch");
    trace.ensure_running().expect("ktrail trace running");

    let url = format!("http://{CONTROL_IP}:{SERVER_PORT}/curl-probe");
    let curl = run_in_netns(WORKER, "curl", ["-sS", "--max-time", "5", &url]).expect("run curl");
    assert!(
        curl.status.success() && String::from_utf8_lossy(&curl.stdout).contains("/curl-probe"),
        "curl from {WORKER}: {curl:?}"
    );

    // Positive control, after curl: the worker's trace stream delivers a target's events,
    // so an absence of curl below is not an absence of everything.
    let mut kubelet = cluster.spawn_kubelet(3, 50).expect("start kubelet");
    finish_kubelet(&mut kubelet, 3);
    wait_for(
        "`ktrail trace --node k8s-worker` to show kubelet's events",
        HOP_TIMEOUT,
        || {
            trace.ensure_running()?;
            let events = json_lines(&trace.stdout());
            Ok(
                if events
                    .iter()
                    .any(|e| has_string_field(e, "comm", "kubelet"))
                {
                    Check::Done(())
                } else {
                    Check::NotYet(format!("{} events, none from kubelet", events.len()))
                },
            )
        },
    )
    .expect("trace output");

    // The server's end of curl's connection is traced: a server-only hop.
    let server_pid = u64::from(server.pid());
    let hop = wait_for(
        "a server-only hop for curl's GET /curl-probe in `ktrail watch`",
        HOP_TIMEOUT,
        || {
            watch.ensure_running()?;
            let all = hops(&watch.stdout());
            Ok(
                match all.iter().find(|h| h.request.contains("GET /curl-probe")) {
                    Some(hop) => Check::Done(hop.clone()),
                    None => Check::NotYet(format!("hops:\n{}", describe_hops(&all))),
                },
            )
        },
    )
    .expect("curl hop");
    assert_eq!(hop.server.node, CONTROL, "{hop}");
    assert_eq!(hop.server.comm, "kube-apiserver", "{hop}");
    assert_eq!(hop.server.pid, server_pid, "{hop}");
    assert!(hop.server.observed, "{hop}");
    assert!(!hop.client.observed, "curl is not a target: {hop}");

    let traced: Vec<Value> = json_lines(&trace.stdout());
    let leaked: Vec<&Value> = traced
        .iter()
        .filter(|e| has_string_field(e, "comm", "curl"))
        .collect();
    assert!(leaked.is_empty(), "curl's events were traced: {leaked:?}");
    let watched = json_lines(&watch.stdout());
    let leaked: Vec<&Value> = watched
        .iter()
        .filter(|h| has_string_field(h, "comm", "curl"))
        .collect();
    assert!(leaked.is_empty(), "curl appears in hops: {leaked:?}");
}

/// Runs a long kubelet client, SIGKILLs the collector for 3 s in the middle, restarts it
/// on the same data directory, and returns `ktrail status` once every agent's delivered
/// events are contiguous up to the last sequence number it gave out.
fn status_after_collector_crash(options: ClusterOptions, count: u32, interval_ms: u32) -> Value {
    let mut cluster = start(options);
    let _server = cluster.spawn_server().expect("start kube-apiserver");
    let mut kubelet = cluster
        .spawn_kubelet(count, interval_ms)
        .expect("start kubelet");

    std::thread::sleep(Duration::from_secs(2));
    kubelet
        .ensure_running()
        .expect("kubelet still running when the collector dies");
    cluster.kill_collector().expect("SIGKILL the collector");
    std::thread::sleep(Duration::from_secs(3));
    kubelet
        .ensure_running()
        .expect("kubelet still running when the collector restarts");
    cluster.start_collector().expect("restart the collector");
    finish_kubelet(&mut kubelet, usize::try_from(count).expect("count"));

    wait_for(
        "each agent: connected, contiguous_seq == loss.last_seq > 0",
        Duration::from_secs(60),
        || {
            cluster.ensure_running()?;
            let status = match cluster.status() {
                Ok(status) => status,
                Err(e) => return Ok(Check::NotYet(format!("{e:#}"))),
            };
            let complete = [CONTROL, WORKER].iter().all(|node| {
                agent_for_node(&status, node).is_some_and(|a| {
                    let last_seq = u64_of(a.get("loss").and_then(|l| l.get("last_seq")));
                    a.get("connected").and_then(Value::as_bool) == Some(true)
                        && last_seq > 0
                        && u64_of(a.get("contiguous_seq")) == last_seq
                })
            });
            Ok(if complete {
                Check::Done(status)
            } else {
                Check::NotYet(status.to_string())
            })
        },
    )
    .expect("all buffered events delivered after the collector restart")
}

fn buffer_full(status: &Value, node: &str) -> u64 {
    let agent = agent_for_node(status, node).expect("agent listed");
    u64_of(agent.get("loss").and_then(|l| l.get("buffer_full")))
}

/// The agent buffers what it cannot send while the collector is away and resends it: after
/// a collector crash and restart every event arrived, without a gap.
#[test]
fn collector_crash_loses_no_buffered_events() {
    let status = status_after_collector_crash(ClusterOptions::default(), 400, 25);
    for node in [CONTROL, WORKER] {
        assert_eq!(
            buffer_full(&status, node),
            0,
            "{node}: the default buffer holds 3 s of this traffic: {status}"
        );
    }
}

/// With a tiny send buffer the agent must drop during the outage, and it counts what it
/// dropped instead of losing it silently; what it kept still arrives without a gap.
#[test]
fn collector_crash_with_tiny_buffer_counts_what_was_dropped() {
    let options = ClusterOptions {
        agent_args: vec!["--buffer-events".into(), "200".into()],
        ..ClusterOptions::default()
    };
    // 100 requests/s: each agent sees several hundred events during the 3 s outage.
    let status = status_after_collector_crash(options, 800, 10);
    for node in [CONTROL, WORKER] {
        assert!(
            buffer_full(&status, node) > 0,
            "{node}: loss.buffer_full must count the events beyond --buffer-events 200: {status}"
        );
    }
}

/// Issue 5, clock skew: the worker's clock runs 250 ms ahead (its agent injects it). The
/// collector estimates each node's offset from the agents' reports, `ktrail status` shows
/// the correction, and the worker kubelet's hops start when they happened on the
/// collector's clock (the control node's), not 250 ms later. Durations come from one clock
/// and are untouched.
#[test]
fn a_node_clock_250_ms_ahead_is_corrected() {
    const MS: i64 = 1_000_000;
    let cluster = start(ClusterOptions {
        worker_agent_args: vec!["--clock-offset-ms".into(), "250".into()],
        ..ClusterOptions::default()
    });
    let correction = |status: &Value, node: &str| {
        agent_for_node(status, node).and_then(|a| a.get("clock_correction_ns")?.as_i64())
    };
    let (worker, control) = wait_for("clock corrections of both nodes", CLIENT_TIMEOUT, || {
        let status = cluster.status()?;
        let (w, c) = (correction(&status, WORKER), correction(&status, CONTROL));
        Ok(match (w, c) {
            (Some(w), Some(c)) if w < -200 * MS => Check::Done((w, c)),
            _ => Check::NotYet(format!("worker {w:?}, control {c:?}")),
        })
    })
    .expect("corrections");
    assert!(
        (worker + 250 * MS).abs() < 20 * MS,
        "worker correction {worker} ns, want about -250 ms"
    );
    assert!(
        control.abs() < 20 * MS,
        "control correction {control} ns, want about 0"
    );

    let watch = cluster.spawn_watch().expect("start ktrail watch");
    let _server = cluster.spawn_server().expect("start kube-apiserver");
    let before = now_ns();
    let mut kubelet = cluster.spawn_kubelet(3, 50).expect("start kubelet");
    finish_kubelet(&mut kubelet, 3);
    let after = now_ns();
    let found = wait_for("3 kubelet hops", HOP_TIMEOUT, || {
        let found = pods_hops(&watch);
        Ok(if found.len() >= 3 {
            Check::Done(found)
        } else {
            Check::NotYet(format!("{} hops", found.len()))
        })
    })
    .expect("hops");
    for h in &found {
        let start = h.start_unix_ns as i64;
        assert!(
            start >= before - 20 * MS && start <= after + 20 * MS,
            "hop {h} starts {} ms after the kubelet ran ({} ms window): not corrected",
            (start - before) / MS,
            (after - before) / MS
        );
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
