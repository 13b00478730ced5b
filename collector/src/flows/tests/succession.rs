//! Operations on one object in quick succession (what `cargo xtask soak` does): the
//! API server's etcd writes reach the stitcher after the next operation began, and must
//! still join the operation that made them, not the newest flow naming the object.

use ktrail_proto::v1::{EtcdInfo, Hop, ObjectRef};

use super::end;

use crate::flows::{FlowStitcher, StitchConfig, Update};

const MS: u64 = 1_000_000;

fn configmap() -> Vec<ObjectRef> {
    vec![ObjectRef {
        resource: "configmaps".into(),
        namespace: "default".into(),
        name: "soak-cm-1".into(),
        ..Default::default()
    }]
}

/// kubectl (pid) → kube-apiserver: METHOD on the configmap at `at`.
fn kubectl(id: &str, pid: u32, method: &str, at: u64) -> Hop {
    Hop {
        id: id.into(),
        kind: "request/response".into(),
        start_unix_ns: at,
        duration_ns: 5 * MS,
        client: end("k8s-control", pid, "kubectl"),
        server: end("k8s-control", 100, "kube-apiserver"),
        method: method.into(),
        path: "/api/v1/namespaces/default/configmaps/soak-cm-1".into(),
        status_code: 200,
        objects: configmap(),
        ..Default::default()
    }
}

/// kube-apiserver → etcd: the write of the configmap at `at`.
fn etcd_put(id: &str, at: u64) -> Hop {
    Hop {
        id: id.into(),
        kind: "request/response".into(),
        start_unix_ns: at,
        duration_ns: 2 * MS,
        client: end("k8s-control", 100, "kube-apiserver"),
        server: end("k8s-control", 200, "etcd"),
        method: "POST".into(),
        path: "/etcdserverpb.KV/Txn".into(),
        objects: configmap(),
        etcd: Some(EtcdInfo {
            op: "Txn put /registry/configmaps/default/soak-cm-1".into(),
            keys: vec!["/registry/configmaps/default/soak-cm-1".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn late_etcd_writes_join_the_operation_that_made_them() {
    let t0 = 1_800_000_000_000 * MS;
    let mut s = FlowStitcher::new(StitchConfig::default(), 1);
    let mut out = Vec::new();
    // PATCH at +0 ms, DELETE at +150 ms; the PATCH's write (at +2 ms) arrives after both.
    s.on_hop(kubectl("h-patch", 11, "PATCH", t0), t0, &mut out);
    s.on_hop(
        kubectl("h-delete", 12, "DELETE", t0 + 150 * MS),
        t0 + 160 * MS,
        &mut out,
    );
    s.on_hop(etcd_put("h-put", t0 + 2 * MS), t0 + 600 * MS, &mut out);
    // And a write after the DELETE began is the DELETE's.
    s.on_hop(
        etcd_put("h-delete-write", t0 + 152 * MS),
        t0 + 610 * MS,
        &mut out,
    );
    let flow_of = |hop_id: &str| {
        let flow_id = out
            .iter()
            .rev()
            .find_map(|u| match u {
                Update::Hop(h) if h.id == hop_id && !h.flow_id.is_empty() => {
                    Some(h.flow_id.clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{hop_id} joined no flow"));
        out.iter()
            .rev()
            .find_map(|u| match u {
                Update::Flow(f) if f.id == flow_id => Some(f.title.clone()),
                _ => None,
            })
            .expect("its flow")
    };
    assert_eq!(
        flow_of("h-patch"),
        "kubectl PATCH configmaps default/soak-cm-1"
    );
    assert_eq!(
        flow_of("h-delete"),
        "kubectl DELETE configmaps default/soak-cm-1"
    );
    assert_eq!(
        flow_of("h-put"),
        "kubectl PATCH configmaps default/soak-cm-1"
    );
    assert_eq!(
        flow_of("h-delete-write"),
        "kubectl DELETE configmaps default/soak-cm-1"
    );
}

/// kube-apiserver → etcd: the delete of the configmap at `at`.
fn etcd_delete(id: &str, at: u64) -> Hop {
    let mut h = etcd_put(id, at);
    h.etcd = Some(EtcdInfo {
        op: "Txn delete_range /registry/configmaps/default/soak-cm-1".into(),
        keys: vec!["/registry/configmaps/default/soak-cm-1".into()],
        txn_result: "succeeded".into(),
        ..Default::default()
    });
    h
}

/// The controller-manager's watch delivering DELETED at `at`.
fn deleted_event(id: &str, at: u64) -> Hop {
    let mut objects = configmap();
    objects[0].watch_event_type = "DELETED".into();
    Hop {
        id: id.into(),
        kind: "watch-event".into(),
        start_unix_ns: at,
        client: end("k8s-control", 300, "kube-controller"),
        server: end("k8s-control", 100, "kube-apiserver"),
        method: "GET".into(),
        path: "/api/v1/configmaps?watch=true".into(),
        objects,
        ..Default::default()
    }
}

#[test]
fn a_delete_settles_on_its_etcd_delete_when_the_watch_event_came_first() {
    let t0 = 1_800_000_000_000 * MS;
    let mut s = FlowStitcher::new(StitchConfig::default(), 1);
    let mut out = Vec::new();
    s.on_hop(kubectl("h-patch", 11, "PATCH", t0), t0, &mut out);
    // The DELETED event (+152 ms) is emitted before the DELETE's hop (+150 ms, answered
    // later): it joins the PATCH, the newest flow naming the object then.
    s.on_hop(
        deleted_event("h-event", t0 + 152 * MS),
        t0 + 155 * MS,
        &mut out,
    );
    s.on_hop(
        kubectl("h-delete", 12, "DELETE", t0 + 150 * MS),
        t0 + 160 * MS,
        &mut out,
    );
    s.on_hop(
        etcd_delete("h-etcd-delete", t0 + 151 * MS),
        t0 + 600 * MS,
        &mut out,
    );
    let mut at = t0 + 600 * MS;
    while at < t0 + 20_000 * MS {
        at += 100 * MS;
        s.tick(at, &mut out);
    }
    let delete = out
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Flow(f) if f.title == "kubectl DELETE configmaps default/soak-cm-1" => {
                Some(f.clone())
            }
            _ => None,
        })
        .expect("the DELETE's flow");
    assert_eq!(
        (delete.state.as_str(), delete.state_reason.as_str()),
        ("settled", "deleted")
    );
    assert!(delete.closed);
}
