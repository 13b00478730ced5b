//! Acceptance of issue 5 on the local Kubernetes cluster: with agents on both nodes and a
//! collector, `kubectl run` yields one flow with every hop of the reference flow
//! (../shared/DESIGN.md) in causal order across both nodes, settled within 2 s of the pod
//! running; `kubectl create deployment` yields one flow with the controller-manager's
//! ReplicaSet and both pods' node-side hops; `kubectl run bad --image=does-not-exist` ends
//! at the failed pull with the runtime's and the registry's errors; a pod asking for more
//! CPU than any node has fails at the scheduler. The worker's clock runs 250 ms ahead
//! throughout (its agent's --clock-offset-ms), so the causal order is checked on the
//! collector's corrected clock.
//!
//! `cluster/trace.sh start` takes the cluster down and up again with the agents attached
//! from the nodes' first process (see there why). Holds the cluster lock throughout; the
//! cluster stays up afterwards (untraced). Alone, as root:
//!
//!     cargo test -p ktrail-tests --test flows -- --nocapture

use std::process::{Command, Stdio};
use std::time::Duration;

use ktrail_tests::kubectl::KUBECONFIG;
use ktrail_tests::reference_flow::{self, cri, has, summaries};
use ktrail_tests::traced::{kubectl_control_ok, s, Traced, CONTROL_NET};
use ktrail_tests::{skip_unless_root, target_dir, ChildGuard, ClusterLock};
use serde_json::Value;

const STEP: Duration = Duration::from_secs(180);

fn start() -> Traced {
    let state = target_dir().join("test-output").join("flows");
    // The worker's clock runs 250 ms ahead: flows must still come out in causal
    // order on one clock (the collector's correction, collector/src/node_clocks.rs).
    Traced::start(&state, "--clock-offset-ms 250").unwrap_or_else(|e| panic!("{e:#}"))
}

/// kubectl in k8s-control (where its agent traces it), which must succeed.
fn kubectl(args: &[&str]) -> String {
    kubectl_control_ok(args, STEP).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The one flow titled `title`, once it is in `state` and closed (its last version:
/// late hops, such as the response that said Running, have joined).
fn finished_flow(traced: &Traced, title: &str, state: &str) -> Value {
    traced
        .flow(title, state, STEP)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn flow_hops(traced: &Traced, flow: &Value) -> Vec<Value> {
    traced.hops(flow).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn kubectl_operations_become_flows_on_the_local_cluster() {
    skip_unless_root();
    let _lock = ClusterLock::take();
    let traced = start();
    // Hop 12's watcher.
    let mut getw = Command::new("nsenter");
    getw.arg(CONTROL_NET)
        .args([
            "--",
            "kubectl",
            "--kubeconfig",
            KUBECONFIG,
            "get",
            "pods",
            "-w",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _getw = ChildGuard::spawn("kubectl-get-w", getw, traced.state()).expect("kubectl get -w");
    std::thread::sleep(Duration::from_secs(2));

    // 1. kubectl run: one flow, the 12 reference hops, causal order, settled in time.
    kubectl(&["run", "mynginx-trace-test", "--image=nginx"]);
    kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/mynginx-trace-test",
        "--timeout=120s",
    ]);
    let flow = finished_flow(&traced, reference_flow::TITLE, "settled");
    let hops = flow_hops(&traced, &flow);
    reference_flow::check(&flow, &hops);
    let status = traced.status().unwrap_or_else(|e| panic!("{e:#}"));
    for a in status["agents"].as_array().into_iter().flatten() {
        eprintln!(
            "[flows] clock correction of {}: {:.3} ms",
            a["node"],
            a["clock_correction_ns"].as_i64().unwrap_or(0) as f64 / 1e6
        );
    }

    // 2. A Deployment: the controller-manager's ReplicaSet and Pods, both pods' CRI calls.
    kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let flow = finished_flow(&traced, "kubectl POST deployments default/web", "settled");
    let hops = flow_hops(&traced, &flow);
    has(
        &hops,
        "the ReplicaSet created by the controller-manager",
        |h| {
            s(h, &["client", "comm"]).starts_with("kube-controller")
                && s(h, &["method"]) == "POST"
                && s(h, &["path"]).ends_with("/replicasets")
        },
    );
    let pods_created = hops
        .iter()
        .filter(|h| {
            s(h, &["client", "comm"]).starts_with("kube-controller")
                && s(h, &["method"]) == "POST"
                && s(h, &["path"]).ends_with("/pods")
                && h["status_code"] == 201
        })
        .count();
    assert_eq!(pods_created, 2, "two pods created:\n{}", summaries(&hops));
    let sandboxes: std::collections::HashSet<&str> = hops
        .iter()
        .filter(|h| cri(h, "RunPodSandbox"))
        .map(|h| s(h, &["cri", "pod_name"]))
        .collect();
    assert_eq!(
        sandboxes.len(),
        2,
        "both pods' sandboxes:\n{}",
        summaries(&hops)
    );
    assert_eq!(hops.iter().filter(|h| cri(h, "StartContainer")).count(), 2);

    // 3. A bad image: the flow fails at the pull, naming containerd and the registry's 404.
    kubectl(&["run", "bad", "--image=does-not-exist"]);
    let flow = finished_flow(&traced, "kubectl POST pods default/bad", "failed");
    assert_eq!(flow["failure"]["component"], "containerd");
    let message = s(&flow, &["failure", "message"]);
    assert!(
        message.starts_with("PullImage: ") && message.contains("does-not-exist"),
        "{message}"
    );
    let hops = flow_hops(&traced, &flow);
    has(&hops, "the registry's 404", |h| {
        s(h, &["client", "comm"]) == "containerd"
            && s(h, &["path"]).contains("/does-not-exist/")
            && h["status_code"] == 404
    });

    // 4. A pod no node can take: the flow fails at the scheduler, with its reason.
    kubectl(&[
        "run",
        "huge",
        "--image=nginx",
        "--overrides",
        r#"{"spec":{"containers":[{"name":"huge","image":"nginx","resources":{"requests":{"cpu":"1000"}}}]}}"#,
    ]);
    let flow = finished_flow(&traced, "kubectl POST pods default/huge", "failed");
    assert_eq!(flow["failure"]["component"], "kube-scheduler", "{flow}");
    let message = s(&flow, &["failure", "message"]);
    assert!(
        message.starts_with("FailedScheduling: ") && message.contains("Insufficient cpu"),
        "{message}"
    );

    for what in [
        "pod/mynginx-trace-test",
        "pod/bad",
        "pod/huge",
        "deployment/web",
    ] {
        kubectl(&["delete", what, "--wait=false"]);
    }
}
