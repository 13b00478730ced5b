//! The local cluster traced by `cluster/trace.sh` (collector on the host, an agent per
//! node from its first process), for the fault tests and `cargo xtask soak`: start or
//! attach, the CLI with the run's client certificate, flows, hops, kubectl on k8s-control.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::json::output_json_lines;
use crate::kubectl::KUBECONFIG;
use crate::reference_flow;
use crate::{run_with_timeout, workspace_bin, workspace_root, CLI_BIN};

/// kubectl runs in k8s-control's network namespace, where its agent traces it.
pub const CONTROL_NET: &str = "--net=/run/ktrail-cluster/k8s-control.net";
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// A traced cluster; stopping the collector and agents on drop when this value started them.
pub struct Traced {
    state: PathBuf,
    owned: bool,
}

impl Traced {
    /// `cluster/trace.sh start BIN STATE`: takes the cluster down and up again, traced. The
    /// caller holds the cluster lock. `worker_args` go to the worker's agent.
    pub fn start(state: &Path, worker_args: &str) -> Result<Self> {
        let bin = workspace_bin(CLI_BIN)?
            .parent()
            .context("the CLI binary has no directory")?
            .to_path_buf();
        let t0 = Instant::now();
        let status = Command::new("bash")
            .env("KTRAIL_TRACE_WORKER_ARGS", worker_args)
            .arg(workspace_root().join("cluster/trace.sh"))
            .arg("start")
            .arg(&bin)
            .arg(state)
            .stdin(Stdio::null())
            .status()
            .context("running cluster/trace.sh")?;
        if !status.success() {
            bail!(
                "cluster/trace.sh start failed ({status}); logs in {}",
                state.display()
            );
        }
        eprintln!(
            "[traced] cluster up, traced, in {:.0} s (state {})",
            t0.elapsed().as_secs_f64(),
            state.display()
        );
        Ok(Traced {
            state: state.to_path_buf(),
            owned: true,
        })
    }

    /// A cluster that `cluster/trace.sh start … STATE` traces already; left running.
    pub fn attach(state: &Path) -> Result<Self> {
        let pid_file = state.join("collector.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}: is the cluster traced with this state directory (cluster/trace.sh start BIN {})?", pid_file.display(), state.display()))?;
        if !Path::new(&format!("/proc/{}", pid.trim())).exists() {
            bail!(
                "the collector of {} (pid {}) is not running: start it with cluster/trace.sh start",
                state.display(),
                pid.trim()
            );
        }
        Ok(Traced {
            state: state.to_path_buf(),
            owned: false,
        })
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The pid recorded in `STATE/NAME.pid` (`collector`, `agent-k8s-worker`).
    pub fn pid(&self, name: &str) -> Result<u32> {
        let file = self.state.join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no pid: {text:?}", file.display()))
    }

    /// `ktrail ARGS` against the run's collector with its CLI certificate.
    pub fn cli_command(&self, args: &[&str]) -> Result<Command> {
        let c = self.state.join("certs");
        let mut cmd = Command::new(workspace_bin(CLI_BIN)?);
        cmd.arg("--collector")
            .arg("https://127.0.0.1:7700")
            .arg("--tls-server-name")
            .arg("ktrail-collector")
            .arg("--tls-cert")
            .arg(c.join("cli.crt"))
            .arg("--tls-key")
            .arg(c.join("cli.key"))
            .arg("--tls-ca")
            .arg(c.join("ca.crt"))
            .args(args);
        Ok(cmd)
    }

    /// `ktrail ARGS`, which must succeed: its stdout.
    pub fn cli_text(&self, args: &[&str]) -> Result<String> {
        let o = run_with_timeout(self.cli_command(args)?, CLI_TIMEOUT)?;
        if !o.status.success() {
            bail!(
                "ktrail {args:?} failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `ktrail ARGS` printing JSON lines: one value per line.
    pub fn cli_json(&self, args: &[&str]) -> Result<Vec<Value>> {
        output_json_lines(&self.cli_text(args)?)
    }

    /// `ktrail status --output json`.
    pub fn status(&self) -> Result<Value> {
        self.cli_json(&["status", "--output", "json"])?
            .into_iter()
            .next()
            .context("`ktrail status --output json` printed nothing")
    }

    /// The most recent `limit` flows.
    pub fn flows(&self, limit: usize) -> Result<Vec<Value>> {
        self.cli_json(&["flows", "--limit", &limit.to_string(), "--output", "json"])
    }

    /// The one flow titled `title`, once it is in `state` and closed.
    pub fn flow(&self, title: &str, state: &str, timeout: Duration) -> Result<Value> {
        reference_flow::closed_flow(|a| self.cli_json(a), title, state, timeout)
    }

    /// `ktrail show ID --format jsonl`: the hops (the flow line dropped).
    pub fn hops(&self, flow: &Value) -> Result<Vec<Value>> {
        reference_flow::flow_hops(|a| self.cli_json(a), flow)
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = Command::new("bash")
            .arg(workspace_root().join("cluster/trace.sh"))
            .arg("stop")
            .arg(&self.state)
            .status();
    }
}

/// `kubectl ARGS` in k8s-control (where its agent traces it), at most `timeout`.
pub fn kubectl_control(args: &[&str], timeout: Duration) -> Result<Output> {
    let mut cmd = Command::new("nsenter");
    cmd.arg(CONTROL_NET)
        .args(["--", "kubectl", "--kubeconfig", KUBECONFIG])
        .args(args);
    run_with_timeout(cmd, timeout)
}

/// [`kubectl_control`] that must succeed: its stdout.
pub fn kubectl_control_ok(args: &[&str], timeout: Duration) -> Result<String> {
    let o = kubectl_control(args, timeout)?;
    if !o.status.success() {
        bail!(
            "kubectl {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A string field at `path` in `v`, `""` when absent.
pub fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or("")
}
