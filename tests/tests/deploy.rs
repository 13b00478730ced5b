//! ktrail deployed as users deploy it (issue 6): `kubectl apply -k deploy/` on the local
//! cluster puts an agent on both nodes and the collector on k8s-control; `ktrail watch`
//! through the collector's Service, over mutual TLS, shows the flow of
//! `kubectl run mynginx-trace-test --image=nginx` with the same hops as agents started
//! before the cluster (the reference flow, checked by tests/src/reference_flow.rs as for
//! tests/tests/flows.rs), the nginx pod's end labelled with its pod from the collector's
//! watch of the API server; `kubectl delete -k deploy/` leaves no process, no pinned map,
//! no BPF program or link, no uprobe behind.
//!
//! Holds /run/lock/ktrail-cluster.lock throughout; brings the cluster up if it is not
//! (and then down again at the end), else leaves it as it was. Builds the images with
//! `cargo xtask image --debug` (the debug binaries `cargo xtask test` has built) and the
//! certificates with `cargo xtask certs` (deploy/certs, kept). Alone, as root:
//!
//!     cargo test -p ktrail-tests --test deploy -- --nocapture

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ktrail_tests::{
    cargo, run_with_timeout, skip_unless_root, wait_for, workspace_bin, workspace_root, Check,
    ChildGuard,
};
use serde_json::Value;

use ktrail_tests::json::output_json_lines;
use ktrail_tests::kubectl::KUBECONFIG;
use ktrail_tests::reference_flow::{self, POD};
const NS: &str = "ktrail-system";
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

fn log(msg: &str) {
    eprintln!("[deploy test] {msg}");
}

/// The cluster lock, as tests/tests/cluster.rs takes it (the scripts see
/// KTRAIL_CLUSTER_LOCKED and do not lock again).
struct ClusterLock {
    _file: std::fs::File,
}
impl ClusterLock {
    fn take() -> Self {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all("/run/lock").expect("create /run/lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/ktrail-cluster.lock")
            .expect("open /run/lock/ktrail-cluster.lock");
        log("taking /run/lock/ktrail-cluster.lock");
        // SAFETY: flock on a file descriptor we own; blocks until the lock is free.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        std::env::set_var("KTRAIL_CLUSTER_LOCKED", "1");
        ClusterLock { _file: file }
    }
}

fn script(name: &str) -> bool {
    let status = Command::new("bash")
        .arg(workspace_root().join("cluster").join(name))
        .stdin(Stdio::null())
        .status()
        .expect("run bash");
    log(&format!("cluster/{name}: {status}"));
    status.success()
}

/// At the end, passing or failing: the deployment and the pod go; the cluster goes
/// down only if this test brought it up.
struct Cleanup {
    cluster_was_up: bool,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "pod", POD, "--ignore-not-found", "--wait=false"]);
        let _ = kubectl(&["delete", "-k", &deploy_dir(), "--ignore-not-found"]);
        if !self.cluster_was_up {
            script("down.sh");
        }
    }
}

fn deploy_dir() -> String {
    workspace_root()
        .join("deploy")
        .to_string_lossy()
        .into_owned()
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

fn xtask(args: &[&str]) {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root())
        .args(["xtask"])
        .args(args)
        .stdin(Stdio::null());
    let start = Instant::now();
    let status = cmd.status().expect("run cargo xtask");
    log(&format!(
        "cargo xtask {}: {status} in {:.0}s",
        args.join(" "),
        start.elapsed().as_secs_f64()
    ));
    assert!(status.success(), "cargo xtask {args:?} failed");
}

fn cluster_ready() -> bool {
    let o = kubectl(&["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"]);
    let text = String::from_utf8_lossy(&o.stdout);
    o.status.success()
        && ["k8s-control", "k8s-worker"]
            .iter()
            .all(|n| text.lines().any(|l| l == format!("{n} True")))
}

fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    wait_for(what, STEP_TIMEOUT, || {
        Ok(match probe() {
            Ok(v) => Check::Done(v),
            Err(state) => Check::NotYet(state),
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// What the kernel and /proc hold that an agent could leave behind.
#[derive(Debug, Default)]
struct Traces {
    prog_ids: BTreeSet<u64>,
    link_ids: BTreeSet<u64>,
    pinned: BTreeSet<String>,
    uprobe_events: BTreeSet<String>,
}

/// Ids of the BPF programs or links loaded now.
fn bpftool_ids(what: &str) -> Option<BTreeSet<u64>> {
    let o = Command::new("bpftool")
        .args([what, "show", "-j"])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect(),
    )
}

fn bpftool_show(what: &str, id: u64) -> String {
    Command::new("bpftool")
        .args([what, "show", "id", &id.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn traces() -> Traces {
    let pinned = walk("/sys/fs/bpf");
    let uprobe_events = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events")
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Traces {
        prog_ids: bpftool_ids("prog").unwrap_or_default(),
        link_ids: bpftool_ids("link").unwrap_or_default(),
        pinned,
        uprobe_events,
    }
}

fn walk(dir: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.insert(path.to_string_lossy().into_owned());
        }
    }
    found
}

/// Pids of ktrail-agent processes outside pods: other engineers' hand-started agents
/// and tests, whose programs are not ours to count.
fn other_agents() -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if comm.trim() == "ktrail-agent" && !cgroup.contains("kubepods") {
            found.insert(pid);
        }
    }
    found
}

/// Pids of ktrail processes in pods (kubepods cgroups): ours, not hand-started ones.
fn pod_processes() -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !(comm == "ktrail-agent" || comm == "ktrail-collecto" || comm == "ktrail") {
            continue;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains("kubepods") {
            found.push((pid, comm.to_owned()));
        }
    }
    found
}

/// A command in k8s-control's network namespace, where the Service's ClusterIP is
/// routed (kube-proxy's rules live in the nodes' namespaces).
fn on_control(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("--net=/run/ktrail-cluster/k8s-control.net")
        .arg("--")
        .arg(program);
    cmd
}

/// `ktrail` against the Service, on k8s-control, with the CLI's certificate. Not
/// through `kubectl port-forward`: its stream runs through kube-apiserver, the kubelet
/// and containerd, which are traced, so every hop shown would make new hops
/// (docs/deploy.md).
fn ktrail_cmd(service_ip: &str, args: &[&str]) -> Command {
    let certs = workspace_root().join("deploy/certs");
    let mut cmd = on_control(workspace_bin("ktrail").expect("ktrail binary"));
    cmd.arg("--collector")
        .arg(format!("https://{service_ip}:7700"))
        .args(["--tls-server-name", "ktrail-collector.ktrail-system.svc"])
        .arg("--tls-cert")
        .arg(certs.join("cli.crt"))
        .arg("--tls-key")
        .arg(certs.join("cli.key"))
        .arg("--tls-ca")
        .arg(certs.join("ca.crt"))
        .args(args);
    cmd
}

fn hops(path: &std::path::Path) -> Vec<Value> {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "hop")
        .collect()
}

#[test]
fn deployed_ktrail_traces_kubectl_run_and_leaves_nothing_behind() {
    skip_unless_root();
    let _lock = ClusterLock::take();
    let cluster_was_up = cluster_ready();
    if !cluster_was_up {
        assert!(script("up.sh"), "cluster up failed (see above)");
    }
    let _cleanup = Cleanup { cluster_was_up };

    xtask(&["certs"]);
    xtask(&["image", "--debug"]);
    // A clean start: nothing of an earlier run, no pod of the name.
    kubectl_ok(&[
        "delete",
        "-k",
        &deploy_dir(),
        "--ignore-not-found",
        "--wait=true",
    ]);
    kubectl_ok(&["delete", "pod", POD, "--ignore-not-found", "--wait=true"]);
    let before = traces();
    let others_before = other_agents();
    if bpftool_ids("prog").is_none() {
        log("bpftool not found or not working: BPF programs and links are not checked");
    }

    // Deploy.
    let start = Instant::now();
    kubectl_ok(&["apply", "-k", &deploy_dir()]);
    let pods = wait_until(
        "agents Ready on both nodes, collector Ready on k8s-control",
        || {
            let o = kubectl(&["-n", NS, "get", "pods", "-o", "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/name} {.spec.nodeName} {.status.phase} {.status.containerStatuses[0].ready}{\"\\n\"}{end}"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let want = [
                "ktrail-agent k8s-control Running true",
                "ktrail-agent k8s-worker Running true",
                "ktrail-collector k8s-control Running true",
            ];
            if want.iter().all(|w| text.lines().any(|l| l == *w)) {
                Ok(text)
            } else {
                Err(text)
            }
        },
    );
    log(&format!(
        "deployed and ready in {:.0}s:\n{pods}",
        start.elapsed().as_secs_f64()
    ));
    let ours = pod_processes();
    log(&format!("ktrail processes in pods: {ours:?}"));
    assert_eq!(
        ours.iter().filter(|(_, c)| c == "ktrail-agent").count(),
        2,
        "one agent process per node: {ours:?}"
    );

    // The CLI, over mutual TLS, through the Service.
    let logs = tempfile_dir();
    let service_ip = kubectl_ok(&[
        "-n",
        NS,
        "get",
        "service",
        "ktrail-collector",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let service_ip = service_ip.as_str();
    let status = wait_until("both agents connected to the collector", || {
        let o = run_with_timeout(
            ktrail_cmd(service_ip, &["status", "--output", "json"]),
            STEP_TIMEOUT,
        )
        .map_err(|e| format!("{e:#}"))?;
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let status: Value = serde_json::from_str(text.trim()).unwrap_or_default();
        let connected = |node: &str| {
            status["agents"].as_array().is_some_and(|agents| {
                agents
                    .iter()
                    .any(|a| a["node"] == node && a["connected"] == true)
            })
        };
        if o.status.success() && connected("k8s-control") && connected("k8s-worker") {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&o.stderr)))
        }
    });
    log(&format!("ktrail status:\n{status}"));

    // The web page: its API answers only with the token from deploy/certs/web-token.
    let token = std::fs::read_to_string(workspace_root().join("deploy/certs/web-token"))
        .expect("deploy/certs/web-token");
    let web = |auth: Option<&str>| {
        let mut curl = on_control("curl");
        curl.args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"]);
        if let Some(token) = auth {
            curl.args(["-H", &format!("Authorization: Bearer {}", token.trim())]);
        }
        curl.arg(format!("http://{service_ip}:7780/api/flows"));
        String::from_utf8_lossy(&out(curl).stdout).into_owned()
    };
    assert_eq!(web(None), "401", "the web API without the token");
    assert_eq!(web(Some(&token)), "200", "the web API with the token");
    let watch = ChildGuard::spawn(
        "watch",
        ktrail_cmd(service_ip, &["watch", "--output", "json"]),
        &logs,
    )
    .expect("ktrail watch");
    let watch_out = watch.stdout_path().expect("watch stdout").to_owned();

    // The reference operation, run on k8s-control as docs/flows.md does (kubectl in the
    // host's network namespace belongs to no node), watched by `kubectl get -w` (hop 12),
    // then a request to the nginx pod.
    let mut getw = on_control("kubectl");
    getw.args(["--kubeconfig", KUBECONFIG, "get", "pods", "-w"]);
    let _getw = ChildGuard::spawn("kubectl-get-w", getw, &logs).expect("kubectl get -w");
    std::thread::sleep(Duration::from_secs(2));
    let mut run = Command::new("nsenter");
    run.arg("--net=/run/ktrail-cluster/k8s-control.net").args([
        "--",
        "kubectl",
        "--kubeconfig",
        KUBECONFIG,
        "run",
        POD,
        "--image=nginx",
    ]);
    let o = out(run);
    assert!(
        o.status.success(),
        "kubectl run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ip = wait_until("mynginx-trace-test Running", || {
        let text = kubectl_ok(&[
            "get",
            "pod",
            POD,
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ]);
        match text.split_once(' ') {
            Some(("Running", ip)) if !ip.is_empty() => Ok(ip.to_owned()),
            _ => Err(text),
        }
    });
    let mut curl = Command::new("nsenter");
    curl.arg("--net=/run/ktrail-cluster/k8s-control.net").args([
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "-o",
        "/dev/null",
        &format!("http://{ip}/"),
    ]);
    let o = out(curl);
    assert!(
        o.status.success(),
        "curl nginx: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The reference flow, as with agents attached before the cluster started
    // (tests/tests/flows.rs): one flow holding all 12 hops — although these agents
    // attached to a running cluster, whose long-lived connections refer to HPACK
    // entries they never saw (docs/flows.md).
    let cli_json = |args: &[&str]| -> anyhow::Result<Vec<Value>> {
        let o = run_with_timeout(ktrail_cmd(service_ip, args), STEP_TIMEOUT)?;
        anyhow::ensure!(
            o.status.success(),
            "ktrail {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        output_json_lines(&String::from_utf8_lossy(&o.stdout))
    };
    let t0 = Instant::now();
    let flow =
        reference_flow::closed_flow(cli_json, reference_flow::TITLE, "settled", STEP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}"));
    let flow_hops = reference_flow::flow_hops(cli_json, &flow).unwrap_or_else(|e| panic!("{e:#}"));
    log(&format!(
        "flow {} closed {:.0}s after the request to nginx: {} hops",
        flow["id"],
        t0.elapsed().as_secs_f64(),
        flow_hops.len()
    ));
    // The whole reference flow, as with agents attached before the cluster (every hop,
    // its ends, causal order).
    reference_flow::check(&flow, &flow_hops);
    // And the ends it leaves open: who sent kubectl's POST, the etcd put, the status
    // update.
    let on = |h: &Value, end: &str, node: &str, comm: &str| {
        h[end]["node"] == node && h[end]["comm"].as_str().is_some_and(|c| c.starts_with(comm))
    };
    reference_flow::has(&flow_hops, "1 kubectl POST pods → 201", |h| {
        on(h, "client", "k8s-control", "kubectl")
            && h["method"] == "POST"
            && h["status_code"] == 201
    });
    reference_flow::has(&flow_hops, "2/5 etcd Txn put of the pod", |h| {
        on(h, "client", "k8s-control", "kube-apiserver")
            && h["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("etcd Txn put /registry/pods/default/{POD}")))
    });
    reference_flow::has(&flow_hops, "10 the kubelet's status update, Running", |h| {
        on(h, "client", "k8s-worker", "kubelet")
            && h["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("Pod default/{POD} node=k8s-worker Running")))
    });
    let inferred: Vec<String> = flow_hops
        .iter()
        .filter(|h| h["inferred"].as_array().is_some_and(|a| !a.is_empty()))
        .map(|h| format!("{} {}", h["inferred"], h["summary"]))
        .collect();
    log(&format!(
        "hops with inferred fields: {}\n{}",
        inferred.len(),
        inferred.join("\n")
    ));

    // `ktrail watch` showed the flow live: every one of its hops, and the nginx pod
    // named on the end of the request to it.
    let seen = wait_until(
        "the flow's hops and the request to nginx in `ktrail watch`",
        || {
            let hops = hops(&watch_out);
            let ids: BTreeSet<&str> = hops.iter().filter_map(|h| h["id"].as_str()).collect();
            let missing = flow_hops
                .iter()
                .filter(|h| !h["id"].as_str().is_some_and(|id| ids.contains(id)))
                .count();
            let nginx = hops.iter().find(|h| {
                h["server"]["addr"] == ip.as_str()
                    && h["server"]["pod"] == POD
                    && h["server"]["namespace"] == "default"
                    && h["server"]["k8s_node"] == "k8s-worker"
            });
            match (missing, nginx) {
            (0, Some(h)) => Ok(h.clone()),
            _ => Err(format!(
                "{} hops watched; {missing} of the flow's {} not among them; nginx end labelled {POD}: {}",
                hops.len(),
                flow_hops.len(),
                nginx.is_some()
            )),
        }
        },
    );
    log(&format!("the request to nginx: {seen}"));
    assert_eq!(seen["client"]["k8s_node"], "k8s-control", "{seen}");
    drop(watch);

    // Undeploy: nothing may stay.
    kubectl_ok(&["delete", "pod", POD, "--wait=true"]);
    let start = Instant::now();
    kubectl_ok(&["delete", "-k", &deploy_dir(), "--wait=true"]);
    wait_until("namespace ktrail-system gone", || {
        let o = kubectl(&["get", "namespace", NS]);
        (!o.status.success())
            .then_some(())
            .ok_or("still there".into())
    });
    log(&format!(
        "kubectl delete -k deploy/ done in {:.0}s",
        start.elapsed().as_secs_f64()
    ));
    wait_until("no ktrail process of a pod left", || {
        let left = pod_processes();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    });
    // Programs and links carry no owner that bpftool shows here: new ones are ours
    // unless someone started an agent of their own meanwhile (the machine is shared).
    // The kernel frees them shortly after their last holder exits: wait a little.
    let after = wait_until("nothing of the agents left in the kernel", || {
        let after = traces();
        let mut leftovers = Vec::new();
        let others_after = other_agents();
        if others_after.difference(&others_before).next().is_none() {
            for id in after.prog_ids.difference(&before.prog_ids) {
                leftovers.push(format!("BPF program {}", bpftool_show("prog", *id)));
            }
            for id in after.link_ids.difference(&before.link_ids) {
                leftovers.push(format!("BPF link {}", bpftool_show("link", *id)));
            }
        } else {
            log("other ktrail agents started during the test: BPF programs and links not compared");
        }
        for p in after.pinned.difference(&before.pinned) {
            leftovers.push(format!("pinned {p}"));
        }
        for u in after.uprobe_events.difference(&before.uprobe_events) {
            leftovers.push(format!("uprobe event {u}"));
        }
        if leftovers.is_empty() {
            Ok(after)
        } else {
            Err(format!(
                "left behind after kubectl delete -k deploy/:\n{}",
                leftovers.join("\n")
            ))
        }
    });
    log(&format!(
        "nothing left: {} BPF programs, {} links, {} pinned paths, {} uprobe events as before",
        after.prog_ids.len(),
        after.link_ids.len(),
        after.pinned.len(),
        after.uprobe_events.len()
    ));
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ktrail-deploy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}
