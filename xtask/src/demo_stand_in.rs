//! `cargo xtask demo --stand-in`: live hops between two stand-in nodes on this machine
//! (no Kubernetes; a quick look at the agents and the collector).
//!
//! Two network namespaces on this machine, k8s-control (192.168.56.10) and k8s-worker
//! (192.168.56.20), joined by a veth pair: two nodes sharing one kernel, as in kind. It
//! starts ktrail-collector in k8s-control, a ktrail-agent in each namespace, a
//! `kube-apiserver` HTTP server in k8s-control and a `kubelet` in k8s-worker that GETs
//! /api/v1/namespaces/default/pods once a second (tests/'s ktrail-test-peer under the names
//! the agent traces), and runs `ktrail watch --view hops`. Ctrl-C stops everything and
//! removes the namespaces. Logs: /tmp/ktrail-demo.

use std::path::Path;

use anyhow::Result;
use ktrail_tests::{ChildGuard, ClusterOptions, TwoNodes, CONTROL, WORKER};

use crate::demo::{catch_stop_signals, wait_for_stop};
use crate::setup;
use crate::util::{cargo, require_root, run_cmd};

const DIR: &str = "/tmp/ktrail-demo";

pub fn run() -> Result<()> {
    require_root("demo")?;
    setup::run()?;
    println!("\n==> build");
    run_cmd(cargo().args(["build", "--workspace", "--bins"]))?;
    catch_stop_signals()?;

    println!("\n==> starting the collector and an agent per node (logs in {DIR}) …");
    let options = ClusterOptions {
        // Ctrl-C reaches only us and `ktrail watch`; we stop the rest in order.
        own_process_group: true,
        dir: Some(DIR.into()),
        ..ClusterOptions::default()
    };
    let mut cluster = TwoNodes::start(options)?;
    let mut server = cluster.spawn_server()?;
    let mut kubelet = cluster.spawn_kubelet(0, 1000)?;
    println!(
        "\n==> kubelet ({WORKER}) -> kube-apiserver ({CONTROL}): GET {} every second\n\
         ==> ktrail watch (Ctrl-C to stop and clean up)\n",
        TwoNodes::pods_url()
    );
    let mut watch =
        ChildGuard::spawn_inherit("ktrail watch", cluster.cli(["watch", "--view", "hops"]))?;

    let ended = wait_for_stop(&mut watch, || {
        [&mut server, &mut kubelet]
            .into_iter()
            .find_map(|child| child.ensure_running().err())
            .or_else(|| cluster.ensure_running().err())
            .map(|e| format!("{e:#}"))
    })?;

    // The kernel removes an agent's probes one by one on exit: that takes a while.
    println!("\n==> stopping (the agents may take half a minute to detach) …");
    if let Some(reason) = &ended {
        eprintln!("{reason}");
    }
    drop(watch);
    drop(kubelet);
    drop(server);
    drop(cluster);
    println!(
        "==> stopped; namespaces removed; logs in {}",
        Path::new(DIR).display()
    );
    match ended {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("the demo stopped early: {reason}")),
    }
}
