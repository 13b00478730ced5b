//! Item 6, the agent's half: its RSS while a target produces 100k events/s.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::env::{
    metric, metrics, run_json, sink, Env, RssSampler, COLLECTOR_ADDR, GENERATOR, SERVER_OTHER,
};
use super::report::{mib, Row, Section};

pub fn agent(env: &Env, rate: u64, seconds: f64, every: Duration) -> Result<Section> {
    let collector = env.collector("agent-memory", None)?;
    let agent = env.agent("memory", COLLECTOR_ADDR, Some(GENERATOR))?;
    // To a socket: the agent captures the bytes of socket writes only.
    let (sink_server, sink_addr) = sink(env, SERVER_OTHER)?;
    let at_start = super::env::rss_bytes(agent.pid())?;
    let m0 = metrics()?;
    let sampler = RssSampler::start(agent.pid(), every);
    let count = (rate as f64 * seconds) as u64;
    let mut cmd = Command::new(env.load(GENERATOR));
    cmd.args(["writes", "--connect", &sink_addr, "--size", "256"])
        .args(["--count", &count.to_string(), "--rate", &rate.to_string()]);
    let out = run_json(cmd, Duration::from_secs_f64(seconds * 3.0 + 60.0))?;
    let samples = sampler.finish();
    let m1 = metrics()?;
    agent.stop()?;
    collector.stop()?;
    sink_server.stop()?;

    let achieved = count as f64 / (out["ns"].as_f64().unwrap_or(f64::NAN) / 1e9);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let d = |name: &str| metric(&m1, name) - metric(&m0, name);
    let queue_peak = metric(&m1, "ktrail_agent_queue_depth");
    let rows = vec![Row::new(
        "6",
        &format!("agent RSS at a steady {rate} events/s (256-byte socket writes)"),
        "≤ 64 MiB",
        format!(
            "peak {:.0} MiB, last {:.0} MiB (idle {:.0} MiB); achieved {achieved:.0} events/s",
            mib(peak),
            mib(last),
            mib(at_start)
        ),
        Some(peak <= 64 << 20),
    )];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "`ktrail-agent --targets kbench-gen` connected to a collector; a `kbench-gen` copy \
         writes 256-byte buffers to a TCP loopback connection (an untraced `sink` reads \
         them; every event carries its 256 bytes) at {rate}/s for {seconds:.0} s (achieved \
         {achieved:.0}/s); agent VmRSS sampled every {} ms. Over the run the agent read {} \
         events, dropped {} (buffer_full {}), and {} were still queued for the collector at \
         the end.\n",
        every.as_millis(),
        d("ktrail_agent_events_total"),
        d("ktrail_agent_events_dropped_total"),
        d("ktrail_agent_events_dropped_total{reason=\"buffer_full\"}"),
        queue_peak,
    );
    let _ = writeln!(body, "| t (s) | agent RSS (MiB) |");
    let _ = writeln!(body, "|---|---|");
    let stride = (samples.len() / 30).max(1);
    for (i, (t, rss)) in samples.iter().enumerate() {
        if i % stride == 0 || i + 1 == samples.len() {
            let _ = writeln!(body, "| {t:.1} | {:.0} |", mib(*rss));
        }
    }
    Ok(Section {
        title: "Item 6a: agent memory".into(),
        rows,
        body,
    })
}
