//! Item 4: the highest event rate delivered with zero drops (256-byte payloads), and the
//! loss accounting at twice that rate.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::env::{
    metric, metrics, run_json, sink, wait_drained, Env, COLLECTOR_ADDR, GENERATOR, SERVER_OTHER,
};
use super::report::{Row, Section};

pub struct Config {
    /// Requested rates, ascending (events/s).
    pub rates: Vec<u64>,
    pub seconds: f64,
    pub drain_timeout: Duration,
    /// Extra steps halving the gap between the last clean and the first unclean rate.
    pub bisect: usize,
}

const PAYLOAD: usize = 256;

/// Loss counters the collector holds for the agent (`ktrail status`), summed.
fn collector_loss(agent: &Value) -> u64 {
    let loss = &agent["loss"];
    [
        "ringbuf_full",
        "inflight_full",
        "tracked_full",
        "read_failed",
        "buffer_full",
        "undecodable",
    ]
    .iter()
    .map(|k| loss[*k].as_u64().unwrap_or(0))
    .sum()
}

#[derive(Debug, Clone, Default)]
struct Step {
    requested: u64,
    writes: u64,
    achieved: f64,
    delivered: u64,
    agent_dropped: u64,
    ringbuf_dropped: u64,
    buffer_full: u64,
    collector_dropped: u64,
    drained: bool,
}

struct Counters {
    received: u64,
    collector_loss: u64,
    dropped: u64,
    ringbuf: u64,
    buffer_full: u64,
}

fn counters(env: &Env) -> Result<Counters> {
    let agent = env.agent_status()?;
    let m = metrics()?;
    Ok(Counters {
        received: agent["events_received"].as_u64().unwrap_or(0),
        collector_loss: collector_loss(&agent),
        dropped: metric(&m, "ktrail_agent_events_dropped_total"),
        ringbuf: metric(
            &m,
            "ktrail_agent_events_dropped_total{reason=\"ringbuf_full\"}",
        ),
        buffer_full: metric(
            &m,
            "ktrail_agent_events_dropped_total{reason=\"buffer_full\"}",
        ),
    })
}

/// Runs the generator for `count` writes at `rate` to the sink at `sink`, waits until
/// everything is delivered and the loss report is current, and returns the deltas.
fn step(env: &Env, cfg: &Config, sink: &str, count: u64, rate: u64) -> Result<Step> {
    let before = counters(env)?;
    let mut cmd = Command::new(env.load(GENERATOR));
    cmd.args(["writes", "--connect", sink, "--size", &PAYLOAD.to_string()])
        .args(["--count", &count.to_string(), "--rate", &rate.to_string()]);
    let out = run_json(cmd, Duration::from_secs(600))?;
    let ns = out["ns"].as_f64().unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_millis(300));
    let drained = wait_drained(cfg.drain_timeout)?;
    // The agent reports loss every 500 ms: wait for a report after the run.
    std::thread::sleep(Duration::from_millis(1200));
    let after = counters(env)?;
    Ok(Step {
        requested: rate,
        writes: count,
        achieved: count as f64 / (ns / 1e9),
        delivered: after.received - before.received,
        agent_dropped: after.dropped - before.dropped,
        ringbuf_dropped: after.ringbuf - before.ringbuf,
        buffer_full: after.buffer_full - before.buffer_full,
        collector_dropped: after.collector_loss - before.collector_loss,
        drained,
    })
}

pub fn run(env: &Env, cfg: &Config) -> Result<Section> {
    let collector = env.collector("throughput", None)?;
    let agent = env.agent("throughput", COLLECTOR_ADDR, Some(GENERATOR))?;
    // The generator writes to a TCP connection: the agent captures the bytes of socket
    // writes only, so writes to /dev/null would carry no payload.
    let (sink_server, sink_addr) = sink(env, SERVER_OTHER)?;
    let sink = sink_addr.as_str();

    // Events of one generator run beside its writes: exec, the loader's openat/read/close,
    // the connect and its TCP state changes, the result line on stdout, exit. The same
    // every run; measured twice with no writes (and no drops) to be sure.
    let c1 = step(env, cfg, sink, 0, 0)?;
    let c2 = step(env, cfg, sink, 0, 0)?;
    let overhead = c1.delivered;
    let calibration_ok = c1.delivered == c2.delivered && c1.agent_dropped + c2.agent_dropped == 0;
    env.note(format!(
        "throughput: per-run overhead events {} and {}",
        c1.delivered, c2.delivered
    ));

    let mut steps = Vec::new();
    let mut best: Option<Step> = None;
    let mut first_unclean = None;
    let run_step = |rate: u64, steps: &mut Vec<Step>| -> Result<(Step, bool)> {
        let count = (rate as f64 * cfg.seconds) as u64;
        let s = step(env, cfg, sink, count, rate)?;
        println!("    {s:?}");
        let clean = s.agent_dropped == 0 && s.delivered == count + overhead;
        steps.push(s.clone());
        Ok((s, clean))
    };
    for &rate in &cfg.rates {
        let (s, clean) = run_step(rate, &mut steps)?;
        if clean {
            best = Some(s);
        } else {
            first_unclean = Some(rate);
            break;
        }
    }
    // Narrow down between the last clean rate and the first that was not.
    for _ in 0..cfg.bisect {
        let (Some(lo), Some(hi)) = (best.as_ref().map(|b| b.requested), first_unclean) else {
            break;
        };
        let mid = (lo + hi) / 2 / 1000 * 1000;
        if mid <= lo || mid >= hi {
            break;
        }
        let (s, clean) = run_step(mid, &mut steps)?;
        if clean {
            best = Some(s);
        } else {
            first_unclean = Some(mid);
        }
    }
    steps.sort_by_key(|s| s.requested);
    // Twice the best zero-drop rate (or the lowest tried if none was clean).
    let base_rate = best
        .as_ref()
        .map(|b| b.requested)
        .or_else(|| cfg.rates.first().copied())
        .context("no rates configured")?;
    let double = step(
        env,
        cfg,
        sink,
        (2.0 * base_rate as f64 * cfg.seconds) as u64,
        2 * base_rate,
    )?;
    println!("    2x: {double:?}");
    agent.stop()?;
    collector.stop()?;
    sink_server.stop()?;

    let generated = double.writes + overhead;
    let missing = generated as i64 - double.delivered as i64;
    let exact = calibration_ok
        && double.drained
        && missing == double.agent_dropped as i64
        && double.agent_dropped == double.collector_dropped;

    let best_rate = best.as_ref().map(|b| b.achieved).unwrap_or(0.0);
    let rows = vec![
        Row::new(
            "4",
            "highest sustained rate with zero drops, 256-byte socket writes (agent → collector, delivered)",
            "≥ 500,000 events/s",
            match &best {
                Some(b) => format!(
                    "{:.0} events/s (requested {}/s for {:.0} s)",
                    b.achieved, b.requested, cfg.seconds
                ),
                None => format!("none: drops already at {}/s", base_rate),
            },
            Some(best_rate >= 500_000.0),
        ),
        Row::new(
            "4",
            "at twice that rate: agent drops = generated − delivered, and = collector's loss counters",
            "exact",
            format!(
                "generated {generated}, delivered {}, missing {missing}; agent /metrics dropped {} \
                 (ringbuf_full {}, buffer_full {}); `ktrail status` loss {}",
                double.delivered,
                double.agent_dropped,
                double.ringbuf_dropped,
                double.buffer_full,
                double.collector_dropped
            ),
            Some(exact),
        ),
    ];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "A `kbench-gen` copy of the load binary writes 256-byte buffers to a TCP loopback \
         connection (to a `bench-server` copy in `sink` mode, untraced, that reads and \
         discards them; the agent captures the bytes of socket writes only, so every event \
         carries its 256 bytes), paced at the requested rate for {:.0} s; the agent runs with `--targets kbench-gen` so \
         every event it counts is the generator's, connected to a collector on the same \
         machine. After each run the harness waits until the agent's queue is empty and \
         acknowledged, then for a fresh loss report, and takes differences of the agent's \
         `/metrics` (`ktrail_agent_events_dropped_total`, all reasons) and of the \
         collector's `ktrail status --output json` (`events_received`, the `loss` \
         counters). A step is clean when nothing was dropped and every event arrived. \
         Rates go up until a step is not clean, then {} steps halve the gap.\n\n\
         Events generated per run = writes + {overhead} (exec, the dynamic loader's \
         openat/read/close, the connect and the connection's TCP state changes, the result \
         line, close, exit; measured twice with zero writes: {} and {}).\n",
        cfg.seconds, cfg.bisect, c1.delivered, c2.delivered
    );
    let _ = writeln!(
        body,
        "| requested/s | achieved/s | writes | delivered | agent dropped | ringbuf_full | buffer_full | collector loss | drained |"
    );
    let _ = writeln!(body, "|---|---|---|---|---|---|---|---|---|");
    for s in steps.iter().chain(std::iter::once(&double)) {
        let _ = writeln!(
            body,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            s.requested,
            s.achieved,
            s.writes,
            s.delivered,
            s.agent_dropped,
            s.ringbuf_dropped,
            s.buffer_full,
            s.collector_dropped,
            s.drained
        );
    }
    Ok(Section {
        title: "Item 4: throughput and loss accounting".into(),
        rows,
        body,
    })
}
