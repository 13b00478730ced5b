//! Item 5 (collector ingest and stitching with replayed agents; event → `ktrail watch`
//! delay) and item 6's collector half (RSS under 10 replayed agents).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ktrail_tests::ChildGuard;
use serde_json::Value;

use super::env::{
    cpu_seconds, free_bytes, metric, metrics, rpc_server, run_json, wait_drained, Env, LineReader,
    RssSampler, CLIENT_TARGET, COLLECTOR_ADDR, RECORDER_ADDR, SERVER_TARGET,
};
use super::report::{mib, quantile, Row, Section};

/// Agents replayed at once.
pub const AGENTS: usize = 10;
/// The collector's store limit in the memory run (`--store-max-gib`): its disk use is
/// bounded like its memory.
const STORE_MAX_GIB: u64 = 2;
/// The memory run stops early when the disk holding the store has less than this
/// free (the disk is shared; the store itself stays near `STORE_MAX_GIB`).
const MIN_FREE_DISK: u64 = 1 << 30;

/// Records a real agent stream: `ktrail-agent` (kube-apiserver and kubelet targets) sends
/// to the Ingest recorder while `rounds` 1 KiB RPC round trips run.
pub fn record(env: &Env, rounds: u64) -> Result<(PathBuf, u64)> {
    let out = env.dir.join("recording.bin");
    let recorder = env.recorder(&out)?;
    let agent = env.agent(
        "record",
        RECORDER_ADDR,
        Some(&format!("{SERVER_TARGET},{CLIENT_TARGET}")),
    )?;
    let (server, addr) = rpc_server(env, SERVER_TARGET, None)?;
    let mut cmd = Command::new(env.load(CLIENT_TARGET));
    cmd.args(["rpc-client", "--connect", &addr, "--size", "1024"])
        .args(["--rounds", &rounds.to_string()]);
    run_json(cmd, Duration::from_secs(300))?;
    server.stop()?;
    wait_drained(Duration::from_secs(60))?;
    let m = metrics()?;
    let events = metric(&m, "ktrail_agent_events_acked_total");
    let dropped = metric(&m, "ktrail_agent_events_dropped_total");
    agent.stop()?;
    recorder.stop()?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    env.note(format!(
        "recording for items 5a/6b: {events} events ({:.1} MiB) from {rounds} RPC round \
         trips; the agent reported {dropped} dropped",
        mib(size)
    ));
    Ok((out, events))
}

fn replay_cmd(env: &Env, recording: &Path, extra: &[String]) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(env.exe("ktrail-bench-ingest"))
        .args(["replay", "--collector", &format!("http://{COLLECTOR_ADDR}")])
        .arg("--input")
        .arg(recording)
        .args(["--agents", &AGENTS.to_string()])
        .args(extra);
    cmd
}

fn hops_total(env: &Env) -> Result<u64> {
    Ok(env.status()?["hops_total"].as_u64().unwrap_or(0))
}

/// 5a: unpaced replay from 10 fake agents into a collector pinned to CPU 0.
pub fn ingest(env: &Env, recording: &Path, recorded: u64, seconds: f64) -> Result<Section> {
    let collector = env.collector("ingest", Some("0"))?;
    let cpu_before = cpu_seconds(collector.pid());
    let cmd = replay_cmd(
        env,
        recording,
        &["--duration-s".into(), seconds.to_string()],
    );
    let out = run_json(cmd, Duration::from_secs(900))?;
    let cpu_ingest = cpu_seconds(collector.pid()) - cpu_before;
    let acked = out["acked"].as_u64().unwrap_or(0);
    let acked_s = out["acked_s"].as_f64().unwrap_or(f64::NAN);
    let rate = out["events_per_s"].as_f64().unwrap_or(0.0);
    // Hops are assembled beside the store: wait until their count settles.
    let mut hops = hops_total(env)?;
    let settle = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let now = hops_total(env)?;
        if now == hops || settle.elapsed() > Duration::from_secs(30) {
            hops = now;
            break;
        }
        hops = now;
    }
    let stitched_s = acked_s + settle.elapsed().as_secs_f64();
    let rss = super::env::rss_bytes(collector.pid()).unwrap_or(0);
    let store_bytes = collector.data.as_deref().map(dir_size).unwrap_or(0);
    collector.stop()?;
    // The collector's core is shared with whatever else runs on this machine: the
    // events per second of CPU it actually got say what it would do on a core of
    // its own (stitching that went on after the last ack is counted against it).
    let cpu_share = cpu_ingest / acked_s;
    let per_cpu_s = acked as f64 / cpu_ingest;
    let rows = vec![Row::new(
        "5",
        "collector ingest (stored + acked) on one core, 10 replayed agents",
        "≥ 500,000 events/s",
        format!(
            "{rate:.0} events/s ({acked} events in {acked_s:.1} s; the collector got {:.0} % \
             of its core: {per_cpu_s:.0} events per CPU-second); {hops} hops stitched",
            cpu_share * 100.0
        ),
        Some(rate >= 500_000.0),
    )];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Recording: a real `ktrail-agent` (targets kube-apiserver, kubelet) streaming to \
         `ktrail-bench-ingest record` (a stand-in collector speaking `Ingest`, acking at \
         once) during 1 KiB RPC round trips: {recorded} events, 4 per round trip (each \
         carrying 1 KiB of data) plus process events. Replay: `ktrail-bench-ingest replay` \
         (`taskset -c 1`) opens {AGENTS} Ingest streams (Hello with nodes replay-0…9), each \
         sending the recording's batches renumbered, timestamps moved to now and addresses \
         rewritten per agent and pass, as fast as the collector takes them for {seconds:.0} s; \
         `ktrail-collector` runs under `taskset -c 0` with a fresh store. Rate = events \
         acknowledged (stored) / time from the first send to the last ack. Hops assembled \
         from them: {hops}, settled {stitched_s:.1} s after the start (ingest and stitching \
         run side by side, so events/s ingested is also the stitched rate). Collector RSS at \
         the end: {:.0} MiB; store on disk: {:.0} MiB ({:.0} bytes per event, events and hops, \
         zstd level 1: the replayed payloads are the load's repeated bytes, so they compress \
         far better than real traffic). The collector used {cpu_ingest:.1} s of CPU between \
         the first send and the last ack ({:.0} % of the {acked_s:.1} s: its core is shared \
         with other work on this machine), i.e. {per_cpu_s:.0} events per CPU-second.\n",
        mib(rss),
        mib(store_bytes),
        store_bytes as f64 / acked.max(1) as f64,
        cpu_share * 100.0
    );
    Ok(Section {
        title: "Item 5a: collector ingest with 10 replayed agents".into(),
        rows,
        body,
    })
}

/// 5b: delay from the last event of an exchange to its hop line on `ktrail watch`.
pub fn latency(env: &Env, seconds: f64) -> Result<Section> {
    let collector = env.collector("latency", None)?;
    let agent = env.agent("latency", COLLECTOR_ADDR, None)?;
    let mut watch_cmd = Command::new(env.exe("ktrail"));
    watch_cmd
        .args([
            "--collector",
            &format!("http://{COLLECTOR_ADDR}"),
            "--insecure",
        ])
        .args(["watch", "--output", "json"]);
    let watch = LineReader::spawn(watch_cmd)?;
    std::thread::sleep(ktrail_tests::SUBSCRIBE_GRACE);
    let (server, addr) = rpc_server(env, SERVER_TARGET, None)?;
    let interval_ms = 20u64;
    let rounds = (seconds * 1000.0 / interval_ms as f64) as u64;
    let mut cmd = Command::new(env.load(CLIENT_TARGET));
    cmd.args(["rpc-client", "--connect", &addr, "--size", "1024"])
        .args(["--rounds", &rounds.to_string(), "--per-connection"])
        .args(["--interval-us", &(interval_ms * 1000).to_string()]);
    run_json(cmd, Duration::from_secs(600))?;
    std::thread::sleep(Duration::from_secs(2));
    let lines = watch.lines();
    drop(watch);
    server.stop()?;
    agent.stop()?;
    collector.stop()?;

    let mut delays_ms = Vec::new();
    for (arrived, line) in &lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["type"] != "hop" || v["client"]["comm"] != CLIENT_TARGET {
            continue;
        }
        let start = v["start_unix_ns"].as_u64().unwrap_or(0);
        let dur = v["duration_ns"].as_u64().unwrap_or(0);
        if start == 0 {
            continue;
        }
        delays_ms.push((*arrived as f64 - (start + dur) as f64) / 1e6);
    }
    let p = |q| quantile(&delays_ms, q).unwrap_or(f64::NAN);
    let (p50, p99, max) = (p(0.5), p(0.99), p(1.0));
    let rows = vec![Row::new(
        "5",
        "event → its hop on `ktrail watch --output json`, p99",
        "≤ 100 ms",
        format!(
            "p99 {p99:.1} ms (p50 {p50:.1}, max {max:.1}; {} of {rounds} hops)",
            delays_ms.len()
        ),
        Some(!delays_ms.is_empty() && p99 <= 100.0),
    )];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A collector, an agent (default targets) and `ktrail watch --output json` run; a \
         `kubelet` copy makes {rounds} requests to a `kube-apiserver` copy, one TCP connection \
         each (connect, 1 KiB request, 1 KiB response, close), one every {interval_ms} ms. \
         The close ends the exchange, so the hop can be emitted at once (with keep-alive \
         connections the collector waits for the next request or 100 ms of quiet: that wait \
         is by design and not measured here). Delay = wall clock when the harness read the \
         hop's line − (`start_unix_ns` + `duration_ns`), i.e. from the response's last event \
         (same machine, same clock). Hops seen: {}; p50 {p50:.1} ms, p99 {p99:.1} ms, max \
         {max:.1} ms.\n",
        delays_ms.len()
    );
    Ok(Section {
        title: "Item 5b: event-to-watch delay".into(),
        rows,
        body,
    })
}

/// 6b: collector RSS while 10 replayed agents send at `rate` events/s each.
pub fn memory(
    env: &Env,
    recording: &Path,
    rate: u64,
    seconds: f64,
    every: Duration,
) -> Result<Section> {
    // Disk is bounded like memory: beyond STORE_MAX_GIB the oldest events and hops
    // are deleted (counted in the collector's log).
    let collector = env.collector_with(
        "memory",
        Some("0"),
        &["--store-max-gib", &STORE_MAX_GIB.to_string()],
    )?;
    let store = collector.data.clone().context("collector data dir")?;
    let sampler = RssSampler::start(collector.pid(), every);
    let cmd = replay_cmd(
        env,
        recording,
        &[
            "--rate".into(),
            rate.to_string(),
            "--duration-s".into(),
            seconds.to_string(),
            "--progress-ms".into(),
            every.as_millis().to_string(),
        ],
    );
    let mut replay = ChildGuard::spawn("replay-memory", cmd, &env.dir)?;
    let start = Instant::now();
    let mut stopped_for_disk = None;
    while replay.try_status()?.is_none() {
        if free_bytes(&store).is_some_and(|f| f < MIN_FREE_DISK) {
            stopped_for_disk = Some(start.elapsed().as_secs_f64());
            replay.signal(libc::SIGKILL)?;
            break;
        }
        if start.elapsed() > Duration::from_secs_f64(seconds + 600.0) {
            replay.signal(libc::SIGKILL)?;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = replay.wait_timeout(Duration::from_secs(30));
    let samples = sampler.finish();
    let progress: Vec<Value> = replay
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let store_bytes = dir_size(&store);
    let cpu = cpu_seconds(collector.pid());
    collector.stop()?;
    let log = std::fs::read_to_string(env.dir.join("collector-memory.stderr")).unwrap_or_default();
    let evictions = log
        .lines()
        .rfind(|l| l.contains("store retention"))
        .map(str::to_string);

    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let done = progress.iter().find(|v| v["type"] == "done");
    let acked = progress
        .iter()
        .filter_map(|v| v["acked"].as_u64())
        .max()
        .unwrap_or(0);
    let elapsed = done
        .and_then(|d| d["acked_s"].as_f64())
        .unwrap_or_else(|| start.elapsed().as_secs_f64());
    let achieved = acked as f64 / elapsed;
    let rows = vec![Row::new(
        "6",
        &format!(
            "collector RSS, 10 replayed agents at {rate} events/s each for {:.0} s",
            seconds
        ),
        "≤ 512 MiB, bounded",
        format!(
            "peak {:.0} MiB, last {:.0} MiB; achieved {:.0} events/s in all",
            mib(peak),
            mib(last),
            achieved
        ),
        Some(peak <= 512 << 20),
    )];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Collector under `taskset -c 0`, fresh store; the replayer (`taskset -c 1`) paces \
         each of {AGENTS} agents at {rate} events/s ({} in all) for {seconds:.0} s; when the \
         collector takes less, the gRPC streams push back and the achieved rate is lower. \
         Acknowledged {acked} events in {elapsed:.1} s = {achieved:.0} events/s (the \
         collector used {cpu:.0} s of CPU). Store at the end: {:.0} MiB on disk, \
         `--store-max-gib {STORE_MAX_GIB}`{}.{}\n",
        rate * AGENTS as u64,
        mib(store_bytes),
        match evictions {
            Some(line) => format!(
                "; the last retention log line: `{}`",
                line.split_whitespace()
                    .filter(|w| w.contains('='))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            None => String::from(" (nothing deleted)"),
        },
        match stopped_for_disk {
            Some(t) => format!(
                " Stopped after {t:.0} s: less than {} GiB free on the store's disk.",
                MIN_FREE_DISK >> 30
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        body,
        "| t (s) | collector RSS (MiB) | events acked so far |"
    );
    let _ = writeln!(body, "|---|---|---|");
    let stride = (samples.len() / 40).max(1);
    for (i, (t, rss)) in samples.iter().enumerate() {
        if i % stride != 0 && i + 1 != samples.len() {
            continue;
        }
        let acked_then = progress
            .iter()
            .filter(|v| v["type"] == "progress")
            .filter(|v| v["t_s"].as_f64().unwrap_or(f64::MAX) <= *t)
            .filter_map(|v| v["acked"].as_u64())
            .max()
            .unwrap_or(0);
        let _ = writeln!(body, "| {t:.0} | {:.0} | {acked_then} |", mib(*rss));
    }
    Ok(Section {
        title: "Item 6b: collector memory under 10 replayed agents".into(),
        rows,
        body,
    })
}

/// Bytes a directory takes on disk.
fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let m = e.metadata();
                    match m {
                        Ok(m) if m.is_dir() => dir_size(&e.path()),
                        // Blocks, not length: redb's file is sparse ahead of use.
                        Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                        Err(_) => 0,
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
