//! `cargo xtask cluster up|down|status|kubeconfig`: the local two-node Kubernetes cluster.
//!
//! The work is done by the bash scripts in `cluster/` (see docs/cluster.md); this module
//! only runs them as root and reports which one failed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

/// Where `cluster/up.sh` writes the admin kubeconfig (`$STATE/admin.conf` in cluster/lib.sh).
pub const ADMIN_KUBECONFIG: &str = "/var/lib/ktrail-cluster/admin.conf";

pub const LONG_ABOUT: &str = "A real two-node Kubernetes cluster on this machine: network \
namespaces k8s-control (192.168.56.10, control plane + registry) and k8s-worker \
(192.168.56.20) on the bridge ktrail-br0 (host 192.168.56.1), each with its own containerd, \
kubelet and kube-proxy. Kubernetes, etcd, the registry and crane are built from their Go \
modules on the first `up` and cached in /var/cache/ktrail. See docs/cluster.md.";

#[derive(Subcommand, Clone, Copy)]
pub enum Action {
    /// Build (or reuse) the binaries and bring the cluster up; no-op when it is up and healthy
    Up,
    /// Remove everything `up` made (processes, mounts, namespaces, cgroups, iptables rules, links)
    Down,
    /// Show every component (process, health, log path); fails unless all are healthy
    Status,
    /// Print the path of the admin kubeconfig (use with `export KUBECONFIG=$(...)`)
    Kubeconfig,
}

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cluster")
}

pub fn run(action: Action) -> Result<()> {
    let script = match action {
        Action::Up => "up.sh",
        Action::Down => "down.sh",
        Action::Status => "status.sh",
        Action::Kubeconfig => {
            let path = PathBuf::from(ADMIN_KUBECONFIG);
            if !path.exists() {
                bail!("{ADMIN_KUBECONFIG} does not exist: the cluster is not up (cargo xtask cluster up)");
            }
            println!("{}", path.display());
            return Ok(());
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask cluster needs root (network namespaces, mounts, cgroups)");
    }
    let path = script_dir().join(script);
    let status = Command::new("bash")
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", path.display()))?;
    if !status.success() {
        match action {
            Action::Status => bail!("the cluster is not up and healthy (see above)"),
            _ => bail!(
                "{} failed ({status}); the message above names the failing component and its log",
                path.display()
            ),
        }
    }
    Ok(())
}
