//! Stitching a real capture: the hops and process events of the local
//! cluster (cargo xtask cluster up, agents on both nodes attached before the
//! components started) while `kubectl get pods -w` ran and the user did
//! `kubectl run mynginx-trace-test --image=nginx`, then `kubectl create
//! deployment web --image=nginx --replicas=2`, then `kubectl run bad
//! --image=does-not-exist`. Made with `collector/examples/dump_hops.rs`; hops
//! are replayed in the order the collector emitted them (end + 100 ms of
//! quiet), process events at their time.

use std::collections::HashMap;
use std::io::Read;

use ktrail_proto::v1::{Flow, Hop};
use prost::Message;

use crate::flows::{FlowStitcher, StitchConfig, Update};
use crate::store::StoredEvent;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const QUIET_NS: u64 = 100_000_000;
const TICK_NS: u64 = 50_000_000;

fn gunzip(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    out
}

enum Item {
    Hop(Box<Hop>),
    Process(Box<StoredEvent>),
}

/// What the collector would have shown at the end of the capture.
pub struct Replayed {
    pub hops: HashMap<String, Hop>,
    pub flows: HashMap<String, Flow>,
    /// Replay time each flow first reached each state.
    pub state_times: HashMap<(String, String), u64>,
}

pub fn replay(cfg: StitchConfig) -> Replayed {
    let mut items: Vec<(u64, Item)> = Vec::new();
    let hops = gunzip("cluster-capture.hops.pb.gz");
    let mut buf = &hops[..];
    while !buf.is_empty() {
        let mut hop = Hop::decode_length_delimited(&mut buf).expect("hop");
        // The capture's collector grouped hops by client process; forget that.
        hop.flow_id.clear();
        let at = hop.start_unix_ns + hop.duration_ns + QUIET_NS;
        items.push((at, Item::Hop(Box::new(hop))));
    }
    let procs = gunzip("cluster-capture.procs.pb.gz");
    let mut buf = &procs[..];
    while !buf.is_empty() {
        let ev = StoredEvent::decode_length_delimited(&mut buf).expect("event");
        let at = ev.event.as_ref().map_or(0, |e| e.timestamp_unix_ns);
        items.push((at, Item::Process(Box::new(ev))));
    }
    items.sort_by_key(|(at, _)| *at);
    let mut s = FlowStitcher::new(cfg, 7);
    let mut out = Vec::new();
    let mut r = Replayed {
        hops: HashMap::new(),
        flows: HashMap::new(),
        state_times: HashMap::new(),
    };
    let mut next_tick = items.first().map_or(0, |(at, _)| *at);
    let mut last = 0;
    for (at, item) in items {
        while next_tick <= at {
            s.tick(next_tick, &mut out);
            collect(&mut r, &mut out, next_tick);
            next_tick += TICK_NS;
        }
        match item {
            Item::Hop(hop) => s.on_hop(*hop, at, &mut out),
            Item::Process(ev) => {
                let event = ev.event.expect("event");
                s.on_process_event(&ev.node, "agent", &event, at, &mut out);
            }
        }
        collect(&mut r, &mut out, at);
        last = at;
    }
    // Let every flow settle or go idle.
    for i in 0..=(60_000_000_000 / TICK_NS) {
        let t = last + i * TICK_NS;
        s.tick(t, &mut out);
        collect(&mut r, &mut out, t);
    }
    r
}

fn collect(r: &mut Replayed, out: &mut Vec<Update>, at: u64) {
    for u in out.drain(..) {
        match u {
            Update::Hop(h) => {
                r.hops.insert(h.id.clone(), *h);
            }
            Update::Flow(f) => {
                r.state_times
                    .entry((f.id.clone(), f.state.clone()))
                    .or_insert(at);
                r.flows.insert(f.id.clone(), *f);
            }
        }
    }
}

impl Replayed {
    pub fn flow_hops(&self, flow_id: &str) -> Vec<&Hop> {
        let mut v: Vec<&Hop> = self
            .hops
            .values()
            .filter(|h| h.flow_id == flow_id)
            .collect();
        v.sort_by_key(|h| (h.start_unix_ns, h.id.clone()));
        v
    }

    pub fn flow_titled(&self, title: &str) -> &Flow {
        let matching: Vec<&Flow> = self.flows.values().filter(|f| f.title == title).collect();
        assert_eq!(matching.len(), 1, "flows titled {title:?}: {matching:#?}");
        matching[0]
    }

    /// The flow as `ktrail show` would print it, for failure messages.
    pub fn render(&self, flow_id: &str) -> String {
        let hops = self.flow_hops(flow_id);
        let start = hops.first().map_or(0, |h| h.start_unix_ns);
        let by_id: HashMap<&str, &Hop> = hops.iter().map(|h| (h.id.as_str(), *h)).collect();
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
}

fn comm(end: &Option<ktrail_proto::v1::HopEnd>) -> &str {
    end.as_ref().map_or("", |e| e.comm.as_str())
}

fn node(end: &Option<ktrail_proto::v1::HopEnd>) -> &str {
    end.as_ref().map_or("", |e| e.node.as_str())
}

/// Finds the one reference hop `what` among `hops`, or fails with the flow.
fn find<'a>(
    r: &Replayed,
    flow: &Flow,
    hops: &[&'a Hop],
    what: &str,
    pred: impl Fn(&Hop) -> bool,
) -> &'a Hop {
    hops.iter()
        .copied()
        .find(|h| pred(h))
        .unwrap_or_else(|| panic!("hop {what} is not in the flow:\n{}", r.render(&flow.id)))
}

/// Acceptance (issue 5): `kubectl run` yields one flow holding all 12 hops
/// of the reference flow (../shared/DESIGN.md), across both nodes, in
/// causal order, settled when the pod runs.
#[test]
fn kubectl_run_is_one_flow_with_every_reference_hop_in_causal_order() {
    let r = replay(StitchConfig::default());
    let flow = r.flow_titled("kubectl POST pods default/mynginx-trace-test");
    let hops = r.flow_hops(&flow.id);
    let pod = "/registry/pods/default/mynginx-trace-test";
    let etcd_put = |h: &Hop| {
        h.etcd
            .as_ref()
            .is_some_and(|e| e.op.starts_with("Txn put") && e.keys.iter().any(|k| k == pod))
    };
    let h1 = find(&r, flow, &hops, "1 kubectl POST pods → 201", |h| {
        comm(&h.client).starts_with("kubectl")
            && h.method == "POST"
            && h.path.starts_with("/api/v1/namespaces/default/pods")
            && h.status_code == 201
    });
    assert_eq!(flow.root_hop_id, h1.id);
    let h2 = find(&r, flow, &hops, "2 etcd Txn put", |h| {
        etcd_put(h) && h.start_unix_ns > h1.start_unix_ns
    });
    let h3 = find(&r, flow, &hops, "3 watch ADDED to the scheduler", |h| {
        h.kind == "watch-event"
            && comm(&h.client) == "kube-scheduler"
            && h.objects
                .iter()
                .any(|o| o.watch_event_type == "ADDED" && o.node_name.is_empty())
    });
    let h4 = find(&r, flow, &hops, "4 binding → 201", |h| {
        comm(&h.client) == "kube-scheduler"
            && h.path.ends_with("/mynginx-trace-test/binding")
            && h.status_code == 201
    });
    let h5 = find(&r, flow, &hops, "5 etcd put after the binding", |h| {
        etcd_put(h) && h.start_unix_ns > h4.start_unix_ns
    });
    let h6 = find(
        &r,
        flow,
        &hops,
        "6 watch event to the worker's kubelet",
        |h| {
            h.kind == "watch-event"
                && comm(&h.client) == "kubelet"
                && node(&h.client) == "k8s-worker"
                && h.objects.iter().any(|o| o.node_name == "k8s-worker")
        },
    );
    let cri = |method: &'static str| {
        move |h: &Hop| {
            h.cri.as_ref().is_some_and(|c| c.method == method) && node(&h.client) == "k8s-worker"
        }
    };
    let h7 = find(&r, flow, &hops, "7 RunPodSandbox", cri("RunPodSandbox"));
    for prog in ["runc", "pause", "bridge"] {
        find(
            &r,
            flow,
            &hops,
            "7 exec of runc, pause and the CNI plugin",
            |h| h.kind == "exec" && comm(&h.server) == prog,
        );
    }
    let h8 = find(&r, flow, &hops, "8 PullImage", cri("PullImage"));
    find(&r, flow, &hops, "8 containerd → registry", |h| {
        comm(&h.client) == "containerd" && h.path.starts_with("/v2/library/nginx")
    });
    let h9 = find(&r, flow, &hops, "9 CreateContainer", cri("CreateContainer"));
    let h9b = find(&r, flow, &hops, "9 StartContainer", cri("StartContainer"));
    let nginx = find(&r, flow, &hops, "9 nginx exec", |h| {
        h.kind == "exec" && comm(&h.server) == "nginx"
    });
    let h10 = find(&r, flow, &hops, "10 PATCH status Running", |h| {
        h.method == "PATCH"
            && h.path.ends_with("/mynginx-trace-test/status")
            && h.objects.iter().any(|o| o.phase == "Running")
    });
    find(&r, flow, &hops, "11 scheduler's event", |h| {
        comm(&h.client) == "kube-scheduler" && h.path.contains("/events")
    });
    find(&r, flow, &hops, "11 kubelet's events", |h| {
        comm(&h.client) == "kubelet" && h.path.contains("/events")
    });
    find(
        &r,
        flow,
        &hops,
        "12 watch MODIFIED to kubectl get -w",
        |h| {
            h.kind == "watch-event"
                && comm(&h.client).starts_with("kubectl")
                && h.objects.iter().any(|o| o.watch_event_type == "MODIFIED")
        },
    );
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
    let by_id: HashMap<&str, &Hop> = hops.iter().map(|h| (h.id.as_str(), *h)).collect();
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
    let settled_at = r.state_times[&(flow.id.clone(), crate::flows::SETTLED.to_string())];
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
    let r = replay(StitchConfig::default());
    let flow = r.flow_titled("kubectl POST pods default/bad");
    assert_eq!(flow.state, crate::flows::FAILED, "{}", r.render(&flow.id));
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
    let hops = r.flow_hops(&flow.id);
    find(&r, flow, &hops, "the registry's 404", |h| {
        comm(&h.client) == "containerd"
            && h.path.contains("/does-not-exist/manifests/")
            && h.status_code == 404
    });
}
