//! Starting and stopping the collector: store, writer, hop assembly, and the
//! gRPC server with both services on one address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ktrail_proto::v1::query_server::QueryServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::agents::AgentRegistry;
use crate::error::{CollectorError, StoreError};
use crate::export::{self, ExportStats, OtlpConfig, OtlpExporter};
use crate::hops::{self, AssemblerStats, HopConfig};
use crate::ingest::{IngestServer, IngestService};
use crate::live::LiveHub;
use crate::metadata::{self, ClusterMetadata, MetadataSource};
use crate::query::QueryService;
use crate::shutdown;
use crate::store::writer::{self, WriterConfig, WriterStats};
use crate::store::Store;
use crate::tls::{self, TlsFiles};
use crate::web::{self, WebConfig};

/// Largest agent message accepted (a batch of events with payloads).
pub const MAX_AGENT_MESSAGE: usize = 64 * 1024 * 1024;

/// HTTP/2 flow-control window of each connection and stream: how much an agent may send
/// beyond what ingest has taken. Ingest pauses while the store writer's queue is full
/// (a commit, up to a few tens of ms), and an agent's stream must not stall for that:
/// with h2's default 64 KiB a single agent got ~130,000 events/s of 256 bytes through
/// with the collector at 19 % of a core, and dropped the rest (item 4 of
/// BENCHMARKS.md); with 2 MiB it still dropped at 400,000/s, with 4 MiB none up to
/// 500,000/s. It is also what the collector holds per agent while ingest waits
/// (10 agents: 40 MiB, within item 6b's bound).
const INGEST_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// How the collector runs.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Hops kept in memory for `Watch` replay and `ListHops`.
    pub window_hops: usize,
    pub hops: HopConfig,
    pub writer: WriterConfig,
    /// How long each stage of shutdown may take before it is cut short.
    pub shutdown_grace: Duration,
    /// Mutual TLS (clients need a certificate signed by the CA); `None` serves
    /// plaintext (`ktrail-collector --insecure`).
    pub tls: Option<TlsFiles>,
    /// Serve the web page and its API here (`--web-listen`); `None`: no page.
    pub web: Option<WebConfig>,
    /// Export each flow when it closes to this OTLP endpoint (`--otlp-endpoint`).
    pub otlp: Option<OtlpConfig>,
    /// Label hops with pods and nodes watched on this API server; `None`: no
    /// labels.
    pub metadata: Option<MetadataSource>,
}

impl CollectorConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            window_hops: 10_000,
            hops: HopConfig::default(),
            writer: WriterConfig::default(),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            web: None,
            otlp: None,
            metadata: None,
        }
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    local_addr: SocketAddr,
    web_addr: Option<SocketAddr>,
    export_stats: Option<Arc<ExportStats>>,
    store: Store,
    shutdown_tx: watch::Sender<bool>,
    grace: Duration,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    hop_task: Option<JoinHandle<AssemblerStats>>,
    writer: Option<JoinHandle<Result<WriterStats, StoreError>>>,
}

enum Stopped {
    Server(Result<Result<(), tonic::transport::Error>, JoinError>),
    Writer(Result<Result<WriterStats, StoreError>, JoinError>),
}

async fn join<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match handle {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

fn task_error(task: &'static str, reason: impl ToString) -> CollectorError {
    CollectorError::Task {
        task,
        reason: reason.to_string(),
    }
}

impl Collector {
    /// Opens the store, starts the background tasks and serves `Ingest` and
    /// `Query` on `cfg.listen` (port 0 picks one: see [`Collector::local_addr`]).
    pub async fn start(cfg: CollectorConfig) -> Result<Self, CollectorError> {
        // Bad TLS files are reported before anything else starts.
        let tls_config = cfg.tls.as_ref().map(tls::server_config).transpose()?;
        let kube = match &cfg.metadata {
            Some(source) => Some(metadata::client(source).await?),
            None => None,
        };
        let store = Store::open(&cfg.data_dir)?;
        let loaded = store.load(cfg.window_hops)?;
        info!(
            path = %store.path().display(),
            agents = loaded.agents.len(),
            hops_total = loaded.hops_total,
            "store opened"
        );
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|error| CollectorError::Bind {
                    addr: cfg.listen,
                    error,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| CollectorError::Bind {
                addr: cfg.listen,
                error,
            })?;

        let registry = Arc::new(AgentRegistry::from_stored(loaded.agents));
        let stored_flows = store.flows(crate::live::FLOW_WINDOW)?;
        let live = Arc::new(LiveHub::with_flows(
            cfg.window_hops,
            loaded.recent_hops,
            loaded.hops_total,
            stored_flows,
        ));
        let max_store_bytes = cfg.writer.max_store_bytes;
        let (store_writer, writer_task) = writer::spawn(store.clone(), cfg.writer);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let cluster = kube.map(|client| {
            let map = Arc::new(ClusterMetadata::new());
            metadata::spawn(client, map.clone(), shutdown_rx.clone());
            map
        });
        let (hop_input, hop_task) =
            hops::task::spawn(cfg.hops, live.clone(), store_writer.clone(), cluster);
        let ingest = IngestService::new(
            registry.clone(),
            live.clone(),
            store_writer,
            hop_input,
            shutdown_rx.clone(),
        );
        let web_addr = match cfg.web {
            Some(web_cfg) => {
                let store = Some(store.clone());
                let server = web::start(web_cfg, live.clone(), store, shutdown_rx.clone()).await?;
                Some(server.local_addr)
            }
            None => None,
        };
        let export_stats = match cfg.otlp {
            Some(otlp) => {
                let (exporter, _sender) = OtlpExporter::spawn(otlp, shutdown_rx.clone())?;
                let stats = exporter.stats().clone();
                let store = Some(store.clone());
                export::on_close::spawn(exporter, live.clone(), store, shutdown_rx.clone());
                Some(stats)
            }
            None => None,
        };
        let query = QueryService::new(registry, live, shutdown_rx.clone())
            .with_store(store.clone(), max_store_bytes);
        let router = Server::builder()
            .initial_stream_window_size(INGEST_WINDOW_BYTES)
            .initial_connection_window_size(INGEST_WINDOW_BYTES)
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(IngestServer::new(ingest, MAX_AGENT_MESSAGE))
            .add_service(QueryServer::new(query));
        let stop = shutdown::requested(shutdown_rx);
        let mtls = tls_config.is_some();
        let server = match tls_config {
            Some(config) => tokio::spawn(
                router.serve_with_incoming_shutdown(tls::incoming(listener, config), stop),
            ),
            None => tokio::spawn(
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop),
            ),
        };
        info!(addr = %local_addr, window_hops = cfg.window_hops, mtls, "collector listening");
        Ok(Self {
            local_addr,
            web_addr,
            export_stats,
            store,
            shutdown_tx,
            grace: cfg.shutdown_grace,
            server: Some(server),
            hop_task: Some(hop_task),
            writer: Some(writer_task),
        })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The web page's address, when it is served.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    /// OTLP export counters, when flows are exported.
    pub fn export_stats(&self) -> Option<&Arc<ExportStats>> {
        self.export_stats.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves only if the server or the store writer stops by itself, with
    /// why. Cancel-safe: use it in a `select!` next to the shutdown signal.
    pub async fn failed(&mut self) -> CollectorError {
        let stopped = tokio::select! {
            r = join(&mut self.server) => Stopped::Server(r),
            r = join(&mut self.writer) => Stopped::Writer(r),
        };
        match stopped {
            Stopped::Server(r) => {
                self.server = None;
                match r {
                    Ok(Ok(())) => task_error("gRPC server", "stopped unexpectedly"),
                    Ok(Err(e)) => CollectorError::Serve(e),
                    Err(e) => task_error("gRPC server", e),
                }
            }
            Stopped::Writer(r) => {
                self.writer = None;
                match r {
                    Ok(Ok(_)) => task_error("store writer", "stopped unexpectedly"),
                    Ok(Err(e)) => CollectorError::Store(e),
                    Err(e) => task_error("store writer", e),
                }
            }
        }
    }

    /// Stops serving (agent streams and watchers are closed), emits the hops
    /// still being assembled and commits everything to the store.
    pub async fn shutdown(mut self) -> Result<(), CollectorError> {
        info!("collector shutting down");
        let _ = self.shutdown_tx.send(true);
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            match tokio::time::timeout(self.grace, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
                Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
                Err(_) => {
                    warn!("gRPC server did not stop in time; dropping its connections");
                    abort.abort();
                }
            }
        }
        // Hop assembly ends once the ingest streams are gone; the writer once
        // hop assembly is (each holds the next one's sender).
        if let Some(task) = self.hop_task.take() {
            match tokio::time::timeout(self.grace, task).await {
                Ok(Ok(stats)) => info!(hops = stats.hops_emitted, "hop assembly flushed"),
                Ok(Err(e)) => warn!(error = %e, "hop assembly task failed"),
                Err(_) => warn!("hop assembly did not stop in time"),
            }
        }
        let Some(writer) = self.writer.take() else {
            return Err(task_error("store writer", "had already stopped"));
        };
        match tokio::time::timeout(self.grace, writer).await {
            Ok(Ok(Ok(stats))) => {
                info!(
                    commits = stats.commits,
                    events = stats.events,
                    hops = stats.hops,
                    "store flushed"
                );
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => Err(task_error("store writer", e)),
            Err(_) => Err(task_error(
                "store writer",
                "did not finish its last commit in time",
            )),
        }
    }
}
