//! The processes a benchmark runs: collector, agent, recorder, load copies, and the
//! readings taken from them (/metrics, `ktrail status`, RSS).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use ktrail_tests::{run_with_timeout, wait_for, Check, ChildGuard};
use serde_json::Value;

/// Ports on 127.0.0.1, away from the defaults the demo and tests use.
pub const COLLECTOR_ADDR: &str = "127.0.0.1:17790";
pub const RECORDER_ADDR: &str = "127.0.0.1:17791";
pub const METRICS_ADDR: &str = "127.0.0.1:19490";
/// The benchmark agent's node name.
pub const NODE: &str = "bench";

/// Names the load binary is copied under. Targets are in the agent's default list;
/// the others match none of its patterns.
pub const SERVER_TARGET: &str = "kube-apiserver";
pub const CLIENT_TARGET: &str = "kubelet";
pub const SERVER_OTHER: &str = "bench-server";
pub const CLIENT_OTHER: &str = "bench-client";
/// The event generator of the throughput and memory runs (the agent is given exactly
/// this target there, so every event it counts is the generator's).
pub const GENERATOR: &str = "kbench-gen";

pub struct Env {
    pub release: PathBuf,
    pub dir: PathBuf,
    /// Copies of the load binary, by name.
    pub bin: PathBuf,
    /// An empty directory used as the agent's PATH (see [`Env::agent`]).
    pub empty_path: PathBuf,
    pub log: Mutex<Vec<String>>,
}

impl Env {
    pub fn new(release: PathBuf, dir: PathBuf) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let bin = dir.join("bin");
        let empty_path = dir.join("empty-path");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(&empty_path)?;
        let load = release.join("ktrail-bench-load");
        for name in [
            SERVER_TARGET,
            CLIENT_TARGET,
            SERVER_OTHER,
            CLIENT_OTHER,
            GENERATOR,
        ] {
            std::fs::copy(&load, bin.join(name))
                .with_context(|| format!("copying {} as {name}", load.display()))?;
        }
        Ok(Self {
            release,
            dir,
            bin,
            empty_path,
            log: Mutex::new(Vec::new()),
        })
    }

    pub fn exe(&self, name: &str) -> PathBuf {
        self.release.join(name)
    }

    pub fn load(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    pub fn note(&self, line: String) {
        println!("    {line}");
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }

    /// A fresh collector on [`COLLECTOR_ADDR`] with its own data directory, optionally
    /// pinned to CPUs (`taskset -c`).
    pub fn collector(&self, tag: &str, cpus: Option<&str>) -> Result<Service> {
        self.collector_with(tag, cpus, &[])
    }

    /// [`Env::collector`] with more command-line arguments.
    pub fn collector_with(&self, tag: &str, cpus: Option<&str>, extra: &[&str]) -> Result<Service> {
        let data = self.dir.join(format!("collector-{tag}"));
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", c]).arg(self.exe("ktrail-collector"));
                cmd
            }
            None => Command::new(self.exe("ktrail-collector")),
        };
        // Plaintext, as the recorder and replayer speak it (and no TLS in the numbers).
        cmd.args(["--listen", COLLECTOR_ADDR, "--insecure"])
            .arg("--data-dir")
            .arg(&data)
            .args(extra);
        let child = ChildGuard::spawn(&format!("collector-{tag}"), cmd, &self.dir)?;
        let service = Service {
            child,
            data: Some(data),
        };
        wait_for("the collector to listen", Duration::from_secs(30), || {
            Ok(if TcpStream::connect(COLLECTOR_ADDR).is_ok() {
                Check::Done(())
            } else {
                Check::NotYet("not listening".into())
            })
        })?;
        Ok(service)
    }

    /// The Ingest recorder on [`RECORDER_ADDR`], writing to `out`.
    pub fn recorder(&self, out: &Path) -> Result<Service> {
        let mut cmd = Command::new(self.exe("ktrail-bench-ingest"));
        cmd.args(["record", "--listen", RECORDER_ADDR])
            .arg("--out")
            .arg(out);
        let child = ChildGuard::spawn("recorder", cmd, &self.dir)?;
        wait_for("the recorder to listen", Duration::from_secs(30), || {
            Ok(if TcpStream::connect(RECORDER_ADDR).is_ok() {
                Check::Done(())
            } else {
                Check::NotYet("not listening".into())
            })
        })?;
        Ok(Service { child, data: None })
    }

    /// `ktrail-agent` streaming to `collector` (an address), with `targets` (None: the
    /// default list, as users run it), waited for until attached and connected.
    ///
    /// Its PATH is an empty directory: at start the agent attaches Go TLS uprobes to
    /// target binaries found on PATH, and this machine has Debian's kubectl, containerd
    /// and runc there, which never run during a benchmark but take ~9 s to detach at
    /// every agent stop.
    pub fn agent(&self, tag: &str, collector: &str, targets: Option<&str>) -> Result<Service> {
        self.agent_with(tag, collector, targets, &[])
    }

    /// [`Env::agent`] with extra arguments.
    pub fn agent_with(
        &self,
        tag: &str,
        collector: &str,
        targets: Option<&str>,
        extra: &[&str],
    ) -> Result<Service> {
        let mut cmd = Command::new(self.exe("ktrail-agent"));
        cmd.args(extra);
        cmd.env("PATH", &self.empty_path)
            .args(["--node-name", NODE])
            .args(["--collector", &format!("http://{collector}"), "--insecure"])
            .args(["--metrics-addr", METRICS_ADDR]);
        if let Some(t) = targets {
            cmd.args(["--targets", t]);
        }
        let mut child = ChildGuard::spawn(&format!("agent-{tag}"), cmd, &self.dir)?;
        wait_for(
            "the agent to attach and connect",
            Duration::from_secs(90),
            || {
                child.ensure_running()?;
                Ok(match metrics() {
                    Ok(m) if m.get("ktrail_agent_connected") == Some(&1.0) => Check::Done(()),
                    Ok(_) => Check::NotYet("not connected yet".into()),
                    Err(e) => Check::NotYet(format!("{e:#}")),
                })
            },
        )?;
        Ok(Service { child, data: None })
    }

    /// `ktrail status --output json` from the benchmark collector.
    pub fn status(&self) -> Result<Value> {
        let mut cmd = Command::new(self.exe("ktrail"));
        cmd.args([
            "--collector",
            &format!("http://{COLLECTOR_ADDR}"),
            "--insecure",
        ])
        .args(["status", "--output", "json"]);
        let out = run_with_timeout(cmd, Duration::from_secs(20))?;
        if !out.status.success() {
            bail!(
                "`ktrail status` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("parsing `ktrail status --output json`")
    }

    /// The benchmark agent's entry in `ktrail status` (the connected one named [`NODE`]).
    pub fn agent_status(&self) -> Result<Value> {
        let status = self.status()?;
        status["agents"]
            .as_array()
            .and_then(|agents| {
                agents
                    .iter()
                    .filter(|a| a["node"] == NODE)
                    .find(|a| a["connected"] == true)
                    .cloned()
            })
            .context("`ktrail status` lists no connected agent for the bench node")
    }
}

/// A long-running process of a benchmark; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Service {
    pub child: ChildGuard,
    pub data: Option<PathBuf>,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn stop(mut self) -> Result<()> {
        terminate_children(self.child.pid());
        self.child.stop()?;
        Ok(())
    }
}

/// SIGTERMs the children of `pid` and waits (up to 5 s) for them to go: a program run
/// under strace is strace's child, and strace detaches from it on SIGTERM instead of
/// ending it.
fn terminate_children(pid: u32) {
    let mut children = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("children");
            if let Ok(list) = std::fs::read_to_string(path) {
                children.extend(
                    list.split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
        }
    }
    for &child in &children {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child, libc::SIGTERM) };
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && children
            .iter()
            .any(|c| Path::new(&format!("/proc/{c}/status")).exists() && !is_zombie(*c))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(true)
}

impl Drop for Service {
    fn drop(&mut self) {
        terminate_children(self.child.pid());
        let _ = self.child.stop();
        if let Some(data) = &self.data {
            let _ = std::fs::remove_dir_all(data);
        }
    }
}

/// The agent's /metrics: `name{labels}` → value; unlabelled counters by name alone, and
/// `ktrail_agent_events_dropped_total` also summed over its reasons.
pub fn metrics() -> Result<BTreeMap<String, f64>> {
    metrics_at(METRICS_ADDR)
}

/// [`metrics`] of the agent serving /metrics on `addr`.
pub fn metrics_at(addr: &str) -> Result<BTreeMap<String, f64>> {
    let mut conn = TcpStream::connect(addr)
        .with_context(|| format!("connecting to the agent's /metrics on {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let mut out = BTreeMap::new();
    let mut dropped = 0.0;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if key.starts_with("ktrail_agent_events_dropped_total{") {
            dropped += v;
        }
        out.insert(key.to_string(), v);
    }
    out.insert("ktrail_agent_events_dropped_total".into(), dropped);
    Ok(out)
}

pub fn metric(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or_default() as u64
}

/// Waits until the agent has sent everything and the collector stored it: queue depth 0
/// and acked = enqueued. Returns false on timeout.
pub fn wait_drained(timeout: Duration) -> Result<bool> {
    let start = Instant::now();
    loop {
        let m = metrics()?;
        if metric(&m, "ktrail_agent_queue_depth") == 0
            && metric(&m, "ktrail_agent_events_acked_total")
                == metric(&m, "ktrail_agent_events_enqueued_total")
        {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pids of running `ktrail-agent` processes. Any agent on this kernel (another
/// engineer's test or cluster) attaches the same syscall tracepoints for every process,
/// so an "untraced" baseline taken beside one is not untraced.
pub fn running_agents() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "ktrail-agent")
        })
        .collect()
}

/// CPU time (user + system) `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the parenthesised comm; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// Samples `pid`'s RSS every `every` on a thread until dropped.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(rss) = rss_bytes(pid) {
                    if let Ok(mut v) = s.lock() {
                        v.push((start.elapsed().as_secs_f64(), rss));
                    }
                }
                std::thread::sleep(every);
            }
        });
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<(f64, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Runs `cmd` to completion (output captured) and parses its last JSON line.
pub fn run_json(cmd: Command, timeout: Duration) -> Result<Value> {
    let what = format!("{cmd:?}");
    let out = run_with_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .with_context(|| format!("{what} printed no JSON: {text}"))
}

/// Starts the RPC server copy `name` (optionally under `wrapper`, e.g. strace), waits
/// for its "listening on ADDR" line and returns it with the address.
pub fn rpc_server(
    env: &Env,
    name: &str,
    wrapper: Option<Vec<String>>,
) -> Result<(Service, String)> {
    listening(env, name, wrapper, "rpc-server")
}

/// A `sink` (reads and discards) on a loopback port, for `writes --connect`.
pub fn sink(env: &Env, name: &str) -> Result<(Service, String)> {
    listening(env, name, None, "sink")
}

/// Starts the load binary copy `name` in a listening `mode` and waits for its address.
fn listening(
    env: &Env,
    name: &str,
    wrapper: Option<Vec<String>>,
    mode: &str,
) -> Result<(Service, String)> {
    let mut cmd = match &wrapper {
        Some(w) => {
            let mut cmd = Command::new(&w[0]);
            cmd.args(&w[1..]);
            cmd.arg(env.load(name));
            cmd
        }
        None => Command::new(env.load(name)),
    };
    cmd.args([mode, "--listen", "127.0.0.1:0"]);
    let tag = format!("server-{name}-{}", now_ns() % 1_000_000_000);
    let mut child = ChildGuard::spawn(&tag, cmd, &env.dir)?;
    let addr = wait_for("the load server to listen", Duration::from_secs(30), || {
        child.ensure_running()?;
        let out = child.stdout();
        Ok(
            match out.lines().find_map(|l| l.strip_prefix("listening on ")) {
                Some(a) => Check::Done(a.trim().to_string()),
                None => Check::NotYet(out),
            },
        )
    })?;
    Ok((Service { child, data: None }, addr))
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// A child whose stdout lines are read as they come, each stamped with the wall clock
/// at arrival (for `ktrail watch`). Killed on drop.
pub struct LineReader {
    child: Child,
    lines: Arc<Mutex<Vec<(u64, String)>>>,
}

impl LineReader {
    pub fn spawn(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = now_ns();
                if let Ok(mut v) = l.lock() {
                    v.push((at, line));
                }
            }
        });
        Ok(Self { child, lines })
    }

    pub fn lines(&self) -> Vec<(u64, String)> {
        self.lines.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for LineReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Free bytes on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_bavail as u64 * s.f_frsize as u64)
}
