//! The two-node stand-in: a collector and two agents in the [`NetnsPair`] namespaces.

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::json::{agent_for_node, bool_of};
use crate::{
    is_root, netns_command, run_in_netns, run_with_timeout, wait_for, workspace_bin, Check,
    ChildGuard, NetnsPair, WorkDir, AGENT_BIN, CLI_BIN, COLLECTOR_BIN, CONTROL, CONTROL_IP,
    PEER_BIN, WORKER,
};

/// The collector's gRPC port on [`CONTROL_IP`].
pub const COLLECTOR_PORT: u16 = 7700;
/// Port of the `kube-apiserver` test peer on [`CONTROL_IP`].
pub const SERVER_PORT: u16 = 8080;
/// Each agent's node name (= its namespace) and `--metrics-addr` (inside that namespace).
pub const AGENT_METRICS: [(&str, &str); 2] =
    [(CONTROL, "127.0.0.1:9464"), (WORKER, "127.0.0.1:9465")];
/// Time given to a freshly started `ktrail watch`/`trace` to subscribe before traffic starts:
/// the CLI prints nothing until the first hop, so there is no signal to wait for.
pub const SUBSCRIBE_GRACE: Duration = Duration::from_secs(1);

/// eBPF load and attach, plus the agents' first connection to the collector.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// How [`TwoNodes::start`] runs things.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Extra arguments for both agents, e.g. `["--buffer-events", "200"]`.
    pub agent_args: Vec<String>,
    /// Extra arguments for the worker's agent only (after `agent_args`).
    pub worker_agent_args: Vec<String>,
    /// Start every process in its own process group, so Ctrl-C in a terminal reaches only
    /// the caller, which then stops them in order (the demo). Tests leave this off: if the
    /// test binary is interrupted, its children get the signal too.
    pub own_process_group: bool,
    /// Directory for logs, the copied target binaries and the collector's data, kept
    /// afterwards; by default a fresh temporary directory, removed unless a test fails.
    pub dir: Option<PathBuf>,
}

/// A collector in `k8s-control` and an agent in each of `k8s-control` and `k8s-worker`.
///
/// Dropping it stops the agents, then the collector, then removes the namespaces.
pub struct TwoNodes {
    // Fields drop in this order.
    agents: Vec<ChildGuard>,
    collector: Option<ChildGuard>,
    /// Collectors killed by [`TwoNodes::kill_collector`], kept for their logs.
    stopped: Vec<ChildGuard>,
    collector_bin: PathBuf,
    cli_bin: PathBuf,
    peer_bin: PathBuf,
    spawned: Cell<u32>,
    options: ClusterOptions,
    _netns: NetnsPair,
    dir: WorkDir,
}

impl TwoNodes {
    /// Creates the namespaces, starts the collector and both agents, and waits until each
    /// agent's `/readyz` answers 200 and `ktrail status` lists both agents as connected.
    pub fn start(options: ClusterOptions) -> Result<Self> {
        if !is_root() {
            bail!("the two-node setup needs root (network namespaces, eBPF)");
        }
        let collector_bin = workspace_bin(COLLECTOR_BIN)?;
        let agent_bin = workspace_bin(AGENT_BIN)?;
        let cli_bin = workspace_bin(CLI_BIN)?;
        let peer_bin = workspace_bin(PEER_BIN)?;
        let dir = match &options.dir {
            Some(path) => {
                let mut dir = WorkDir::at(path)?;
                dir.keep();
                dir
            }
            None => WorkDir::new("two-nodes")?,
        };
        let netns = NetnsPair::create()?;
        let mut nodes = Self {
            agents: Vec::new(),
            collector: None,
            stopped: Vec::new(),
            collector_bin,
            cli_bin,
            peer_bin,
            spawned: Cell::new(0),
            options,
            _netns: netns,
            dir,
        };
        match nodes.start_processes(&agent_bin) {
            Ok(()) => Ok(nodes),
            Err(e) => {
                // Dropping `nodes` stops everything; keep what explains the failure.
                nodes.dir.keep();
                Err(anyhow!(
                    "{e:?}\n\n{}files in {}",
                    nodes.logs(),
                    nodes.dir().display()
                ))
            }
        }
    }

    fn start_processes(&mut self, agent_bin: &Path) -> Result<()> {
        self.start_collector()?;
        for (node, metrics) in AGENT_METRICS {
            let mut cmd = netns_command(node, agent_bin);
            // Plaintext: the stand-in tests the tracing; mutual TLS is tested in
            // cli/tests/mtls.rs and on the cluster (tests/tests/deploy.rs).
            cmd.args(["--node-name", node, "--collector", &Self::collector_url()])
                .arg("--insecure")
                .args(["--metrics-addr", metrics])
                .args(&self.options.agent_args);
            if node == WORKER {
                cmd.args(&self.options.worker_agent_args);
            }
            let agent = self.spawn(&format!("agent-{node}"), cmd)?;
            self.agents.push(agent);
        }
        self.wait_ready()
    }

    /// The output of the collector(s) and agents so far, for failure messages.
    pub fn logs(&self) -> String {
        let collectors = self.stopped.iter().chain(self.collector.as_ref());
        collectors
            .chain(&self.agents)
            .map(ChildGuard::logs)
            .collect()
    }

    /// `http://192.168.56.10:7700`, reachable from both namespaces.
    pub fn collector_url() -> String {
        format!("http://{CONTROL_IP}:{COLLECTOR_PORT}")
    }

    /// The URL the `kubelet` peer requests.
    pub fn pods_url() -> String {
        format!("http://{CONTROL_IP}:{SERVER_PORT}/api/v1/namespaces/default/pods")
    }

    /// Logs, target binaries (`bin/`) and collector data (`collector-data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `ktrail-collector` on the same data directory as any earlier run.
    pub fn start_collector(&mut self) -> Result<()> {
        if self.collector.is_some() {
            bail!("the collector is already running");
        }
        let data = self.dir().join("collector-data");
        let listen = format!("{CONTROL_IP}:{COLLECTOR_PORT}");
        let mut cmd = netns_command(CONTROL, &self.collector_bin);
        cmd.args(["--listen", &listen, "--insecure"])
            .arg("--data-dir")
            .arg(&data);
        let name = match self.stopped.len() {
            0 => "collector".to_string(),
            n => format!("collector-{}", n + 1),
        };
        self.collector = Some(self.spawn(&name, cmd)?);
        Ok(())
    }

    /// SIGKILLs the collector (a crash: nothing flushed, connections reset).
    pub fn kill_collector(&mut self) -> Result<()> {
        let mut collector = self
            .collector
            .take()
            .context("the collector is not running")?;
        collector.ensure_running()?;
        collector.kill_now()?;
        self.stopped.push(collector);
        Ok(())
    }

    /// An error with logs if the collector or an agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(collector) = &mut self.collector {
            collector.ensure_running()?;
        }
        for agent in &mut self.agents {
            agent.ensure_running()?;
        }
        Ok(())
    }

    /// Waits for both agents' `/readyz` and for `ktrail status` to show both connected.
    pub fn wait_ready(&mut self) -> Result<()> {
        for (node, metrics) in AGENT_METRICS {
            let url = format!("http://{metrics}/readyz");
            wait_for(
                &format!("the {node} agent's {url} (inside netns {node}) to answer 200"),
                READY_TIMEOUT,
                || {
                    self.ensure_running()?;
                    let out = run_in_netns(
                        node,
                        "curl",
                        [
                            "-s",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            "--max-time",
                            "2",
                            &url,
                        ],
                    )?;
                    let code = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    Ok(if code == "200" {
                        Check::Done(())
                    } else {
                        Check::NotYet(format!("HTTP status {code}"))
                    })
                },
            )?;
        }
        wait_for(
            "`ktrail status` to list both agents as connected",
            READY_TIMEOUT,
            || {
                self.ensure_running()?;
                let status = match self.status() {
                    Ok(status) => status,
                    Err(e) => return Ok(Check::NotYet(format!("{e:#}"))),
                };
                let connected = AGENT_METRICS.iter().all(|(node, _)| {
                    agent_for_node(&status, node).is_some_and(|a| bool_of(a.get("connected")))
                });
                Ok(if connected {
                    Check::Done(())
                } else {
                    Check::NotYet(status.to_string())
                })
            },
        )
    }

    /// `ktrail --collector URL <args>` inside `k8s-control`, ready to run or spawn.
    pub fn cli<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = netns_command(CONTROL, &self.cli_bin);
        cmd.args(["--collector", &Self::collector_url(), "--insecure"])
            .args(args);
        cmd
    }

    /// `ktrail status --output json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let out = run_with_timeout(self.cli(["status", "--output", "json"]), CLI_TIMEOUT)?;
        if !out.status.success() {
            bail!(
                "`ktrail status` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "`ktrail status --output json` printed no JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Spawns `cmd` with output captured under [`TwoNodes::dir`] as `<name>-<n>`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Result<ChildGuard> {
        if self.options.own_process_group {
            cmd.process_group(0);
        }
        let n = self.spawned.get() + 1;
        self.spawned.set(n);
        ChildGuard::spawn(&format!("{name}-{n}"), cmd, self.dir())
    }

    /// Spawns `ktrail --collector URL <args>` in `k8s-control`.
    pub fn spawn_cli<I, S>(&self, name: &str, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn(name, self.cli(args))
    }

    /// `ktrail watch --output json`, given [`SUBSCRIBE_GRACE`] to subscribe.
    pub fn spawn_watch(&self) -> Result<ChildGuard> {
        let mut watch = self.spawn_cli("watch", ["watch", "--output", "json"])?;
        std::thread::sleep(SUBSCRIBE_GRACE);
        watch.ensure_running()?;
        Ok(watch)
    }

    /// `ktrail trace --node NODE --output json`, given [`SUBSCRIBE_GRACE`] to subscribe.
    pub fn spawn_trace(&self, node: &str) -> Result<ChildGuard> {
        let mut trace = self.spawn_cli("trace", ["trace", "--node", node, "--output", "json"])?;
        std::thread::sleep(SUBSCRIBE_GRACE);
        trace.ensure_running()?;
        Ok(trace)
    }

    /// Runs `script` with a copy of bash named `kubelet` (so the agent tracks it, and
    /// every process it starts) in `k8s-worker`, to completion; its output and status.
    pub fn run_traced_shell(&self, dir: &Path, script: &str) -> Result<ChildGuard> {
        let shell = dir.join("kubelet");
        if !shell.exists() {
            std::fs::copy("/bin/bash", &shell).context("copying bash as kubelet")?;
        }
        let mut cmd = netns_command(WORKER, &shell);
        cmd.args(["-c", script]);
        let mut child = self.spawn("kubelet-shell", cmd)?;
        let status = child.wait_timeout(Duration::from_secs(60))?;
        if !status.success() {
            bail!("the traced shell failed ({status}):\n{}", child.logs());
        }
        Ok(child)
    }

    /// Runs the test peer in `ns` as a file named `comm` (its process name, which is how
    /// the agent picks targets).
    pub fn spawn_target<I, S>(&self, ns: &str, comm: &str, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let bin_dir = self.dir().join("bin");
        let exe = bin_dir.join(comm);
        if !exe.exists() {
            std::fs::create_dir_all(&bin_dir)?;
            std::fs::copy(&self.peer_bin, &exe).with_context(|| {
                format!("copying {} to {}", self.peer_bin.display(), exe.display())
            })?;
        }
        let mut cmd = netns_command(ns, &exe);
        cmd.args(args);
        self.spawn(comm, cmd)
    }

    /// `kube-apiserver server --listen 0.0.0.0:8080` in `k8s-control`, once it listens.
    pub fn spawn_server(&self) -> Result<ChildGuard> {
        let listen = format!("0.0.0.0:{SERVER_PORT}");
        let mut server =
            self.spawn_target(CONTROL, "kube-apiserver", ["server", "--listen", &listen])?;
        wait_for("kube-apiserver to listen", Duration::from_secs(10), || {
            server.ensure_running()?;
            Ok(if server.stdout().contains("listening on") {
                Check::Done(())
            } else {
                Check::NotYet("no \"listening on\" line yet".into())
            })
        })?;
        Ok(server)
    }

    /// The agent of `node` ([`CONTROL`] or [`WORKER`]), to signal or kill it.
    pub fn agent_mut(&mut self, node: &str) -> Result<&mut ChildGuard> {
        let i = AGENT_METRICS
            .iter()
            .position(|(n, _)| *n == node)
            .with_context(|| format!("no agent for node {node:?}"))?;
        self.agents
            .get_mut(i)
            .with_context(|| format!("the {node} agent was not started"))
    }

    /// `kubelet client` in `k8s-worker`: `count` GETs of [`TwoNodes::pods_url`] on one
    /// keep-alive connection (`count` 0: until stopped).
    pub fn spawn_kubelet(&self, count: u32, interval_ms: u32) -> Result<ChildGuard> {
        let (count, interval) = (count.to_string(), interval_ms.to_string());
        let url = Self::pods_url();
        self.spawn_target(
            WORKER,
            "kubelet",
            [
                "client",
                "--url",
                &url,
                "--count",
                &count,
                "--interval-ms",
                &interval,
            ],
        )
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        // Ask all agents at once: each may spend a moment flushing to the collector, and
        // the field drops below then wait for them (SIGKILL after the grace time).
        for agent in &mut self.agents {
            if let Err(e) = agent.signal(libc::SIGTERM) {
                eprintln!("ktrail-tests: {e:#}");
            }
        }
    }
}
