//! `cargo xtask demo`: the live flow of `kubectl run` on the local Kubernetes cluster.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ktrail_tests::{ChildGuard, ClusterLock};

use crate::util::{cargo, require_root, run_cmd};
use crate::{demo_stand_in, setup};
use ktrail_tests::workspace_root;

pub const LONG_ABOUT: &str = "\
Show ktrail's main job: the live flow of `kubectl run mynginx-trace-test --image=nginx`
across the local two-node Kubernetes cluster.

Runs setup, builds the workspace, then cluster/trace.sh: a certificate set, ktrail-collector
on this machine (192.168.56.1:7700, mutual TLS), the local cluster taken down and brought up
again with a ktrail-agent in each node (k8s-control, k8s-worker) from the node's first
process (the first run builds Kubernetes: about 14 minutes on 2 cores; after that about 30
seconds). Then `ktrail watch` draws each flow as a tree while it unfolds — kubectl →
kube-apiserver → etcd → kube-scheduler → kubelet on k8s-worker → containerd → runc → nginx —
and the demo runs the kubectl command. Try more in another terminal (printed below), e.g.
`kubectl create deployment web --image=nginx --replicas=2` or `kubectl run bad
--image=does-not-exist`. Ctrl-C stops the agents and the collector (the cluster stays up;
`cargo xtask cluster down` removes it). Logs and the collector's data: target/demo.
Needs root.

--stand-in runs the older, quicker demo without Kubernetes: two network namespaces with a
fake kubelet and kube-apiserver talking HTTP, shown as hops.";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Two stand-in nodes and fake components instead of the Kubernetes cluster.
    #[arg(long)]
    pub stand_in: bool,
}

pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Ctrl-C, a closed terminal or `kill` set [`STOP`] instead of killing us, so the guards
/// get to stop the processes in order.
pub fn catch_stop_signals() -> Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

/// Waits for Ctrl-C (`None`), or for `ktrail watch` to exit or `died` to name a reason
/// (`Some(reason)`).
pub fn wait_for_stop(
    watch: &mut ChildGuard,
    mut died: impl FnMut() -> Option<String>,
) -> Result<Option<String>> {
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(status) = watch.try_status()? {
            // Ctrl-C reaches `ktrail watch` too; it may exit before our flag is seen.
            std::thread::sleep(Duration::from_millis(100));
            if STOP.load(Ordering::SeqCst) {
                return Ok(None);
            }
            return Ok(Some(format!("ktrail watch exited ({status})")));
        }
        if let Some(reason) = died() {
            return Ok(Some(reason));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

const KUBECONFIG: &str = "/var/lib/ktrail-cluster/admin.conf";
const POD: &str = "mynginx-trace-test";

pub fn run(args: DemoArgs) -> Result<()> {
    if args.stand_in {
        return demo_stand_in::run();
    }
    require_root("demo")?;
    setup::run()?;
    println!("\n==> build");
    run_cmd(cargo().args(["build", "--workspace", "--bins"]))?;
    let root = workspace_root();
    let bin = root.join("target/debug");
    let state = root.join("target/demo");
    let _lock = ClusterLock::take();
    catch_stop_signals()?;
    let trace = |action: &str| -> Result<()> {
        let mut cmd = Command::new("bash");
        cmd.arg(root.join("cluster/trace.sh")).arg(action);
        if action == "start" {
            cmd.arg(&bin);
        }
        cmd.arg(&state);
        run_cmd(&mut cmd)
    };
    println!(
        "\n==> the local cluster with ktrail (logs in {})",
        state.display()
    );
    let t0 = Instant::now();
    trace("start")?;
    let _stop = Stop(&state);
    println!("==> ready after {:.0} s", t0.elapsed().as_secs_f64());

    let c = state.join("certs");
    let cli_flags = format!(
        "--collector https://127.0.0.1:7700 --tls-server-name ktrail-collector --tls-cert {0}/cli.crt --tls-key {0}/cli.key --tls-ca {0}/ca.crt",
        c.display()
    );
    let kubectl = |args: &[&str]| -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--net=/run/ktrail-cluster/k8s-control.net")
            .args(["--", "kubectl", "--kubeconfig", KUBECONFIG])
            .args(args);
        cmd
    };
    let mut watch = Command::new(bin.join("ktrail"));
    watch.args(cli_flags.split(' ')).arg("watch");
    let mut watch = ChildGuard::spawn_inherit("ktrail watch", watch)?;
    std::thread::sleep(Duration::from_secs(1));
    println!("\n==> kubectl run {POD} --image=nginx   (on k8s-control)\n");
    let status = kubectl(&["run", POD, "--image=nginx"]).status()?;
    if !status.success() {
        bail!("kubectl run failed ({status})");
    }
    println!(
        "\n==> more, from another terminal (each becomes a flow here):\n\
         \x20   alias k='nsenter --net=/run/ktrail-cluster/k8s-control.net kubectl --kubeconfig {KUBECONFIG}'\n\
         \x20   k create deployment web --image=nginx --replicas=2\n\
         \x20   k run bad --image=does-not-exist\n\
         \x20   k delete pod {POD}\n\
         ==> past flows: {} {cli_flags} flows   (then: show ID [--syscalls])\n\
         ==> Ctrl-C stops ktrail (the cluster stays up)\n",
        bin.join("ktrail").display()
    );
    let ended = wait_for_stop(&mut watch, || None)?;
    drop(watch);
    println!(
        "\n==> stopping the agents and the collector (the agents take a few seconds to detach) …"
    );
    match ended {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("the demo stopped early: {reason}")),
    }
}

/// Stops ktrail on the cluster however the demo ends.
struct Stop<'a>(&'a PathBuf);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace_root().join("cluster/trace.sh"))
            .arg("stop")
            .arg(self.0)
            .status();
    }
}
