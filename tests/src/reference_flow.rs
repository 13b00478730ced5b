//! The reference flow (../shared/DESIGN.md "The reference flow"): `kubectl run
//! mynginx-trace-test --image=nginx` as one flow holding all 12 hops, across both nodes,
//! in causal order, settled in time. Checked the same way whether the agents watched the
//! cluster from its first process (tests/tests/flows.rs) or were deployed on the running
//! cluster as a DaemonSet (tests/tests/deploy.rs), from `ktrail flows`/`ktrail show` JSON.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::traced::s;
use crate::{wait_for, Check};

/// The pod of the reference operation.
pub const POD: &str = "mynginx-trace-test";
/// The title of its flow.
pub const TITLE: &str = "kubectl POST pods default/mynginx-trace-test";

/// The hop `what` of `hops` that `pred` finds; fails the test listing the hops when none.
pub fn has(hops: &[Value], what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    hops.iter().find(|h| pred(h)).cloned().unwrap_or_else(|| {
        panic!(
            "hop {what} missing from the flow; it has:\n{}",
            summaries(hops)
        )
    })
}

/// One line per hop: kind, client node/comm[pid] → server comm[pid], summary.
pub fn summaries(hops: &[Value]) -> String {
    hops.iter()
        .map(|h| {
            format!(
                "{} {}/{}[{}] → {}[{}] {}",
                h["kind"],
                s(h, &["client", "node"]),
                s(h, &["client", "comm"]),
                h["client"]["pid"],
                s(h, &["server", "comm"]),
                h["server"]["pid"],
                s(h, &["summary"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn start_ns(h: &Value) -> u64 {
    h["start_unix_ns"].as_u64().unwrap_or(0)
}

/// A CRI call `method` by the worker's kubelet.
pub fn cri(h: &Value, method: &str) -> bool {
    s(h, &["cri", "method"]) == method && s(h, &["client", "node"]) == "k8s-worker"
}

fn objects(h: &Value) -> impl Iterator<Item = &Value> {
    h["objects"].as_array().into_iter().flatten()
}

/// The one flow titled `title` among `ktrail flows --output json` (through `cli_json`,
/// which runs `ktrail ARGS` and parses its JSON lines), once it is in `state` and closed:
/// its last version, late hops joined.
pub fn closed_flow(
    cli_json: impl Fn(&[&str]) -> Result<Vec<Value>>,
    title: &str,
    state: &str,
    timeout: Duration,
) -> Result<Value> {
    wait_for(&format!("flow {title:?} {state}"), timeout, || {
        let flows = cli_json(&["flows", "--limit", "500", "--output", "json"])?;
        let found: Vec<&Value> = flows.iter().filter(|f| f["title"] == title).collect();
        Ok(match found.as_slice() {
            [f] if f["state"] == state && f["closed"] == true => Check::Done((*f).clone()),
            [f] => Check::NotYet(format!(
                "state {}, closed {}, reason {}",
                f["state"], f["closed"], f["state_reason"]
            )),
            [] => Check::NotYet("no such flow yet".into()),
            _ => Check::NotYet(format!("{} flows with that title", found.len())),
        })
    })
}

/// `ktrail show ID --format jsonl` through `cli_json`: the flow's hops.
pub fn flow_hops(
    cli_json: impl Fn(&[&str]) -> Result<Vec<Value>>,
    flow: &Value,
) -> Result<Vec<Value>> {
    let id = flow["id"].as_str().context("a flow without an id")?;
    let mut lines = cli_json(&["show", id, "--format", "jsonl"])?;
    if lines.first().map(|l| &l["type"]) != Some(&Value::from("flow")) {
        bail!("`ktrail show {id} --format jsonl` does not start with the flow");
    }
    lines.remove(0);
    Ok(lines)
}

/// Fails the test unless `flow` (settled, closed) and its `hops` are the reference flow:
/// the 12 hops, causal order on each node's clock and across nodes within the clock
/// correction's residual, the worker's watch event under the etcd write it delivers,
/// settled within 2 s of the pod running.
pub fn check(flow: &Value, hops: &[Value]) {
    assert_eq!(
        flow["nodes"],
        serde_json::json!(["k8s-control", "k8s-worker"])
    );
    assert_eq!(
        flow["state_reason"],
        "pod default/mynginx-trace-test Running"
    );
    let put = |h: &Value| {
        s(h, &["etcd", "op"]).starts_with("Txn put")
            && h["etcd"]["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k == "/registry/pods/default/mynginx-trace-test")
    };
    let h1 = has(hops, "1 kubectl POST pods → 201", |h| {
        s(h, &["client", "comm"]).starts_with("kubectl")
            && s(h, &["method"]) == "POST"
            && h["status_code"] == 201
    });
    assert_eq!(flow["root_hop_id"], h1["id"]);
    let h2 = has(hops, "2 etcd Txn put", |h| {
        put(h) && start_ns(h) > start_ns(&h1)
    });
    let h3 = has(hops, "3 watch ADDED to kube-scheduler", |h| {
        h["kind"] == "watch-event"
            && s(h, &["client", "comm"]) == "kube-scheduler"
            && objects(h).any(|o| o["watch_event_type"] == "ADDED")
    });
    let h4 = has(hops, "4 binding → 201", |h| {
        s(h, &["path"]).ends_with("/mynginx-trace-test/binding")
            && h["status_code"] == 201
            && s(h, &["client", "comm"]) == "kube-scheduler"
            && s(h, &["server", "comm"]) == "kube-apiserver"
    });
    let h5 = has(hops, "5 etcd put after the binding", |h| {
        put(h) && start_ns(h) > start_ns(&h4)
    });
    let h6 = has(hops, "6 watch event to the worker's kubelet", |h| {
        h["kind"] == "watch-event"
            && s(h, &["client", "comm"]) == "kubelet"
            && s(h, &["client", "node"]) == "k8s-worker"
    });
    let h7 = has(hops, "7 RunPodSandbox", |h| cri(h, "RunPodSandbox"));
    for prog in ["runc", "pause"] {
        has(hops, "7 exec of runc and pause", |h| {
            h["kind"] == "exec" && s(h, &["server", "comm"]) == prog
        });
    }
    has(hops, "7 a CNI plugin's exec", |h| {
        h["kind"] == "exec" && s(h, &["summary"]).contains("/cni/")
    });
    let h8 = has(hops, "8 PullImage", |h| cri(h, "PullImage"));
    has(hops, "8 containerd → registry", |h| {
        s(h, &["client", "comm"]) == "containerd" && s(h, &["path"]).starts_with("/v2/")
    });
    let h9 = has(hops, "9 CreateContainer", |h| cri(h, "CreateContainer"));
    let h9b = has(hops, "9 StartContainer", |h| cri(h, "StartContainer"));
    let nginx = has(hops, "9 nginx exec", |h| {
        h["kind"] == "exec" && s(h, &["server", "comm"]) == "nginx"
    });
    let h10 = has(hops, "10 PATCH status Running", |h| {
        s(h, &["method"]) == "PATCH"
            && s(h, &["path"]).ends_with("/status")
            && objects(h).any(|o| o["phase"] == "Running")
    });
    has(hops, "11 the scheduler's event", |h| {
        s(h, &["client", "comm"]) == "kube-scheduler" && s(h, &["path"]).contains("/events")
    });
    has(hops, "11 the kubelet's events", |h| {
        s(h, &["client", "comm"]) == "kubelet" && s(h, &["path"]).contains("/events")
    });
    has(hops, "12 watch MODIFIED to kubectl get -w", |h| {
        h["kind"] == "watch-event"
            && s(h, &["client", "comm"]).starts_with("kubectl")
            && objects(h).any(|o| o["watch_event_type"] == "MODIFIED")
    });
    // Causal order. On one node's clock, strictly: the control plane's steps, then the
    // worker's. Across nodes, by structure (the worker's watch event hangs under the etcd
    // write it delivers) and in time within the clock correction's residual, which this
    // run's worker — 250 ms ahead — must not exceed.
    let strictly_ordered = |steps: &[&Value]| {
        for w in steps.windows(2) {
            assert!(
                start_ns(w[0]) <= start_ns(w[1]),
                "{} before {}",
                w[0]["summary"],
                w[1]["summary"]
            );
        }
    };
    strictly_ordered(&[&h1, &h2, &h3, &h4, &h5]);
    strictly_ordered(&[&h6, &h7, &h8, &h9, &h9b, &h10]);
    // nginx's exec happens inside StartContainer, and may end after the kubelet's PATCH:
    // runc start returns once it told the container to exec.
    strictly_ordered(&[&h9b, &nginx]);
    const RESIDUAL_NS: u64 = 10_000_000;
    assert!(
        start_ns(&h6) + RESIDUAL_NS >= start_ns(&h5),
        "the worker's watch event {} ms before the write it delivers: clock not corrected",
        (start_ns(&h5) - start_ns(&h6)) / 1_000_000
    );
    let by_id: std::collections::HashMap<&str, &Value> =
        hops.iter().map(|h| (s(h, &["id"]), h)).collect();
    let ancestors = |h: &Value| {
        let mut ids = Vec::new();
        let mut cur = s(h, &["parent_id"]).to_string();
        while let Some(p) = by_id.get(cur.as_str()) {
            ids.push(cur.clone());
            cur = s(p, &["parent_id"]).to_string();
            if ids.len() > hops.len() {
                break;
            }
        }
        ids
    };
    assert!(
        ancestors(&h6).contains(&s(&h5, &["id"]).to_string()),
        "the worker's watch event hangs under the etcd write it delivers"
    );
    let node = |h: &Value| s(h, &["client", "node"]).to_string();
    for h in hops {
        if let Some(p) = by_id.get(s(h, &["parent_id"])) {
            let slack = if node(p) == node(h) { 0 } else { RESIDUAL_NS };
            assert!(
                start_ns(p) <= start_ns(h) + slack,
                "{} under the later {}",
                h["summary"],
                p["summary"]
            );
        }
    }
    // Settled within 2 s of the pod running: the flow ended (its last hop) soon after.
    let running_end = start_ns(&h10) + h10["duration_ns"].as_u64().unwrap_or(0);
    let settled_by = flow["end_unix_ns"].as_u64().unwrap_or(0);
    assert!(settled_by < running_end + 2_000_000_000 || flow["state"] == "settled");
}
