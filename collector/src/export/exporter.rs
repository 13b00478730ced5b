//! Sending closed flows to an OTLP/gRPC endpoint without ever holding up
//! stitching: flows go into a bounded queue (`offer` never waits; a full
//! queue drops the flow, counted and logged), one task sends them in order,
//! retrying a failed send with exponential backoff before giving it up
//! (counted and logged too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktrail_proto::v1::{Flow, Hop};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::otlp::{trace_id_hex, trace_request};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// Where and how flows are exported.
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// gRPC OTLP endpoint, e.g. `http://jaeger:4317`.
    pub endpoint: String,
    /// Flows waiting to be sent; beyond this new flows are dropped.
    pub queue: usize,
    /// Attempts per flow (the first send and its retries).
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time limit of one send (connecting included).
    pub timeout: Duration,
}

impl OtlpConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            queue: 1024,
            attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Running totals, for logs and tests.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub spans: AtomicU64,
    /// Flows dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Flows given up after every attempt failed.
    pub failed: AtomicU64,
    pub retries: AtomicU64,
}

impl ExportStats {
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

struct Job {
    flow: Flow,
    hops: Vec<Hop>,
}

/// The sending side, cheap to clone.
#[derive(Clone, Debug)]
pub struct OtlpExporter {
    tx: mpsc::Sender<Job>,
    stats: Arc<ExportStats>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({}, {} hops)", self.flow.id, self.hops.len())
    }
}

impl OtlpExporter {
    /// Starts the sending task; it ends when `shutdown` turns true (after the
    /// flow in hand) or every `OtlpExporter` is dropped (after the queue).
    pub fn spawn(
        cfg: OtlpConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, JoinHandle<()>), ExportError> {
        let endpoint = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| ExportError::Endpoint {
                endpoint: cfg.endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout);
        let channel = endpoint.connect_lazy();
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let stats = Arc::new(ExportStats::default());
        let task = tokio::spawn(run(cfg, channel, rx, stats.clone(), shutdown));
        Ok((Self { tx, stats }, task))
    }

    /// Queues a flow for export; never waits. False (counted, logged) when the
    /// queue is full or the task has stopped.
    pub fn offer(&self, flow: Flow, hops: Vec<Hop>) -> bool {
        match self.tx.try_send(Job { flow, hops }) {
            Ok(()) => true,
            Err(e) => {
                let job = match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                };
                let dropped = self
                    .stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                // Every drop while few, then every hundredth.
                if dropped <= 10 || dropped.is_multiple_of(100) {
                    warn!(
                        flow_id = %job.flow.id,
                        dropped_total = dropped,
                        "OTLP export queue full: flow not exported"
                    );
                }
                false
            }
        }
    }

    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }
}

async fn run(
    cfg: OtlpConfig,
    channel: Channel,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<ExportStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client = TraceServiceClient::new(channel);
    info!(endpoint = %cfg.endpoint, queue = cfg.queue, "OTLP export started");
    loop {
        let job = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = shutdown.changed() => break,
        };
        let spans = job.hops.len() as u64;
        let started = Instant::now();
        if send(&cfg, &mut client, &job, &stats, &mut shutdown).await {
            stats.exported.fetch_add(1, Ordering::Relaxed);
            stats.spans.fetch_add(spans, Ordering::Relaxed);
            debug!(
                flow_id = %job.flow.id,
                trace_id = %trace_id_hex(&job.flow.id),
                spans,
                ms = started.elapsed().as_millis() as u64,
                "flow exported"
            );
        } else {
            let failed = stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                flow_id = %job.flow.id,
                failed_total = failed,
                endpoint = %cfg.endpoint,
                "OTLP export gave up on a flow"
            );
        }
    }
    info!(
        exported = stats.exported(),
        dropped_queue_full = stats.dropped_queue_full.load(Ordering::Relaxed),
        failed = stats.failed.load(Ordering::Relaxed),
        "OTLP export stopped"
    );
}

/// Sends one flow, retrying with backoff; false when every attempt failed or
/// shutdown came first.
async fn send(
    cfg: &OtlpConfig,
    client: &mut TraceServiceClient<Channel>,
    job: &Job,
    stats: &ExportStats,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let request = trace_request(&job.flow, &job.hops);
    let mut backoff = cfg.initial_backoff;
    for attempt in 1..=cfg.attempts.max(1) {
        match client.export(request.clone()).await {
            Ok(reply) => {
                if let Some(p) = reply.into_inner().partial_success {
                    if p.rejected_spans > 0 {
                        warn!(
                            flow_id = %job.flow.id,
                            rejected_spans = p.rejected_spans,
                            message = %p.error_message,
                            "OTLP endpoint rejected spans"
                        );
                    }
                }
                return true;
            }
            Err(status) => {
                warn!(
                    flow_id = %job.flow.id,
                    attempt,
                    code = ?status.code(),
                    error = %status.message(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "OTLP export failed"
                );
                if attempt == cfg.attempts.max(1) {
                    break;
                }
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return false,
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: &str) -> Flow {
        Flow {
            id: id.into(),
            ..Flow::default()
        }
    }

    /// Nothing listens on the endpoint: the first flow is retried and given
    /// up, the ones beyond the queue are dropped at once; `offer` never waits.
    #[tokio::test]
    async fn a_full_queue_drops_and_an_unreachable_endpoint_gives_up_counted() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let cfg = OtlpConfig {
            queue: 2,
            attempts: 2,
            initial_backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(500),
            ..OtlpConfig::new(format!("http://127.0.0.1:{port}"))
        };
        let (_stop_tx, stop_rx) = watch::channel(false);
        let (exp, task) = OtlpExporter::spawn(cfg, stop_rx).expect("spawn");
        let started = Instant::now();
        let accepted = (0..10)
            .filter(|i| exp.offer(flow(&format!("f-{i:016x}")), Vec::new()))
            .count();
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "offer waited"
        );
        // The task may have taken the first from the queue already.
        assert!((2..=3).contains(&accepted), "{accepted}");
        let stats = exp.stats().clone();
        assert_eq!(
            stats.dropped_queue_full.load(Ordering::Relaxed),
            10 - accepted as u64
        );
        drop(exp);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the task ends once the queue is drained")
            .expect("task");
        assert_eq!(stats.failed.load(Ordering::Relaxed), accepted as u64);
        assert_eq!(stats.retries.load(Ordering::Relaxed), accepted as u64);
        assert_eq!(stats.exported(), 0);
        assert_eq!(stats.dropped(), 10);
    }

    #[test]
    fn a_bad_endpoint_is_refused_at_start() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        let (_tx, rx) = watch::channel(false);
        let err = OtlpExporter::spawn(OtlpConfig::new("not a uri"), rx).expect_err("bad uri");
        assert!(err.to_string().contains("not a uri"), "{err}");
    }
}
