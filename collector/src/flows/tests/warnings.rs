//! Warning Events on a pod's flow: a FailedMount that the kubelet posts while a
//! volume is not synced yet clears by itself (the soak saw 2 of 400 pods do it and
//! run), so it fails the flow only if nothing follows it.

use ktrail_proto::v1::{Flow, Hop, ObjectRef};

use super::end;

use crate::flows::{FlowStitcher, StitchConfig, Update};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

fn pod(phase: &str) -> ObjectRef {
    ObjectRef {
        resource: "pods".into(),
        kind: "Pod".into(),
        namespace: "default".into(),
        name: "web".into(),
        phase: phase.into(),
        ..Default::default()
    }
}

fn kubectl_run(at: u64) -> Hop {
    Hop {
        id: "h-run".into(),
        kind: "request/response".into(),
        start_unix_ns: at,
        duration_ns: 5 * MS,
        client: end("k8s-control", 11, "kubectl"),
        server: end("k8s-control", 100, "kube-apiserver"),
        method: "POST".into(),
        path: "/api/v1/namespaces/default/pods".into(),
        status_code: 201,
        objects: vec![pod("Pending")],
        ..Default::default()
    }
}

/// The kubelet on k8s-worker posts a Warning Event about the pod.
fn kubelet_warning(id: &str, reason: &str, at: u64) -> Hop {
    Hop {
        id: id.into(),
        kind: "request/response".into(),
        start_unix_ns: at,
        duration_ns: 3 * MS,
        client: end("k8s-worker", 21, "kubelet"),
        server: end("k8s-control", 100, "kube-apiserver"),
        method: "POST".into(),
        path: "/api/v1/namespaces/default/events".into(),
        status_code: 201,
        objects: vec![ObjectRef {
            resource: "events".into(),
            kind: "Event".into(),
            namespace: "default".into(),
            // `<subject>.<hex>`, as the kubelet names its Events.
            name: format!("web.18ea8be6{:08x}", at % 0xffff_ffff),
            event_type: "Warning".into(),
            reason: reason.into(),
            message: "MountVolume.SetUp failed for volume \"kube-api-access\"".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn kubelet_status(phase: &str, at: u64) -> Hop {
    Hop {
        id: "h-status".into(),
        kind: "request/response".into(),
        start_unix_ns: at,
        duration_ns: 4 * MS,
        client: end("k8s-worker", 21, "kubelet"),
        server: end("k8s-control", 100, "kube-apiserver"),
        method: "PATCH".into(),
        path: "/api/v1/namespaces/default/pods/web/status".into(),
        status_code: 200,
        objects: vec![pod(phase)],
        ..Default::default()
    }
}

fn last_flow(out: &[Update]) -> Flow {
    out.iter()
        .rev()
        .find_map(|u| match u {
            Update::Flow(f) => Some((**f).clone()),
            _ => None,
        })
        .expect("a flow update")
}

/// `kubectl run`, then the kubelet's FailedMount a second later.
fn after_a_failed_mount(cfg: StitchConfig) -> (u64, FlowStitcher, Vec<Update>) {
    let t0 = 1_800_000_000 * S;
    let mut s = FlowStitcher::new(cfg, 1);
    let mut out = Vec::new();
    s.on_hop(kubectl_run(t0), t0, &mut out);
    s.on_hop(
        kubelet_warning("h-mount", "FailedMount", t0 + S),
        t0 + S,
        &mut out,
    );
    (t0, s, out)
}

#[test]
fn a_failed_mount_that_clears_leaves_the_flow_settled_when_the_pod_runs() {
    let (t0, mut s, mut out) = after_a_failed_mount(StitchConfig::default());
    s.tick(t0 + S + 100 * MS, &mut out);
    let flow = last_flow(&out);
    assert_eq!(flow.state, "running", "a FailedMount alone: {flow:?}");
    let failure = flow
        .failure
        .expect("the warning is kept while it may matter");
    assert!(failure.message.starts_with("FailedMount: "), "{failure:?}");

    s.on_hop(kubelet_status("Running", t0 + 3 * S), t0 + 3 * S, &mut out);
    s.tick(t0 + 3 * S + 100 * MS, &mut out);
    let flow = last_flow(&out);
    assert_eq!(flow.state, "settled", "{flow:?}");
    assert_eq!(flow.state_reason, "pod default/web Running");
    assert!(flow.failure.is_none(), "the pod ran: {flow:?}");
}

#[test]
fn a_failed_mount_followed_by_nothing_fails_the_flow_when_it_goes_idle() {
    let cfg = StitchConfig::default();
    let idle = cfg.idle_ns;
    let (t0, mut s, mut out) = after_a_failed_mount(cfg);
    s.tick(t0 + S + idle + S, &mut out);
    let flow = last_flow(&out);
    assert_eq!(flow.state, "failed", "{flow:?}");
    assert_eq!(flow.state_reason, "kubelet failed");
    assert!(flow.failure.is_some_and(|f| f.component == "kubelet"));
}

#[test]
fn a_terminal_warning_after_a_failed_mount_fails_the_flow_at_once() {
    let (t0, mut s, mut out) = after_a_failed_mount(StitchConfig::default());
    s.on_hop(
        kubelet_warning("h-sandbox", "FailedCreatePodSandBox", t0 + 2 * S),
        t0 + 2 * S,
        &mut out,
    );
    s.tick(t0 + 2 * S + 100 * MS, &mut out);
    let flow = last_flow(&out);
    assert_eq!(flow.state, "failed", "{flow:?}");
    let failure = flow.failure.expect("failure");
    assert!(
        failure.message.starts_with("FailedCreatePodSandBox: "),
        "the terminal warning replaces the FailedMount: {failure:?}"
    );
}
