//! `cargo xtask soak`: many kubectl operations against the traced local cluster, every
//! operation's flow checked, the agents' and collector's memory sampled over time.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ktrail_tests::traced::{kubectl_control, s, Traced};
use ktrail_tests::{target_dir, ClusterLock};
use serde_json::{json, Value};

use crate::util::{elapsed, require_root};

pub const LONG_ABOUT: &str = "\
Run N kubectl operations in a loop against the local cluster traced by ktrail, and check
that every operation's flow is complete.

Without --attach: takes the cluster lock, brings the cluster up traced (cluster/trace.sh
start, as the flows test does) with state in target/soak, and stops tracing at the end.
With --attach STATE: uses the cluster that `cluster/trace.sh start BIN STATE` traces (the
caller holds the cluster lock, or this takes it).

The operations, from k8s-control (where its agent traces kubectl), in cycles:
  configmap: create, get, patch, delete of soak-cm-N      (4 operations)
  pod, every --pod-every cycles: run soak-pod-N (waited Ready), delete it   (2 operations)
Each operation's flow must appear, closed, in the expected state (settled; a delete's
\"deleted\"; a pod's \"Running\"), with its hops: the request answered 2xx and, for
writes, the etcd write of the object's key (CRI StartContainer on k8s-worker for pods).

Samples the RSS of the collector and both agents every --sample-secs into OUT/rss.tsv,
prints progress, and writes OUT/summary.json (ops, ops/s, flows complete/incomplete with
examples, RSS min/max per process, the agents' loss counters). Exits non-zero if a
kubectl operation failed or a flow was incomplete. Needs root.";

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// kubectl operations to run.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub ops: u64,
    /// Use the cluster traced by `cluster/trace.sh start BIN STATE` instead of starting one.
    #[arg(long, value_name = "STATE")]
    pub attach: Option<PathBuf>,
    /// Where to write rss.tsv and summary.json (default: STATE/soak).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// A pod cycle instead of a configmap cycle every this many cycles (0: no pods).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub pod_every: u64,
    /// Seconds between RSS samples.
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub sample_secs: u64,
}

/// One operation's flow, as it must come out.
#[derive(Debug, Clone)]
struct Expect {
    op: u64,
    title: String,
    /// `state_reason` must start with this.
    reason: &'static str,
    check: HopCheck,
    issued: Instant,
}

#[derive(Debug, Clone)]
enum HopCheck {
    /// kubectl's request answered 2xx.
    Answered,
    /// ... and the etcd write of this key.
    EtcdWrite(String),
    /// ... and this pod's RunPodSandbox and a StartContainer on k8s-worker.
    PodStarted(String),
}

/// Flows are checked once this old (settled 2 s after the last hop, then a 5 s linger).
const SETTLE: Duration = Duration::from_secs(9);
/// A flow not closed, in the expected state, by then is incomplete.
const GIVE_UP: Duration = Duration::from_secs(120);
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(150);
/// Flows judged at once.
const CHECK_THREADS: usize = 4;

#[derive(Default)]
struct Tally {
    complete: AtomicU64,
    incomplete: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn incomplete(&self, e: &Expect, why: String) {
        self.incomplete.fetch_add(1, Relaxed);
        let mut ex = self.examples.lock().unwrap_or_else(|p| p.into_inner());
        if ex.len() < 20 {
            ex.push(format!("op {} {:?}: {why}", e.op, e.title));
        }
    }
}

pub fn run(args: SoakArgs) -> Result<()> {
    require_root("soak")?;
    if args.ops == 0 {
        bail!("--ops 0: nothing to run; give the number of kubectl operations, e.g. --ops 100");
    }
    // The caller (a test, or `flock`) may hold the lock already.
    let _lock = std::env::var_os("KTRAIL_CLUSTER_LOCKED")
        .is_none()
        .then(ClusterLock::take);
    let traced = match &args.attach {
        Some(state) => Traced::attach(state)?,
        None => {
            println!("==> cluster/trace.sh start (cluster down and up again, traced)");
            Traced::start(&target_dir().join("soak"), "")?
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| traced.state().join("soak"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let summary = soak(&traced, &args, &out)?;
    let text = serde_json::to_string_pretty(&summary)?;
    std::fs::write(out.join("summary.json"), &text)?;
    println!(
        "\n==> summary ({})\n{text}",
        out.join("summary.json").display()
    );
    let failed = summary["kubectl_failed"].as_u64().unwrap_or(0);
    let incomplete = summary["flows_incomplete"].as_u64().unwrap_or(0);
    if failed > 0 || incomplete > 0 {
        bail!(
            "{failed} kubectl operations failed, {incomplete} flows incomplete (examples in {})",
            out.join("summary.json").display()
        );
    }
    Ok(())
}

fn soak(traced: &Traced, args: &SoakArgs, out: &Path) -> Result<Value> {
    let start = Instant::now();
    let done_ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let pids: Vec<(String, u32)> = ["collector", "agent-k8s-control", "agent-k8s-worker"]
        .iter()
        .map(|n| Ok((n.to_string(), traced.pid(n)?)))
        .collect::<Result<_>>()?;
    let sampler = {
        let (pids, done_ops, stop) = (pids.clone(), done_ops.clone(), stop.clone());
        let path = out.join("rss.tsv");
        let every = Duration::from_secs(args.sample_secs.max(1));
        std::thread::spawn(move || sample_rss(&path, &pids, &done_ops, &stop, every))
    };
    let (tx, rx) = mpsc::channel::<Expect>();
    let checker = {
        let (tally, state) = (tally.clone(), traced.state().to_path_buf());
        std::thread::spawn(move || check_flows(&Traced::attach(&state)?, &rx, &tally))
    };

    let mut failed = 0u64;
    let mut failures = Vec::new();
    let mut op = 0u64;
    let mut cycle = 0u64;
    let progress_every = (args.ops / 50).clamp(10, 200);
    println!("==> {} kubectl operations", args.ops);
    while op < args.ops {
        let pod = args.pod_every > 0 && cycle % args.pod_every == args.pod_every - 1;
        let steps = if pod {
            pod_cycle(cycle)
        } else {
            cm_cycle(cycle)
        };
        cycle += 1;
        for (argv, expect) in steps {
            if op >= args.ops {
                break;
            }
            let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
            let ok = match kubectl_control(&refs, KUBECTL_TIMEOUT) {
                Ok(o) if o.status.success() => true,
                Ok(o) => {
                    note_failure(
                        &mut failures,
                        op,
                        &refs,
                        &String::from_utf8_lossy(&o.stderr),
                    );
                    false
                }
                Err(e) => {
                    note_failure(&mut failures, op, &refs, &format!("{e:#}"));
                    false
                }
            };
            if let Some(mut e) = expect {
                if ok {
                    e.op = op;
                    e.issued = Instant::now();
                    tx.send(e).context("the flow checker stopped")?;
                } else {
                    failed += 1;
                }
                op += 1;
                done_ops.store(op, Relaxed);
                if op.is_multiple_of(progress_every) || op == args.ops {
                    print_progress(op, args.ops, start, &tally, &pids);
                }
            } else if !ok {
                // A helper step (kubectl wait): its failure shows in the pod's flow.
                eprintln!("[soak] helper step {refs:?} failed");
            }
        }
    }
    drop(tx);
    println!("==> waiting for the last flows to close");
    checker
        .join()
        .map_err(|_| anyhow::anyhow!("the flow checker panicked"))??;
    stop.store(true, Relaxed);
    let rss = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the RSS sampler panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    let status = traced.status()?;
    let agents: Vec<Value> = status["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["connected"] == true)
        .map(|a| {
            json!({"node": a["node"], "events_received": a["events_received"],
                   "contiguous_seq": a["contiguous_seq"], "loss": a["loss"]})
        })
        .collect();
    let examples = tally
        .examples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(json!({
        "ops": op,
        "seconds": (secs * 10.0).round() / 10.0,
        "ops_per_s": ((op as f64 / secs) * 100.0).round() / 100.0,
        "kubectl_failed": failed,
        "kubectl_failures": failures,
        "flows_complete": tally.complete.load(Relaxed),
        "flows_incomplete": tally.incomplete.load(Relaxed),
        "incomplete_examples": examples,
        "rss_kib": rss,
        "rss_curve": out.join("rss.tsv"),
        "agents": agents,
    }))
}

fn note_failure(failures: &mut Vec<String>, op: u64, argv: &[&str], why: &str) {
    eprintln!("[soak] op {op}: kubectl {argv:?} failed: {}", why.trim());
    if failures.len() < 20 {
        failures.push(format!("op {op}: kubectl {argv:?}: {}", why.trim()));
    }
}

fn print_progress(op: u64, total: u64, start: Instant, tally: &Tally, pids: &[(String, u32)]) {
    let rss: Vec<String> = pids
        .iter()
        .map(|(n, p)| format!("{n} {} MiB", rss_kib(*p).unwrap_or(0) / 1024))
        .collect();
    println!(
        "[soak] {op}/{total} ops, {:.2} ops/s, {}: flows complete {}, incomplete {}; RSS {}",
        op as f64 / start.elapsed().as_secs_f64(),
        elapsed(start),
        tally.complete.load(Relaxed),
        tally.incomplete.load(Relaxed),
        rss.join(", ")
    );
}

type Step = (Vec<String>, Option<Expect>);

fn expect(title: String, reason: &'static str, check: HopCheck) -> Option<Expect> {
    Some(Expect {
        op: 0,
        title,
        reason,
        check,
        issued: Instant::now(),
    })
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// create, get, patch, delete of one configmap.
fn cm_cycle(n: u64) -> Vec<Step> {
    let name = format!("soak-cm-{n}");
    let key = format!("/registry/configmaps/default/{name}");
    let title = |method: &str| format!("kubectl {method} configmaps default/{name}");
    let literal = format!("--from-literal=k=v{n}");
    let patch = format!(r#"{{"data":{{"k":"p{n}"}}}}"#);
    vec![
        (
            argv(&["create", "configmap", &name, &literal]),
            expect(title("POST"), "", HopCheck::EtcdWrite(key.clone())),
        ),
        (
            argv(&["get", "configmap", &name, "-o", "name"]),
            expect(title("GET"), "", HopCheck::Answered),
        ),
        (
            argv(&["patch", "configmap", &name, "-p", &patch]),
            expect(title("PATCH"), "", HopCheck::EtcdWrite(key.clone())),
        ),
        (
            argv(&["delete", "configmap", &name]),
            expect(title("DELETE"), "deleted", HopCheck::EtcdWrite(key)),
        ),
    ]
}

/// run (waited Ready: a helper step, not counted) and delete of one pod.
fn pod_cycle(n: u64) -> Vec<Step> {
    let name = format!("soak-pod-{n}");
    let running: &'static str = "pod ";
    vec![
        (
            argv(&["run", &name, "--image=nginx"]),
            expect(
                format!("kubectl POST pods default/{name}"),
                running,
                HopCheck::PodStarted(name.clone()),
            ),
        ),
        (
            argv(&[
                "wait",
                "--for=condition=Ready",
                &format!("pod/{name}"),
                "--timeout=120s",
            ]),
            None,
        ),
        (
            argv(&["delete", "pod", &name, "--grace-period=1"]),
            expect(
                format!("kubectl DELETE pods default/{name}"),
                "deleted",
                HopCheck::EtcdWrite(format!("/registry/pods/default/{name}")),
            ),
        ),
    ]
}

/// Checks each expected flow once it had time to close; returns when `rx` is closed and
/// nothing is pending.
fn check_flows(traced: &Traced, rx: &mpsc::Receiver<Expect>, tally: &Tally) -> Result<()> {
    let mut pending: VecDeque<Expect> = VecDeque::new();
    let mut open = true;
    while open || !pending.is_empty() {
        // Gather what arrived, waiting a little when nothing is due.
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(e) => pending.push_back(e),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let due = pending
            .front()
            .is_some_and(|e| e.issued.elapsed() >= SETTLE);
        if !due {
            if !open {
                std::thread::sleep(Duration::from_millis(500));
            }
            continue;
        }
        let limit = (pending.len() * 3 + 500).min(10_000);
        let flows = match traced.flows(limit) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("[soak] ktrail flows failed (retrying): {e:#}");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        let mut by_title: HashMap<&str, Vec<&Value>> = HashMap::new();
        for f in &flows {
            by_title.entry(s(f, &["title"])).or_default().push(f);
        }
        let (due, later): (Vec<Expect>, Vec<Expect>) = pending
            .drain(..)
            .partition(|e| e.issued.elapsed() >= SETTLE);
        // `ktrail show` per flow takes ~0.3 s, mostly waiting on the collector: judged
        // on a few threads, the checks keep up with the operations.
        let verdicts: Vec<Verdict> = std::thread::scope(|scope| {
            let chunk = due.len().div_ceil(CHECK_THREADS).max(1);
            let by_title = &by_title;
            let handles: Vec<_> = due
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|e| judge(traced, e, by_title.get(e.title.as_str())))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        // Oldest first, as they were issued.
        let mut keep = Vec::new();
        for (e, verdict) in due.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Complete => {
                    tally.complete.fetch_add(1, Relaxed);
                }
                Verdict::NotYet(_) if e.issued.elapsed() < GIVE_UP => keep.push(e),
                Verdict::NotYet(why) | Verdict::Incomplete(why) => tally.incomplete(&e, why),
            }
        }
        keep.extend(later);
        pending = keep.into();
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

enum Verdict {
    Complete,
    NotYet(String),
    Incomplete(String),
}

fn judge(traced: &Traced, e: &Expect, found: Option<&Vec<&Value>>) -> Verdict {
    let flow = match found.map(Vec::as_slice) {
        None | Some([]) => return Verdict::NotYet("no flow with this title".into()),
        Some([f]) => *f,
        Some(many) => return Verdict::Incomplete(format!("{} flows with this title", many.len())),
    };
    if flow["closed"] != true {
        return Verdict::NotYet(format!(
            "not closed: {} {}",
            flow["state"], flow["state_reason"]
        ));
    }
    if flow["state"] != "settled" || !s(flow, &["state_reason"]).starts_with(e.reason) {
        return Verdict::Incomplete(format!(
            "closed {} ({}), expected settled ({}…)",
            flow["state"], flow["state_reason"], e.reason
        ));
    }
    let hops = match traced.hops(flow) {
        Ok(h) => h,
        Err(err) => return Verdict::NotYet(format!("ktrail show: {err:#}")),
    };
    let answered = hops.iter().any(|h| {
        s(h, &["client", "comm"]).starts_with("kubectl")
            && h["status_code"]
                .as_u64()
                .is_some_and(|c| (200..300).contains(&c))
    });
    if !answered {
        return Verdict::Incomplete(format!(
            "no 2xx answer to kubectl among {} hops",
            hops.len()
        ));
    }
    let ok = match &e.check {
        HopCheck::Answered => true,
        HopCheck::EtcdWrite(key) => hops.iter().any(|h| {
            s(h, &["etcd", "op"]).starts_with("Txn")
                && h["etcd"]["keys"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == key.as_str()))
        }),
        HopCheck::PodStarted(name) => {
            let on_worker = |h: &Value, method: &str| {
                s(h, &["cri", "method"]) == method && s(h, &["client", "node"]) == "k8s-worker"
            };
            hops.iter()
                .any(|h| on_worker(h, "RunPodSandbox") && s(h, &["cri", "pod_name"]) == name)
                && hops.iter().any(|h| on_worker(h, "StartContainer"))
        }
    };
    if ok {
        Verdict::Complete
    } else {
        Verdict::Incomplete(format!("{:?} missing among {} hops", e.check, hops.len()))
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes `seconds ops NAME…` rows until `stop`; returns min/max/first/last per process.
fn sample_rss(
    path: &Path,
    pids: &[(String, u32)],
    ops: &AtomicU64,
    stop: &AtomicBool,
    every: Duration,
) -> Result<Value> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    writeln!(
        file,
        "seconds\tops\t{}",
        names
            .iter()
            .map(|n| format!("{n}_rss_kib"))
            .collect::<Vec<_>>()
            .join("\t")
    )?;
    let start = Instant::now();
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    loop {
        let row: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p).unwrap_or(0)).collect();
        for (i, v) in row.iter().enumerate() {
            seen[i].push(*v);
        }
        writeln!(
            file,
            "{:.1}\t{}\t{}",
            start.elapsed().as_secs_f64(),
            ops.load(Relaxed),
            row.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("\t")
        )?;
        file.flush()?;
        if stop.load(Relaxed) {
            break;
        }
        let t = Instant::now();
        while t.elapsed() < every && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut out = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let v = &seen[i];
        out.insert(
            name.to_string(),
            json!({
                "min": v.iter().min(), "max": v.iter().max(),
                "first": v.first(), "last": v.last(), "samples": v.len(),
            }),
        );
    }
    Ok(Value::Object(out))
}
