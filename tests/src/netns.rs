//! Two network namespaces standing in for two Kubernetes nodes on one kernel.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{
    run_with_timeout, CONTROL, CONTROL_IP, CONTROL_NETNS, WORKER, WORKER_IP, WORKER_NETNS,
};

const PREFIX_LEN: u8 = 24;
/// The veth end's name inside each namespace, as on a real node.
const IFACE: &str = "eth0";

/// Network namespaces for the nodes `k8s-control` (192.168.56.10/24) and `k8s-worker`
/// (192.168.56.20/24), named [`CONTROL_NETNS`] and [`WORKER_NETNS`], joined by a veth
/// pair, loopback up in both. Stale namespaces of those names (from a
/// crashed run) are removed first; both are removed on drop, which also destroys the veth.
///
/// The names are fixed, so only one pair can exist at a time on the machine: creating one
/// takes an exclusive lock (`/run/lock/ktrail-netns.lock`) held until drop, so a second test
/// thread, test run or `cargo xtask demo` waits instead of tearing down the first one's
/// namespaces. Do not create a second pair while holding one: that waits for itself.
pub struct NetnsPair {
    /// Declared last so the lock is released after `drop` removed the namespaces.
    _lock: File,
}

/// How long [`NetnsPair::create`] waits for another user of the namespaces.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl NetnsPair {
    pub fn create() -> Result<Self> {
        let lock = lock_namespaces()?;
        for ns in [CONTROL_NETNS, WORKER_NETNS] {
            remove_stale(ns)?;
        }
        for ns in [CONTROL_NETNS, WORKER_NETNS] {
            ip(["netns", "add", ns])?;
        }
        // From here on a failure drops the guard, which removes what was made so far.
        let pair = Self { _lock: lock };
        ip([
            "-n",
            CONTROL_NETNS,
            "link",
            "add",
            IFACE,
            "type",
            "veth",
            "peer",
            "name",
            IFACE,
            "netns",
            WORKER_NETNS,
        ])?;
        for (ns, addr) in [(CONTROL_NETNS, CONTROL_IP), (WORKER_NETNS, WORKER_IP)] {
            let cidr = format!("{addr}/{PREFIX_LEN}");
            ip(["-n", ns, "addr", "add", &cidr, "dev", IFACE])?;
            ip(["-n", ns, "link", "set", IFACE, "up"])?;
            ip(["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [CONTROL_NETNS, WORKER_NETNS] {
            if let Err(e) = delete_if_present(ns) {
                eprintln!("ktrail-tests: could not remove network namespace {ns}: {e:#}");
            }
        }
    }
}

/// The network namespace standing in for a node: [`CONTROL`] and [`WORKER`] map to
/// their namespaces, any other name is taken as a namespace name.
pub fn netns_of(node: &str) -> &str {
    match node {
        CONTROL => CONTROL_NETNS,
        WORKER => WORKER_NETNS,
        other => other,
    }
}

/// Whether `ip netns list` shows the namespace of `name` (a node or namespace name).
pub fn netns_exists(name: &str) -> Result<bool> {
    let name = netns_of(name);
    let out = ip_output(["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(name)))
}

/// `ip netns exec <ns> <program>`: add arguments and run or spawn it. `ip` execs the
/// program, so the spawned child's pid (and comm) is the program's.
pub fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns_of(ns)]).arg(program);
    cmd
}

/// Runs `program args…` inside `ns` to completion (30 s at most) and returns its output,
/// whatever its exit status.
pub fn run_in_netns<I, S>(ns: &str, program: impl AsRef<OsStr>, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = netns_command(ns, program);
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(30))
}

/// Takes the machine-wide lock on the namespace names (released when the file closes).
fn lock_namespaces() -> Result<File> {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join("ktrail-netns.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let start = Instant::now();
    let mut said = false;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        if start.elapsed() >= LOCK_TIMEOUT {
            bail!(
                "another process has held {} for {} min: a ktrail test or `cargo xtask demo` \
                 is using the {CONTROL_NETNS}/{WORKER_NETNS} namespaces",
                path.display(),
                LOCK_TIMEOUT.as_secs() / 60
            );
        }
        if !said {
            eprintln!(
                "ktrail-tests: waiting for another ktrail test or demo to release the \
                 {CONTROL_NETNS}/{WORKER_NETNS} namespaces ({})",
                path.display()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes `ns` left behind by a crashed run — but not one that processes still use: that
/// is the local Kubernetes cluster (`cargo xtask cluster`, same names) or someone else's
/// run, and deleting it would break them.
fn remove_stale(ns: &str) -> Result<()> {
    if !netns_exists(ns)? {
        return Ok(());
    }
    let out = ip_output(["netns", "pids", ns])?;
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} {}", comm.trim())
        })
        .collect();
    if !pids.is_empty() {
        bail!(
            "network namespace {ns} exists and is in use by {} process(es) ({}): probably the \
             local Kubernetes cluster (`cargo xtask cluster down` removes it) or another \
             ktrail run; not deleting it",
            pids.len(),
            pids.join(", ")
        );
    }
    ip(["netns", "delete", ns])
}

fn delete_if_present(ns: &str) -> Result<()> {
    if netns_exists(ns)? {
        ip(["netns", "delete", ns])?;
    }
    Ok(())
}

fn ip<const N: usize>(args: [&str; N]) -> Result<()> {
    let out = ip_output(args)?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output<const N: usize>(args: [&str; N]) -> Result<Output> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_with_timeout(cmd, Duration::from_secs(30))
        .with_context(|| format!("running `ip {}` (is iproute2 installed?)", args.join(" ")))
}
