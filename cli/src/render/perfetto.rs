//! `ktrail show ID --format perfetto`: a flow as Chrome Trace Event Format
//! JSON, which Perfetto (ui.perfetto.dev, "Open trace file") and
//! chrome://tracing open.
//!
//! A process per node, a thread per component process (`kube-apiserver[812]`),
//! one complete event ("X") per hop on the lane of the process that served it
//! (the client's when no agent saw the server: a registry, an untraced peer),
//! and a flow arrow ("s" → "f") from each hop's parent to it. Times are
//! microseconds from the flow's start; the absolute start is in `otherData`.
//!
//! Slices of one thread must nest or follow each other, or the viewers drop
//! them. A process serving overlapping calls (kube-apiserver's concurrent
//! requests) therefore gets as many lanes as it needs: `kube-apiserver[812]
//! #2` holds what overlaps the first without nesting in it.

use std::collections::{BTreeMap, HashMap};

use ktrail_proto::v1::{event, Flow, Hop, HopEnd, HopEvents};
use serde_json::{json, Map, Value};

/// The node, component and pid a hop's slice is drawn for.
fn lane_end(hop: &Hop) -> HopEnd {
    let server = hop.server.clone().unwrap_or_default();
    if server.observed || hop.client.is_none() {
        server
    } else {
        hop.client.clone().unwrap_or_default()
    }
}

fn node_of(end: &HopEnd) -> &str {
    if !end.node.is_empty() {
        &end.node
    } else if !end.k8s_node.is_empty() {
        &end.k8s_node
    } else {
        "(unknown node)"
    }
}

fn name_of(end: &HopEnd) -> String {
    let comm = if !end.comm.is_empty() {
        end.comm.clone()
    } else if !end.pod.is_empty() {
        format!("pod {}/{}", end.namespace, end.pod)
    } else if !end.addr.is_empty() {
        format!("{}:{}", end.addr, end.port)
    } else {
        "(unknown)".to_string()
    };
    if end.pid != 0 {
        format!("{comm}[{}]", end.pid)
    } else {
        comm
    }
}

/// Sub-lanes of one process: each a stack of the end times of the slices
/// still open at the last placed start.
#[derive(Default)]
struct Lanes {
    stacks: Vec<Vec<u64>>,
}

impl Lanes {
    /// The first sub-lane where [start, end] nests in or follows what is there.
    fn place(&mut self, start: u64, end: u64) -> usize {
        for (i, stack) in self.stacks.iter_mut().enumerate() {
            while stack.last().is_some_and(|&e| e <= start) {
                stack.pop();
            }
            if stack.last().is_none_or(|&e| e >= end) {
                stack.push(end);
                return i;
            }
        }
        self.stacks.push(vec![end]);
        self.stacks.len() - 1
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn end_args(prefix: &str, end: Option<&HopEnd>, args: &mut Map<String, Value>) {
    let Some(e) = end else { return };
    let mut put = |k: &str, v: Value| {
        args.insert(format!("{prefix}.{k}"), v);
    };
    put("node", json!(node_of(e)));
    put("comm", json!(e.comm));
    put("pid", json!(e.pid));
    if !e.addr.is_empty() {
        put("addr", json!(format!("{}:{}", e.addr, e.port)));
    }
    if !e.pod.is_empty() {
        put("pod", json!(format!("{}/{}", e.namespace, e.pod)));
    }
}

fn hop_args(hop: &Hop) -> Value {
    let mut a = Map::new();
    a.insert("hop_id".into(), json!(hop.id));
    a.insert("kind".into(), json!(hop.kind));
    a.insert("summary".into(), json!(hop.summary));
    let mut put_str = |k: &str, v: &str| {
        if !v.is_empty() {
            a.insert(k.into(), json!(v));
        }
    };
    put_str("method", &hop.method);
    put_str("path", &hop.path);
    put_str("app_protocol", &hop.app_protocol);
    put_str("grpc", &format!("{}/{}", hop.grpc_service, hop.grpc_method));
    put_str("status_message", &hop.status_message);
    put_str("parent_id", &hop.parent_id);
    put_str("joined_by", &hop.joined_by);
    if hop.grpc_service.is_empty() {
        a.remove("grpc");
    }
    if hop.status_code != 0 {
        a.insert("status".into(), json!(hop.status_code));
    }
    if hop.has_grpc_status {
        a.insert("grpc_status".into(), json!(hop.grpc_status));
    }
    if let Some(etcd) = &hop.etcd {
        a.insert("etcd.op".into(), json!(etcd.op));
        a.insert("etcd.keys".into(), json!(etcd.keys));
    }
    if let Some(cri) = &hop.cri {
        a.insert("cri.method".into(), json!(cri.method));
        if !cri.pod_name.is_empty() {
            a.insert(
                "pod".into(),
                json!(format!("{}/{}", cri.pod_namespace, cri.pod_name)),
            );
        }
        if !cri.image.is_empty() {
            a.insert("cri.image".into(), json!(cri.image));
        }
    }
    if !hop.objects.is_empty() {
        let objects: Vec<String> = hop
            .objects
            .iter()
            .map(|o| format!("{} {}/{}", o.resource, o.namespace, o.name))
            .collect();
        a.insert("objects".into(), json!(objects));
    }
    end_args("client", hop.client.as_ref(), &mut a);
    end_args("server", hop.server.as_ref(), &mut a);
    Value::Object(a)
}

/// Whether the hop failed: an HTTP error status or a non-OK gRPC status.
pub fn failed(hop: &Hop) -> bool {
    hop.status_code >= 400 || (hop.has_grpc_status && hop.grpc_status != 0)
}

/// The flow as a Chrome Trace Event Format object (`{"traceEvents": […]}`),
/// with the syscalls behind its hops (`ktrail show --syscalls`; empty
/// otherwise) as instant events on their processes' threads.
pub fn render(flow: &Flow, hops: &[Hop], hop_events: &[HopEvents]) -> Value {
    let start = hops
        .iter()
        .map(|h| h.start_unix_ns)
        .min()
        .unwrap_or(flow.start_unix_ns);
    let mut order: Vec<&Hop> = hops.iter().collect();
    // Longer first at equal starts, so the outer slice is placed first.
    order.sort_by(|a, b| {
        (a.start_unix_ns, std::cmp::Reverse(a.duration_ns), &a.id).cmp(&(
            b.start_unix_ns,
            std::cmp::Reverse(b.duration_ns),
            &b.id,
        ))
    });

    // Node → pid (1-based, sorted by name); (node, process) → its sub-lanes.
    let mut nodes: BTreeMap<String, u32> = BTreeMap::new();
    for h in &order {
        nodes.entry(node_of(&lane_end(h)).to_string()).or_insert(0);
    }
    for (i, pid) in nodes.values_mut().enumerate() {
        *pid = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    let mut lanes: HashMap<(String, String), Lanes> = HashMap::new();
    // (node, process, sub-lane) → tid, in order of first use.
    let mut tids: HashMap<(String, String, usize), u32> = HashMap::new();
    let mut threads: Vec<(u32, u32, String)> = Vec::new();
    let mut placed: HashMap<&str, (u32, u32, f64, f64)> = HashMap::new();
    let mut events = Vec::new();

    for h in &order {
        let end = lane_end(h);
        let node = node_of(&end).to_string();
        let name = name_of(&end);
        let pid = nodes[&node];
        let sub = lanes
            .entry((node.clone(), name.clone()))
            .or_default()
            .place(
                h.start_unix_ns,
                h.start_unix_ns.saturating_add(h.duration_ns),
            );
        let next_tid = u32::try_from(tids.len() + 1).unwrap_or(u32::MAX);
        let tid = *tids
            .entry((node.clone(), name.clone(), sub))
            .or_insert_with(|| {
                let label = if sub == 0 {
                    name.clone()
                } else {
                    format!("{name} #{}", sub + 1)
                };
                threads.push((pid, next_tid, label));
                next_tid
            });
        let ts = us(h.start_unix_ns - start);
        let dur = us(h.duration_ns);
        placed.insert(&h.id, (pid, tid, ts, dur));
        let mut ev = json!({
            "ph": "X",
            "name": if h.summary.is_empty() { h.kind.as_str() } else { h.summary.as_str() },
            "cat": h.kind,
            "pid": pid,
            "tid": tid,
            "ts": ts,
            "dur": dur,
            "args": hop_args(h),
        });
        if failed(h) {
            ev["cname"] = json!("terrible");
        }
        events.push(ev);
    }

    // Parent → child arrows, numbered in start order of the children.
    let mut arrow = 0u64;
    for h in &order {
        let (Some(&(ppid, ptid, pts, _)), Some(&(cpid, ctid, cts, _))) =
            (placed.get(h.parent_id.as_str()), placed.get(h.id.as_str()))
        else {
            continue;
        };
        arrow += 1;
        events.push(json!({
            "ph": "s", "id": arrow, "name": "caused", "cat": "parent",
            "pid": ppid, "tid": ptid, "ts": pts,
        }));
        events.push(json!({
            "ph": "f", "bp": "e", "id": arrow, "name": "caused", "cat": "parent",
            "pid": cpid, "tid": ctid, "ts": cts,
        }));
    }

    // Syscalls: an instant on the first lane of the process that made it.
    for he in hop_events {
        for te in &he.events {
            let Some(ev) = &te.event else { continue };
            let Some(event::Body::Syscall(sc)) = &ev.body else {
                continue;
            };
            let node = if te.node.is_empty() {
                "(unknown node)".to_string()
            } else {
                te.node.clone()
            };
            let next_pid = u32::try_from(nodes.len() + 1).unwrap_or(u32::MAX);
            let pid = *nodes.entry(node.clone()).or_insert(next_pid);
            let name = format!("{}[{}]", ev.comm, ev.pid);
            let next_tid = u32::try_from(tids.len() + 1).unwrap_or(u32::MAX);
            let tid = *tids.entry((node, name.clone(), 0)).or_insert_with(|| {
                threads.push((pid, next_tid, name));
                next_tid
            });
            events.push(json!({
                "ph": "i", "s": "t", "name": sc.name, "cat": "syscall",
                "pid": pid, "tid": tid,
                "ts": us(ev.timestamp_unix_ns.saturating_sub(start)),
                "args": {
                    "hop_id": he.hop_id, "fd": sc.fd, "ret": sc.ret, "errno": sc.errno,
                    "duration_ns": sc.duration_ns, "bytes_captured": sc.data.len(),
                },
            }));
        }
    }

    let mut meta = Vec::new();
    for (node, pid) in &nodes {
        meta.push(
            json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                         "args": {"name": node}}),
        );
        meta.push(
            json!({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                         "args": {"sort_index": pid}}),
        );
    }
    for (pid, tid, label) in &threads {
        meta.push(
            json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                         "args": {"name": label}}),
        );
        meta.push(
            json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid,
                         "args": {"sort_index": tid}}),
        );
    }
    meta.extend(events);

    let failure = flow.failure.as_ref().map(|f| {
        json!({"hop_id": f.hop_id, "node": f.node, "component": f.component, "message": f.message})
    });
    json!({
        "traceEvents": meta,
        "displayTimeUnit": "ms",
        "otherData": {
            "flow_id": flow.id,
            "title": flow.title,
            "state": flow.state,
            "state_reason": flow.state_reason,
            "start_unix_ns": start.to_string(),
            "hops": hops.len(),
            "failure": failure,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ktrail_collector::flows::StitchConfig;
    use ktrail_collector::replay::{self, KUBECTL_RUN, KUBECTL_RUN_BAD};

    use super::*;

    fn captured(title: &str) -> (Flow, Vec<Hop>) {
        let r = replay::replay(&replay::cluster_capture(), StitchConfig::default())
            .expect("replay the cluster capture");
        r.flow_titled(title).expect("the flow")
    }

    fn of_phase<'a>(v: &'a Value, ph: &str) -> Vec<&'a Value> {
        v["traceEvents"]
            .as_array()
            .expect("traceEvents")
            .iter()
            .filter(|e| e["ph"] == ph)
            .collect()
    }

    #[test]
    fn the_kubectl_run_flow_is_one_nested_slice_per_hop() {
        let (flow, hops) = captured(KUBECTL_RUN);
        let v = render(&flow, &hops, &[]);
        // Valid JSON that parses back to the same value.
        let text = serde_json::to_string(&v).expect("serialize");
        let back: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, v);

        let slices = of_phase(&v, "X");
        assert_eq!(slices.len(), hops.len());
        let ids: std::collections::HashSet<&str> = slices
            .iter()
            .map(|e| e["args"]["hop_id"].as_str().expect("hop_id"))
            .collect();
        assert_eq!(ids.len(), hops.len(), "every hop once");

        // A process per node, named, and both nodes of the flow present.
        let names: Vec<&str> = of_phase(&v, "M")
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| e["args"]["name"].as_str().expect("name"))
            .collect();
        assert!(names.contains(&"k8s-control"), "{names:?}");
        assert!(names.contains(&"k8s-worker"), "{names:?}");

        // Nested by time: within each thread, every slice nests in or
        // follows the ones before it.
        let mut by_thread: HashMap<(u64, u64), Vec<(f64, f64)>> = HashMap::new();
        for e in &slices {
            let key = (
                e["pid"].as_u64().expect("pid"),
                e["tid"].as_u64().expect("tid"),
            );
            let ts = e["ts"].as_f64().expect("ts");
            let dur = e["dur"].as_f64().expect("dur");
            assert!(ts >= 0.0 && dur >= 0.0);
            by_thread.entry(key).or_default().push((ts, ts + dur));
        }
        for (thread, mut spans) in by_thread {
            spans.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
            let mut open: Vec<f64> = Vec::new();
            for (s, e) in spans {
                while open.last().is_some_and(|&end| end <= s) {
                    open.pop();
                }
                if let Some(&outer) = open.last() {
                    assert!(
                        e <= outer,
                        "thread {thread:?}: [{s}, {e}] overlaps a slice ending {outer}"
                    );
                }
                open.push(e);
            }
        }

        // The root POST comes first and carries its request.
        let root = slices
            .iter()
            .find(|e| e["args"]["hop_id"] == flow.root_hop_id.as_str())
            .expect("root slice");
        // Times are µs from the earliest hop (a hop may start before the root:
        // nodes' clocks differ).
        let first = hops.iter().map(|h| h.start_unix_ns).min().expect("hops");
        let root_hop = hops
            .iter()
            .find(|h| h.id == flow.root_hop_id)
            .expect("root hop");
        let want = (root_hop.start_unix_ns - first) as f64 / 1000.0;
        assert_eq!(root["ts"].as_f64(), Some(want));
        assert_eq!(root["args"]["method"], "POST");
        assert_eq!(root["args"]["status"], 201);
        // An etcd put and a CRI call with the pod.
        assert!(slices
            .iter()
            .any(|e| e["args"]["etcd.keys"].as_array().is_some_and(|k| k
                .iter()
                .any(|k| k == "/registry/pods/default/mynginx-trace-test"))));
        assert!(slices
            .iter()
            .any(|e| e["args"]["cri.method"] == "RunPodSandbox"
                && e["args"]["pod"] == "default/mynginx-trace-test"));

        // One arrow pair per hop whose parent is in the flow, each starting
        // at its parent's slice and ending at its child's.
        let with_parent = hops
            .iter()
            .filter(|h| hops.iter().any(|p| p.id == h.parent_id))
            .count();
        assert!(with_parent > 0);
        let starts = of_phase(&v, "s");
        let ends = of_phase(&v, "f");
        assert_eq!(starts.len(), with_parent);
        assert_eq!(ends.len(), with_parent);
        for f in &ends {
            assert_eq!(f["bp"], "e");
        }
    }

    #[test]
    fn the_failed_pull_is_marked_and_the_failure_kept() {
        let (flow, hops) = captured(KUBECTL_RUN_BAD);
        let v = render(&flow, &hops, &[]);
        assert_eq!(v["otherData"]["state"], "failed");
        assert_eq!(v["otherData"]["failure"]["component"], "containerd");
        let marked: Vec<&Value> = of_phase(&v, "X")
            .into_iter()
            .filter(|e| e["cname"] == "terrible")
            .collect();
        assert!(
            marked.iter().any(|e| e["args"]["status"] == 404
                && e["args"]["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("does-not-exist"))),
            "{marked:#?}"
        );
    }

    #[test]
    fn syscalls_are_instants_on_their_process_thread() {
        let (flow, hops) = captured(KUBECTL_RUN);
        let root = hops
            .iter()
            .find(|h| h.id == flow.root_hop_id)
            .expect("root");
        let client = root.client.clone().expect("client");
        let write = ktrail_proto::v1::Event {
            timestamp_unix_ns: root.start_unix_ns + 1000,
            pid: client.pid,
            tid: client.pid,
            comm: client.comm.clone(),
            body: Some(event::Body::Syscall(ktrail_proto::v1::SyscallEvent {
                name: "write".into(),
                fd: 3,
                ret: 1400,
                ..Default::default()
            })),
            ..Default::default()
        };
        let events = [HopEvents {
            hop_id: root.id.clone(),
            events: vec![ktrail_proto::v1::TracedEvent {
                node: client.node.clone(),
                event: Some(write),
            }],
        }];
        let v = render(&flow, &hops, &events);
        let instants = of_phase(&v, "i");
        assert_eq!(instants.len(), 1);
        let i = instants[0];
        assert_eq!(i["name"], "write");
        assert_eq!(i["args"]["ret"], 1400);
        let thread = of_phase(&v, "M")
            .into_iter()
            .find(|m| m["name"] == "thread_name" && m["pid"] == i["pid"] && m["tid"] == i["tid"])
            .expect("the syscall's thread is named");
        assert_eq!(
            thread["args"]["name"],
            format!("{}[{}]", client.comm, client.pid).as_str()
        );
        // The slices are unchanged.
        assert_eq!(of_phase(&v, "X").len(), hops.len());
    }

    #[test]
    fn overlapping_calls_of_one_process_get_separate_lanes() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.place(0, 100), 0);
        assert_eq!(lanes.place(10, 20), 0, "nests");
        assert_eq!(lanes.place(50, 150), 1, "overlaps without nesting");
        assert_eq!(lanes.place(150, 160), 0, "after both");
        assert_eq!(lanes.place(155, 158), 0, "nests in the last");
    }
}
