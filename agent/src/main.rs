//! ktrail-agent: see `cli.rs` for what it does and its flags.

mod btf;
mod caps;
mod cli;
mod clock;
mod convert;
mod decode;
mod ebpf;
mod exclude;
mod gotls;
mod metrics;
mod outbox;
mod procfs;
mod reader;
mod ring;
mod scan;
mod sender;
mod syscall_wire;
mod tracefs;
mod wire;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use ktrail_agent_common::{AgentConfig, TargetPattern};
use ktrail_proto::v1::Hello;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    cli::{Args, Scope},
    metrics::Metrics,
    outbox::Outbox,
};

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(&args.log_format);
    if let Err(e) = args.validate() {
        anyhow::bail!("{e} (see ktrail-agent --help)");
    }
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(hostname);
    let (endpoint, collector_tls) = sender::endpoint(&args)?;
    let tracefs = tracefs::ensure_mounted()?;
    tracefs::verify_layouts(&tracefs)?;
    let offsets = btf::Btf::from_sys_fs()?.kernel_offsets()?;
    let scope_netns = match args.scope()? {
        Scope::All => 0,
        Scope::Netns(n) => n,
        Scope::OwnNetns => procfs::netns_of("self").context("reading /proc/self/ns/net")?,
    };
    let targets: Vec<TargetPattern> = args
        .targets
        .iter()
        .filter_map(|t| TargetPattern::new(t.as_bytes()))
        .collect();
    let config = AgentConfig {
        scope_netns,
        payload_bytes: args.payload_bytes,
        offsets,
    };

    let mut programs = ebpf::Programs::load(&config, &targets)?;
    programs.attach_process_tracking()?;
    let procs = scan::read_proc();
    let selected = scan::select(&procs, &targets, scope_netns, std::process::id());
    let seeded = programs.seed_tracked(&selected)?;
    programs.attach_syscalls_and_tcp(args.empty_syscall_programs)?;
    info!(node = %node, scope_netns, targets = ?args.targets, tracked_at_start = seeded, "programs attached");
    let drops = programs.drops_reader()?;
    let ring = programs.take_ring()?;
    let tracked = programs.take_tracked()?;

    // Go TLS: instrument target binaries on PATH and those already running, before
    // reporting ready, so a kubectl started right after is seen from its first byte.
    let mut tls = gotls::attach::GoTlsAttacher::new(programs);
    if let Err(e) = tls.load() {
        warn!(error = %e, "Go TLS uprobes unavailable: TLS traffic will show as ciphertext only");
    }
    for path in gotls::attach::GoTlsAttacher::binaries_on_path(&targets) {
        tls.instrument(&path);
    }
    for pid in selected.keys() {
        tls.instrument(std::path::Path::new(&format!("/proc/{pid}/exe")));
    }
    let tls_counters = Arc::clone(&tls.counters);
    let (tls_tx, tls_rx) = std::sync::mpsc::channel::<Option<std::path::PathBuf>>();
    // Resolving a binary reads and decodes it: keep that off the async runtime.
    let tls_thread = std::thread::spawn(move || {
        while let Ok(Some(path)) = tls_rx.recv() {
            tls.instrument(&path);
        }
        // Dropping the attacher drops the programs: every probe is detached here.
        drop(tls);
    });

    let outbox = Arc::new(Outbox::bounded(args.buffer_events, args.buffer_bytes));
    let metrics = Arc::new(Metrics::default());
    for pid in selected.keys() {
        if let Some(info) = procfs::process_info(*pid) {
            outbox.push_process(info);
        }
    }
    metrics.set_ready(seeded as u64);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(exclude::run(tracked, shutdown_rx.clone()));
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let hello = Hello {
        node: node.clone(),
        agent_id: format!("{node}-{}-{started_ms}", std::process::id()),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
        scope_netns,
    };
    let sender = tokio::spawn(sender::run(
        sender::SenderConfig {
            collector: args.collector.clone(),
            endpoint,
            tls: collector_tls,
            hello,
        },
        Arc::clone(&outbox),
        Arc::clone(&metrics),
        shutdown_rx.clone(),
    ));
    let metrics_addr = args.metrics_addr;
    let (m, o) = (Arc::clone(&metrics), Arc::clone(&outbox));
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(metrics_addr, m, o).await {
            warn!(addr = %metrics_addr, error = %e, "metrics endpoint failed");
        }
    });
    let m = Arc::clone(&metrics);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            m.set_kernel_drops(ebpf::read_drops(&drops));
        }
    });

    metrics.set_go_tls(tls_counters);
    let reader = reader::Reader::new(
        clock::WallClock::new(args.clock_offset_ms),
        Arc::clone(&outbox),
        Arc::clone(&metrics),
        tls_tx.clone(),
    );
    tokio::select! {
        () = reader.run(ring) => {}
        _ = shutdown_signal() => info!("shutting down"),
    }

    // Detach first (the attacher thread drops the programs), then let the sender flush.
    let _ = tls_tx.send(None);
    let _ = tls_thread.join();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while outbox.stats().queued > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = shutdown_tx.send(true);
    let _ = sender.await;
    let s = outbox.stats();
    info!(
        last_seq = s.last_seq,
        acked = s.acked_seq,
        unsent = s.queued,
        buffer_full = s.buffer_full,
        "agent stopped"
    );
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
