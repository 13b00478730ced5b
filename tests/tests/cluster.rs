//! The local two-node Kubernetes cluster (`cargo xtask cluster`, cluster/*.sh): brings it up
//! from nothing, checks it works as a cluster, and checks `down` removes everything.
//!
//! Part of `cargo xtask test` (it passed twice in a row from `down` before it was). On a
//! fresh machine `up` first builds Kubernetes, etcd, the registry and crane (about 8 minutes
//! on 2 cores; cached in /var/cache/ktrail after that); warm, the whole test takes about
//! 30 s. It holds /run/lock/ktrail-cluster.lock throughout, so concurrent runs (and manual
//! `cargo xtask cluster up/down`) wait for each other. Alone, as root:
//!
//!     cargo test -p ktrail-tests --test cluster -- --nocapture

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ktrail_tests::{skip_unless_root, wait_for, workspace_root, Check, ClusterLock};

const POD: &str = "mynginx-trace-test";
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn script(name: &str) -> PathBuf {
    workspace_root().join("cluster").join(name)
}

fn run_script(name: &str) -> bool {
    let start = Instant::now();
    let status = Command::new("bash")
        .arg(script(name))
        .stdin(Stdio::null())
        .status()
        .expect("run bash");
    eprintln!(
        "[cluster test] {name}: {status} in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    status.success()
}

/// Takes the cluster down when the test ends, passing or failing.
struct Down;
impl Drop for Down {
    fn drop(&mut self) {
        if std::env::var_os("KTRAIL_CLUSTER_KEEP").is_none() {
            run_script("down.sh");
        }
    }
}

fn out(cmd: Command) -> Output {
    ktrail_tests::kubectl::run_step(cmd, STEP_TIMEOUT)
}

fn kubectl(args: &[&str]) -> Output {
    ktrail_tests::kubectl::kubectl(args, STEP_TIMEOUT)
}

/// kubectl that must succeed; returns stdout.
fn kubectl_ok(args: &[&str]) -> String {
    ktrail_tests::kubectl::kubectl_ok(args, STEP_TIMEOUT)
}

/// A command run in a node's network namespace (curl from a "node"), entered through the
/// cluster's own handle: the two-node tests may hold namespaces of the same names.
fn in_node(node: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/ktrail-cluster/{node}.net"))
        .arg("--")
        .args(args);
    out(cmd)
}

/// The inode of a network namespace file (its identity).
fn netns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn wait_kubectl(what: &str, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    wait_for(what, STEP_TIMEOUT, || {
        let o = kubectl(args);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.success() && done(&text) {
            Ok(Check::Done(text))
        } else {
            Ok(Check::NotYet(format!(
                "{text}{}",
                String::from_utf8_lossy(&o.stderr)
            )))
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn nothing_left(node_netns: &[(String, u64)]) -> Vec<String> {
    let mut left = Vec::new();
    for (name, inode) in node_netns {
        if netns_inode(&format!("/run/netns/{name}")) == Some(*inode) {
            left.push(format!("netns {name}"));
        }
    }
    let link = Command::new("ip")
        .args(["link", "show", "ktrail-br0"])
        .output()
        .expect("ip link");
    if link.status.success() {
        left.push("bridge ktrail-br0".into());
    }
    let rules = Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .expect("iptables");
    if String::from_utf8_lossy(&rules.stdout).contains("ktrail-cluster") {
        left.push("iptables FORWARD rules".into());
    }
    for d in [
        "/sys/fs/cgroup/pids/ktrail",
        "/sys/fs/cgroup/memory/ktrail",
        "/run/ktrail-cluster",
        "/var/lib/ktrail-cluster",
    ] {
        if std::path::Path::new(d).exists() {
            left.push(d.into());
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains("ktrail-cluster") {
        left.push("mounts of ktrail-cluster".into());
    }
    // Processes of the cluster's binaries (by executable, so other engineers' stand-ins named
    // kube-apiserver do not count); zombies hold nothing and wait only for their reaper.
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        let exe = exe.to_string_lossy().into_owned();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie
            && (exe.starts_with("/var/cache/ktrail/")
                || exe.starts_with("/usr/bin/containerd")
                || ["/usr/sbin/runc", "/pause", "/usr/sbin/nginx"].contains(&exe.as_str()))
        {
            left.push(format!(
                "process {} ({exe})",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    left
}

#[test]
fn cluster_up_works_and_down_cleans_up() {
    skip_unless_root();
    let _lock = ClusterLock::take();
    assert!(run_script("down.sh"), "initial down failed");
    let down = Down;

    // up.sh bounds each of its waits itself and names the component that failed.
    assert!(
        run_script("up.sh"),
        "cluster up failed (see the message above)"
    );
    assert!(
        run_script("status.sh"),
        "cluster status is not healthy right after up"
    );
    let node_netns: Vec<(String, u64)> = ["k8s-control", "k8s-worker"]
        .iter()
        .map(|n| {
            let inode = netns_inode(&format!("/run/ktrail-cluster/{n}.net"))
                .unwrap_or_else(|| panic!("no netns handle for {n}"));
            (n.to_string(), inode)
        })
        .collect();

    // Both nodes Ready; the control-plane node carries kubeadm's taint and label.
    let nodes = kubectl_ok(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"]);
    for n in ["k8s-control", "k8s-worker"] {
        assert!(
            nodes.lines().any(|l| l == format!("{n} True")),
            "node {n} not Ready:\n{nodes}"
        );
    }
    let taints = kubectl_ok(&[
        "get",
        "node",
        "k8s-control",
        "-o",
        "jsonpath={.spec.taints}",
    ]);
    assert!(
        taints.contains("node-role.kubernetes.io/control-plane") && taints.contains("NoSchedule"),
        "control-plane taint missing: {taints}"
    );
    let labels = kubectl_ok(&[
        "get",
        "node",
        "k8s-control",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("node-role.kubernetes.io/control-plane"),
        "label missing: {labels}"
    );

    // The reference operation: kubectl run X --image=nginx → Running on k8s-worker with an IP.
    kubectl_ok(&["run", POD, "--image=nginx"]);
    let pod = wait_kubectl(
        "mynginx-trace-test Running",
        &[
            "get",
            "pod",
            POD,
            "-o",
            "jsonpath={.status.phase} {.spec.nodeName} {.status.podIP}",
        ],
        |t| t.starts_with("Running ") && t.split_whitespace().count() == 3,
    );
    let fields: Vec<&str> = pod.split_whitespace().collect();
    assert_eq!(fields[1], "k8s-worker", "pod placed on {}", fields[1]);
    let pod_ip = fields[2].to_string();
    assert!(
        pod_ip.starts_with("10.244.1."),
        "pod IP {pod_ip} not in k8s-worker's pod CIDR"
    );
    let image = kubectl_ok(&[
        "get",
        "pod",
        POD,
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert!(
        image.contains("docker.io/library/nginx@sha256:"),
        "imageID {image}"
    );

    // The image was pulled through the registry on k8s-control.
    let registry_log = std::fs::read_to_string("/var/log/ktrail-cluster/k8s-control/registry.log")
        .unwrap_or_default();
    assert!(
        registry_log.contains("/v2/library/nginx/manifests/latest"),
        "registry log shows no pull of library/nginx"
    );

    // nginx serves on port 80, reached from the other node (pod CIDR routing).
    let page = in_node(
        "k8s-control",
        &[
            "curl",
            "-sf",
            "--max-time",
            "10",
            &format!("http://{pod_ip}/"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("Welcome to nginx"),
        "curl http://{pod_ip}/ from k8s-control: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    // kubectl logs (nginx's access log on stdout) and kubectl exec.
    let logs = wait_kubectl("nginx access log in kubectl logs", &["logs", POD], |t| {
        t.contains("GET / HTTP/1.1")
    });
    assert!(logs.contains("GET / HTTP/1.1"));
    let hostname = kubectl_ok(&["exec", POD, "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname.trim(), POD, "kubectl exec output");
    kubectl_ok(&["delete", "pod", POD, "--wait=true", "--timeout=120s"]);
    let gone = kubectl(&["get", "pod", POD]);
    assert!(!gone.status.success(), "pod still there after delete");

    // A 2-replica Deployment becomes available, and a Service reaches it from the other node.
    kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    kubectl_ok(&["expose", "deployment", "web", "--port=80"]);
    let cluster_ip = kubectl_ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(!cluster_ip.is_empty(), "service web has no clusterIP");
    wait_for("service web answers from k8s-control", STEP_TIMEOUT, || {
        let o = in_node(
            "k8s-control",
            &[
                "curl",
                "-sf",
                "--max-time",
                "5",
                &format!("http://{cluster_ip}/"),
            ],
        );
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        Ok(if body.contains("Welcome to nginx") {
            Check::Done(())
        } else {
            Check::NotYet(String::from_utf8_lossy(&o.stderr).into_owned())
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    kubectl_ok(&["delete", "service", "web"]);
    kubectl_ok(&["delete", "deployment", "web"]);

    // down removes everything up made.
    drop(down);
    let left = nothing_left(&node_netns);
    assert!(left.is_empty(), "left after down: {left:?}");
}
