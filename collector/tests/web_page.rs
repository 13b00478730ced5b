//! The web page in a real browser: headless Chromium (Debian's `chromium`,
//! installed by `cargo xtask setup`) loads the collector's page fed with the
//! flows of the recorded cluster capture, runs its JavaScript, and the
//! rendered DOM must show the flow's lanes, one bar per hop, the parent links
//! and, for the failed pull, the failure. A screenshot is kept in
//! target/test-output/web-flow.png. A second test feeds the hops only after
//! the page connected, so they can only arrive through its live stream.
//!
//! Chromium's virtual time (`--virtual-time-budget`, which lets the page's
//! scripts run before the DOM is dumped) stands still while a request is
//! open, and the live stream always is: the first test loads snapshots
//! (`?live=0`), the second ends the stream (collector shutdown) once the
//! hops are sent.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktrail_collector::flows::{StitchConfig, Update};
use ktrail_collector::live::LiveHub;
use ktrail_collector::replay::{self, Replayed, KUBECTL_RUN, KUBECTL_RUN_BAD};
use ktrail_collector::web::{self, WebConfig, WebServer};
use ktrail_proto::v1::{Flow, Hop};
use tokio::sync::watch;

const TOKEN: &str = "s3cret-token";

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

fn replayed() -> Replayed {
    replay::replay(&replay::cluster_capture(), StitchConfig::default()).expect("replay")
}

/// Sends replayed updates to the hub as the hop task does, optionally only
/// those of one flow.
fn publish(hub: &LiveHub, r: &Replayed, only: Option<&str>) {
    for (_, u) in &r.updates {
        match u {
            Update::Hop(h) if only.is_none_or(|id| h.flow_id == id) => {
                hub.publish_hop((**h).clone())
            }
            Update::Flow(f) if only.is_none_or(|id| f.id == id) => hub.publish_flow((**f).clone()),
            _ => {}
        }
    }
}

async fn serve(hub: Arc<LiveHub>, stop: watch::Receiver<bool>) -> WebServer {
    let cfg = WebConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token: Some(TOKEN.to_string()),
    };
    web::start(cfg, hub, None, stop).await.expect("web server")
}

/// Runs headless Chromium on `url` with `extra` arguments; its stdout.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    // Never hang the test run: a page that keeps a request open stops
    // Chromium's virtual time (see above).
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1600,1000",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running chromium ({e}): `cargo xtask setup` installs Debian's chromium")
        });
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The DOM shows `flow` with every hop of `hops` as a bar, its lanes and
/// a link per parent in the flow.
fn assert_rendered(dom: &str, flow: &Flow, hops: &[Hop]) {
    assert!(
        dom.contains(&format!("data-flow=\"{}\"", flow.id)),
        "the page did not render flow {}:\n{}",
        flow.id,
        &dom[..dom.len().min(3000)]
    );
    assert!(dom.contains(&format!("data-hops=\"{}\"", hops.len())));
    for h in hops {
        assert!(
            dom.contains(&format!("data-hop-id=\"{}\"", h.id)),
            "no bar for hop {} ({})",
            h.id,
            h.summary
        );
    }
    assert_eq!(count(dom, "class=\"bar"), hops.len(), "one bar per hop");
    let in_flow: HashSet<&str> = hops.iter().map(|h| h.id.as_str()).collect();
    let links = hops
        .iter()
        .filter(|h| in_flow.contains(h.parent_id.as_str()))
        .count();
    assert!(links > 0);
    assert_eq!(count(dom, "<line "), links, "one link per parent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_the_kubectl_run_flow_and_the_failed_pull() {
    let r = replayed();
    let hub = Arc::new(LiveHub::new(1_000_000, Vec::new(), 0));
    publish(&hub, &r, None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = serve(hub, stop_rx).await;
    let base = format!("http://{}", server.local_addr);

    // Without the token nothing is served.
    let (status, _) = http_get(server.local_addr, "/api/flows");
    assert_eq!(status, 401);
    let (status, body) = http_get(server.local_addr, &format!("/api/flows?token={TOKEN}"));
    assert_eq!(status, 200);
    assert!(body.contains(KUBECTL_RUN), "{body}");

    let (flow, hops) = r.flow_titled(KUBECTL_RUN).expect("kubectl run flow");
    let url = format!("{base}/?token={TOKEN}&live=0&flow={}", flow.id);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&url, &["--dump-dom"])
    })
    .await
    .expect("chromium");
    assert_rendered(&dom, &flow, &hops);
    for lane in [
        "k8s-control/kube-apiserver",
        "k8s-control/kube-scheduler",
        "k8s-worker/kubelet",
        "k8s-worker/containerd",
    ] {
        assert!(
            dom.contains(&format!("data-lane=\"{lane}\"")),
            "no lane {lane}"
        );
    }
    assert!(dom.contains("data-lane=\"k8s-control/etcd"), "no etcd lane");
    // Every hop also marks the end that served it.
    assert_eq!(count(&dom, "data-served-hop-id=\""), hops.len());
    assert!(dom.contains("data-flow-id=\"") && dom.contains(KUBECTL_RUN));
    assert!(!dom.contains("id=\"failure-message\""), "no failure shown");

    // A hop's details (as a click shows them; ?hop= opens them).
    let sandbox = hops
        .iter()
        .find(|h| h.cri.as_ref().is_some_and(|c| c.method == "RunPodSandbox"))
        .expect("RunPodSandbox hop");
    let dom = tokio::task::spawn_blocking({
        let url = format!("{url}&hop={}", sandbox.id);
        move || chromium(&url, &["--dump-dom"])
    })
    .await
    .expect("chromium");
    let at = dom
        .find(&format!(
            "id=\"hop-details\" data-hop-id=\"{}\"",
            sandbox.id
        ))
        .expect("the hop's details");
    let details = &dom[at..];
    let details = &details[..details.find("</table>").expect("end of details")];
    for want in [
        "RunPodSandbox",
        "pod default/mynginx-trace-test",
        "latency",
        "joined by",
        sandbox.joined_by.as_str(),
        sandbox.parent_id.as_str(),
        "k8s-worker/kubelet",
        "k8s-worker/containerd",
    ] {
        assert!(
            details.contains(want),
            "{want:?} not in the details:\n{details}"
        );
    }

    let png = output_dir().join("web-flow.png");
    let _ = std::fs::remove_file(&png);
    let shot = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || chromium(&url, &[&shot]))
        .await
        .expect("chromium");
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "{} is {size} bytes", png.display());

    // The failed pull: the failure named, its hop marked.
    let (bad, bad_hops) = r.flow_titled(KUBECTL_RUN_BAD).expect("failed flow");
    let failure = bad.failure.clone().expect("failure");
    let url = format!("{base}/?token={TOKEN}&live=0&flow={}", bad.id);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chromium(&url, &["--dump-dom"])
    })
    .await
    .expect("chromium");
    assert_rendered(&dom, &bad, &bad_hops);
    assert!(dom.contains("id=\"failure-message\""), "no failure shown");
    let escaped = failure
        .message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        dom.contains(&escaped),
        "failure message {escaped:?} not shown"
    );
    let at = dom
        .find(&format!("data-hop-id=\"{}\"", failure.hop_id))
        .expect("bar of the failed hop");
    let class = &dom[dom[..at].rfind("class=").expect("class")..at];
    assert!(class.contains("failure"), "{class}");
    let png = output_dir().join("web-flow-failed.png");
    let shot = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || chromium(&url, &[&shot]))
        .await
        .expect("chromium");
    assert!(png.is_file());

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("web server stops")
        .expect("web task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hops_arriving_after_the_page_loaded_are_drawn_live() {
    let r = replayed();
    let (flow, hops) = r.flow_titled(KUBECTL_RUN).expect("kubectl run flow");
    let hub = Arc::new(LiveHub::new(1_000_000, Vec::new(), 0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = serve(hub.clone(), stop_rx).await;
    let url = format!("http://{}/?token={TOKEN}", server.local_addr);
    // No flow yet: the page follows the first one that appears.
    let browser = tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.live_clients.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the page never opened /api/live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&hub, &r, Some(&flow.id));
    // Let the page take them in and fetch the flow, then end its stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let dom = tokio::time::timeout(Duration::from_secs(120), browser)
        .await
        .expect("chromium finished")
        .expect("chromium");
    assert_rendered(&dom, &flow, &hops);
}

/// A plain HTTP/1.0 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::http_get(addr, path).expect("GET from the web server")
}
