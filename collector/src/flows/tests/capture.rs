//! Stitching a real capture: the hops and process events of the local
//! cluster (cargo xtask cluster up, agents on both nodes attached before the
//! components started) while `kubectl get pods -w` ran and the user did
//! `kubectl run mynginx-trace-test --image=nginx`, then `kubectl create
//! deployment web --image=nginx --replicas=2`, then `kubectl run bad
//! --image=does-not-exist`. Made with `collector/examples/dump_hops.rs`; hops
//! are replayed in the order the collector emitted them (end + 100 ms of
//! quiet), process events at their time.

use std::collections::HashMap;

use ktrail_proto::v1::{Flow, Hop};

use crate::flows::{StitchConfig, Update};
use crate::replay::{cluster_capture, Replayed, KUBECTL_RUN, KUBECTL_RUN_BAD};

fn replay() -> Replayed {
    crate::replay::replay(&cluster_capture(), StitchConfig::default()).expect("replay the capture")
}

/// The one flow titled `title` and its hops in start order.
fn flow_titled(r: &Replayed, title: &str) -> (Flow, Vec<Hop>) {
    r.flow_titled(title)
        .unwrap_or_else(|| panic!("not exactly one flow titled {title:?}"))
}

/// Replay time the flow first reached `state`.
fn reached(r: &Replayed, flow_id: &str, state: &str) -> u64 {
    r.updates
        .iter()
        .find_map(|(at, u)| match u {
            Update::Flow(f) if f.id == flow_id && f.state == state => Some(*at),
            _ => None,
        })
        .unwrap_or_else(|| panic!("flow {flow_id} never {state}"))
}

/// The flow's hops as `ktrail show` would print them, for failure messages.
fn render(hops: &[Hop]) -> String {
    let start = hops.first().map_or(0, |h| h.start_unix_ns);
    let by_id: HashMap<&str, &Hop> = hops.iter().map(|h| (h.id.as_str(), h)).collect();
    let depth = |h: &Hop| {
        let mut d = 0;
        let mut cur = h;
        while let Some(p) = by_id.get(cur.parent_id.as_str()) {
            d += 1;
            cur = p;
            if d > 50 {
                break;
            }
        }
        d
    };
    let mut s = String::new();
    for h in hops {
        let c = h.client.clone().unwrap_or_default();
        let v = h.server.clone().unwrap_or_default();
        s.push_str(&format!(
            "{:>9.3} ms {}{}/{}[{}] → {}/{}[{}] {} {} ({})\n",
            (h.start_unix_ns - start) as f64 / 1e6,
            "  ".repeat(depth(h)),
            c.node,
            c.comm,
            c.pid,
            v.node,
            v.comm,
            v.pid,
            h.kind,
            h.summary.chars().take(140).collect::<String>(),
            h.joined_by
        ));
    }
    s
}

fn comm(end: &Option<ktrail_proto::v1::HopEnd>) -> &str {
    end.as_ref().map_or("", |e| e.comm.as_str())
}

fn node(end: &Option<ktrail_proto::v1::HopEnd>) -> &str {
    end.as_ref().map_or("", |e| e.node.as_str())
}

/// Finds the one reference hop `what` among `hops`, or fails with the flow.
fn find<'a>(hops: &'a [Hop], what: &str, pred: impl Fn(&Hop) -> bool) -> &'a Hop {
    hops.iter()
        .find(|h| pred(h))
        .unwrap_or_else(|| panic!("hop {what} is not in the flow:\n{}", render(hops)))
}

/// Acceptance (issue 5): `kubectl run` yields one flow holding all 12 hops
/// of the reference flow (../shared/DESIGN.md), across both nodes, in
/// causal order, settled when the pod runs.
#[test]
fn kubectl_run_is_one_flow_with_every_reference_hop_in_causal_order() {
    let r = replay();
    let (flow, hops) = flow_titled(&r, KUBECTL_RUN);
    let pod = "/registry/pods/default/mynginx-trace-test";
    let etcd_put = |h: &Hop| {
        h.etcd
            .as_ref()
            .is_some_and(|e| e.op.starts_with("Txn put") && e.keys.iter().any(|k| k == pod))
    };
    let h1 = find(&hops, "1 kubectl POST pods → 201", |h| {
        comm(&h.client).starts_with("kubectl")
            && h.method == "POST"
            && h.path.starts_with("/api/v1/namespaces/default/pods")
            && h.status_code == 201
    });
    assert_eq!(flow.root_hop_id, h1.id);
    let h2 = find(&hops, "2 etcd Txn put", |h| {
        etcd_put(h) && h.start_unix_ns > h1.start_unix_ns
    });
    let h3 = find(&hops, "3 watch ADDED to the scheduler", |h| {
        h.kind == "watch-event"
            && comm(&h.client) == "kube-scheduler"
            && h.objects
                .iter()
                .any(|o| o.watch_event_type == "ADDED" && o.node_name.is_empty())
    });
    let h4 = find(&hops, "4 binding → 201", |h| {
        comm(&h.client) == "kube-scheduler"
            && h.path.ends_with("/mynginx-trace-test/binding")
            && h.status_code == 201
    });
    let h5 = find(&hops, "5 etcd put after the binding", |h| {
        etcd_put(h) && h.start_unix_ns > h4.start_unix_ns
    });
    let h6 = find(&hops, "6 watch event to the worker's kubelet", |h| {
        h.kind == "watch-event"
            && comm(&h.client) == "kubelet"
            && node(&h.client) == "k8s-worker"
            && h.objects.iter().any(|o| o.node_name == "k8s-worker")
    });
    let cri = |method: &'static str| {
        move |h: &Hop| {
            h.cri.as_ref().is_some_and(|c| c.method == method) && node(&h.client) == "k8s-worker"
        }
    };
    let h7 = find(&hops, "7 RunPodSandbox", cri("RunPodSandbox"));
    for prog in ["runc", "pause", "bridge"] {
        find(&hops, "7 exec of runc, pause and the CNI plugin", |h| {
            h.kind == "exec" && comm(&h.server) == prog
        });
    }
    let h8 = find(&hops, "8 PullImage", cri("PullImage"));
    find(&hops, "8 containerd → registry", |h| {
        comm(&h.client) == "containerd" && h.path.starts_with("/v2/library/nginx")
    });
    let h9 = find(&hops, "9 CreateContainer", cri("CreateContainer"));
    let h9b = find(&hops, "9 StartContainer", cri("StartContainer"));
    let nginx = find(&hops, "9 nginx exec", |h| {
        h.kind == "exec" && comm(&h.server) == "nginx"
    });
    let h10 = find(&hops, "10 PATCH status Running", |h| {
        h.method == "PATCH"
            && h.path.ends_with("/mynginx-trace-test/status")
            && h.objects.iter().any(|o| o.phase == "Running")
    });
    find(&hops, "11 scheduler's event", |h| {
        comm(&h.client) == "kube-scheduler" && h.path.contains("/events")
    });
    find(&hops, "11 kubelet's events", |h| {
        comm(&h.client) == "kubelet" && h.path.contains("/events")
    });
    find(&hops, "12 watch MODIFIED to kubectl get -w", |h| {
        h.kind == "watch-event"
            && comm(&h.client).starts_with("kubectl")
            && h.objects.iter().any(|o| o.watch_event_type == "MODIFIED")
    });
    // Causal order, as the reference flow numbers it.
    let order = [h1, h2, h3, h4, h5, h6, h7, h8, h9, h9b, nginx, h10];
    for w in order.windows(2) {
        assert!(
            w[0].start_unix_ns <= w[1].start_unix_ns,
            "{} before {}",
            w[0].summary,
            w[1].summary
        );
    }
    // Every parent started before its child, and the main chain hangs together.
    let by_id: HashMap<&str, &Hop> = hops.iter().map(|h| (h.id.as_str(), h)).collect();
    for h in &hops {
        if let Some(p) = by_id.get(h.parent_id.as_str()) {
            assert!(
                p.start_unix_ns <= h.start_unix_ns,
                "{} under later {}",
                h.summary,
                p.summary
            );
        }
    }
    let ancestors = |h: &Hop| {
        let mut v = Vec::new();
        let mut cur = h;
        while let Some(p) = by_id.get(cur.parent_id.as_str()) {
            v.push(p.id.clone());
            cur = p;
        }
        v
    };
    assert!(ancestors(h2).contains(&h1.id), "etcd put under the POST");
    assert!(
        ancestors(h4).contains(&h3.id),
        "binding under the scheduler's watch event"
    );
    assert!(
        ancestors(h5).contains(&h4.id),
        "second put under the binding"
    );
    assert!(
        ancestors(nginx).contains(&h9b.id) || ancestors(nginx).contains(&h7.id),
        "nginx under the CRI calls"
    );
    // One flow: no other flow holds any of them.
    assert_eq!(flow.nodes, vec!["k8s-control", "k8s-worker"]);
    assert_eq!(flow.state, crate::flows::SETTLED);
    assert_eq!(flow.state_reason, "pod default/mynginx-trace-test Running");
    // Settled within 2 s of the pod running (the PATCH that says so).
    let settled_at = reached(&r, &flow.id, crate::flows::SETTLED);
    let running_at = h10.start_unix_ns + h10.duration_ns;
    assert!(
        settled_at < running_at + 2_000_000_000,
        "settled {} ms after Running",
        (settled_at - running_at) / 1_000_000
    );
}

/// `kubectl run bad --image=does-not-exist`: the flow fails at the pull,
/// naming containerd and the registry's error.
#[test]
fn a_failed_pull_ends_the_flow_with_the_runtimes_error() {
    let r = replay();
    let (flow, hops) = flow_titled(&r, KUBECTL_RUN_BAD);
    assert_eq!(flow.state, crate::flows::FAILED, "{}", render(&hops));
    let failure = flow.failure.as_ref().expect("failure");
    assert_eq!(failure.component, "containerd");
    assert!(
        failure.message.starts_with("PullImage: "),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("does-not-exist"),
        "{}",
        failure.message
    );
    find(&hops, "the registry's 404", |h| {
        comm(&h.client) == "containerd"
            && h.path.contains("/does-not-exist/manifests/")
            && h.status_code == 404
    });
}
