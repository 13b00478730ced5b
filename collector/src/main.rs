//! `ktrail-collector`: the cluster-wide collector of ktrail agents' events.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ktrail_collector::export::OtlpConfig;
use ktrail_collector::scheduling::{self, Scheduling};
use ktrail_collector::store::writer::WriterConfig;
use ktrail_collector::web::WebConfig;
use ktrail_collector::{Collector, CollectorConfig};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

// Ingest allocates and frees many small buffers per event (decoded strings and
// payloads, hops): glibc's malloc was about a fifth of the collector's CPU.
// `--features system-alloc` leaves it out, for heap profilers that hook malloc (heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchedulingArg {
    /// The normal policy, asking for 0.3-ms time slices instead of the kernel's ~1.4 ms.
    ShortSlices,
    /// SCHED_IDLE: run only on CPU time nothing else on the node wants.
    Idle,
    /// The kernel's defaults (SCHED_OTHER, nice 0, default slices).
    Default,
}

impl From<SchedulingArg> for Scheduling {
    fn from(arg: SchedulingArg) -> Self {
        match arg {
            SchedulingArg::ShortSlices => Scheduling::ShortSlices,
            SchedulingArg::Idle => Scheduling::Idle,
            SchedulingArg::Default => Scheduling::Default,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Receives ktrail agents' event streams, stores them, pairs both ends of each
/// connection into hops, and serves hops, syscalls and agent status to `ktrail`.
#[derive(Debug, Parser)]
#[command(name = "ktrail-collector", version)]
struct Args {
    /// Address to serve both gRPC services (agents' Ingest and the CLI's Query) on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7700")]
    listen: SocketAddr,

    /// Directory for the store (DIR/ktrail.redb); created when missing. Reused
    /// across restarts: agents' sequence numbers survive, so resent events are
    /// recognised as duplicates.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Most recent hops kept in memory for `ktrail watch --replay` and ListHops.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    window_hops: u64,

    /// The collector's TLS certificate (PEM). Mutual TLS is the default: with
    /// --tls-key and --tls-ca, only clients whose certificate the CA signed are
    /// served. `cargo xtask certs` makes a set.
    #[arg(
        long,
        env = "KTRAIL_TLS_CERT",
        value_name = "FILE",
        required_unless_present = "insecure"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "KTRAIL_TLS_KEY",
        value_name = "FILE",
        required_unless_present = "insecure"
    )]
    tls_key: Option<PathBuf>,

    /// The CA (PEM) that signed the agents' and the CLI's certificates.
    #[arg(
        long,
        env = "KTRAIL_TLS_CA",
        value_name = "FILE",
        required_unless_present = "insecure"
    )]
    tls_ca: Option<PathBuf>,

    /// Label hops with pods, namespaces, owners and nodes, watched on the API
    /// server with the pod's service account (needs get/list/watch on pods and
    /// nodes: deploy/base/rbac.yaml).
    #[arg(long, conflicts_with = "kubeconfig")]
    in_cluster: bool,

    /// Like --in-cluster, with this kubeconfig's current context.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Serve plaintext gRPC without TLS: anyone who reaches --listen can read
    /// everything traced. Only for tests and a collector on a private address.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    insecure: bool,

    /// zstd level of the stored events and hops: 1 (several hundred MB/s on one core),
    /// higher for smaller, negative (down to -7) for faster; 0 stores them uncompressed.
    #[arg(long, value_name = "LEVEL", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(-7..=19))]
    store_compression: i32,

    /// Keep the store's file within this many GiB on disk: the oldest events and hops
    /// are deleted to make room, counted and logged. The file holds more than its
    /// rows (B-tree pages, pages freed for reuse), so fewer rows fit than the cap
    /// says; the collector measures the file and keeps that many. 0 keeps everything.
    #[arg(long, value_name = "GIB", default_value_t = 0.0)]
    store_max_gib: f64,

    /// Serve the web page on this address (plain HTTP, read-only): the flows as a
    /// live swimlane timeline, hop details on click, and its JSON API (/api/flows,
    /// /api/flows/ID, /api/live). Open http://ADDR/ in a browser. Anyone who
    /// reaches it reads every flow: bind a private address, use --web-token, or
    /// reach it through `kubectl port-forward`.
    #[arg(long, value_name = "ADDR")]
    web_listen: Option<SocketAddr>,

    /// Require this token of every web request (open http://ADDR/?token=TOKEN;
    /// API clients may send `Authorization: Bearer TOKEN`).
    #[arg(
        long,
        env = "KTRAIL_WEB_TOKEN",
        value_name = "TOKEN",
        requires = "web_listen",
        hide_env_values = true
    )]
    web_token: Option<String>,

    /// Export every flow when it closes as an OpenTelemetry trace (a span per hop)
    /// to this OTLP/gRPC endpoint, e.g. http://jaeger:4317. Sent from a bounded
    /// queue with retries; flows that cannot be sent are dropped, counted and logged.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// How the collector's threads share the node's CPUs with the control plane it
    /// watches. `idle` (SCHED_IDLE, and the idle I/O class): the collector never
    /// delays anything, and on a saturated node falls behind: its agents buffer and,
    /// once full, drop events, counted in `ktrail status`. `short-slices`: a component
    /// that wakes up waits at most 0.3 ms for a CPU the collector holds, and the
    /// collector keeps its fair share when the CPUs are saturated. `default`: the
    /// kernel's.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "idle")]
    scheduling: SchedulingArg,

    /// Log format on stderr. Verbosity: RUST_LOG (default "info").
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("installing the SIGINT handler")?;
            Ok("SIGINT")
        }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let format = args.log_format;
    init_logging(format);
    // Before the runtime: its threads inherit the policy. A failure (a seccomp profile
    // that forbids the call) leaves the kernel's defaults, which only cost the traced
    // components some CPU, so it is logged, not fatal.
    let scheduling = Scheduling::from(args.scheduling);
    match scheduling::apply(scheduling) {
        Ok(()) => info!(?scheduling, "collector threads scheduled"),
        Err(error) => warn!(%error, ?scheduling, "kept the kernel's default scheduling"),
    }
    let result = tokio::runtime::Runtime::new()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Json => tracing::error!(error = %format!("{e:#}"), "collector failed"),
                LogFormat::Text => eprintln!("ktrail-collector: error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let window_hops = usize::try_from(args.window_hops).context("--window-hops is too large")?;
    let tls = match (args.insecure, args.tls_cert, args.tls_key, args.tls_ca) {
        (true, ..) => None,
        (false, Some(cert), Some(key), Some(ca)) => {
            Some(ktrail_collector::tls::TlsFiles { cert, key, ca })
        }
        // clap requires all three unless --insecure.
        _ => anyhow::bail!("pass --tls-cert, --tls-key and --tls-ca, or --insecure"),
    };
    let writer = WriterConfig {
        compression_level: args.store_compression,
        max_store_bytes: (args.store_max_gib.max(0.0) * (1u64 << 30) as f64) as u64,
        ..WriterConfig::default()
    };
    let metadata = match (args.in_cluster, args.kubeconfig) {
        (true, _) => Some(ktrail_collector::metadata::MetadataSource::InCluster),
        (false, Some(path)) => Some(ktrail_collector::metadata::MetadataSource::Kubeconfig(path)),
        (false, None) => None,
    };
    let cfg = CollectorConfig {
        window_hops,
        metadata,
        writer,
        tls,
        web: args.web_listen.map(|listen| WebConfig {
            listen,
            token: args.web_token,
        }),
        otlp: args.otlp_endpoint.map(OtlpConfig::new),
        ..CollectorConfig::new(args.listen, &args.data_dir)
    };
    let mut collector = Collector::start(cfg).await.with_context(|| {
        format!(
            "starting the collector (--listen {}, --data-dir {})",
            args.listen,
            args.data_dir.display()
        )
    })?;
    tokio::select! {
        signal = wait_for_signal() => {
            info!(signal = signal?, "stopping");
        }
        err = collector.failed() => {
            return Err(anyhow::Error::new(err).context("the collector stopped"));
        }
    }
    collector.shutdown().await.context("shutting down")?;
    info!("collector stopped");
    Ok(())
}
