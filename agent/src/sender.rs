//! Streams the outbox to the collector over gRPC, and reconnects with backoff when
//! the collector goes away. What was sent but not acked is sent again after a
//! reconnect; the collector ignores sequence numbers it already holds.

use std::{sync::Arc, time::Duration};

use anyhow::Context;

use ktrail_proto::client_tls::{self, ClientTls};
use ktrail_proto::v1::{agent_message::Body, AgentMessage, Hello, IngestAck, LossReport};
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::transport::Endpoint;
use tracing::{info, info_span, warn, Instrument};

use crate::{cli::Args, metrics::Metrics, outbox::Outbox, wire::RawMessage};

/// Events per batch at most. Each batch costs the collector a message, a store row and
/// an ack, and the agent a send: at high rates 1,024 took 3-5 % off both sides' CPU per
/// event against 512. Its message stays far under the collector's 64 MiB limit (4.3 MB
/// with every payload at its 4 KiB cap).
pub const MAX_BATCH: usize = 1024;
const LOSS_REPORT_EVERY: Duration = Duration::from_millis(500);

pub struct SenderConfig {
    pub collector: String,
    /// The collector's address with the TLS settings (or plaintext).
    pub endpoint: Endpoint,
    /// The TLS files, to ask the collector why it refused us (see `client_tls::probe`).
    pub tls: Option<ClientTls>,
    pub hello: Hello,
}

/// How often the connection to the collector is checked, and how long a ping or a
/// connection attempt may take.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// The collector's endpoint from the flags (validated already): mutual TLS with
/// the certificate files, read now so that a bad file stops the agent at start,
/// or plaintext with --insecure.
pub fn endpoint(args: &Args) -> anyhow::Result<(Endpoint, Option<ClientTls>)> {
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) if !args.insecure => Some(ClientTls {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            server_name: args.tls_server_name.clone(),
        }),
        _ => None,
    };
    let endpoint = client_tls::endpoint(&args.collector, tls.as_ref())
        .with_context(|| format!("--collector {}", args.collector))?
        // A cut link leaves the connection open but silent while TCP's retransmissions
        // back off (tens of seconds after a 20 s cut): HTTP/2 pings notice it, so the
        // agent reconnects and resends what was not acknowledged once the link is back.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .connect_timeout(KEEPALIVE);
    Ok((endpoint, tls))
}

pub async fn run(
    cfg: SenderConfig,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let span = info_span!("collector_stream", collector = %cfg.collector);
        let result = tokio::select! {
            r = stream_once(&cfg, &outbox, &metrics).instrument(span) => r,
            _ = shutdown.changed() => return,
        };
        metrics.set_connected(false);
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                // A refused certificate shows as a cancelled stream: ask why.
                let tls_refusal = match &cfg.tls {
                    Some(tls) => client_tls::probe(&cfg.collector, tls).await.err(),
                    None => None,
                };
                match tls_refusal.filter(|why| client_tls::hint(why).is_some()) {
                    Some(why) => warn!(collector = %cfg.collector, error = %why,
                        retry_in_ms = backoff.as_millis() as u64,
                        "the collector refused this agent's TLS certificate; retrying"),
                    None => warn!(collector = %cfg.collector, error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "collector stream ended; reconnecting"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn stream_once(
    cfg: &SenderConfig,
    outbox: &Arc<Outbox>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let channel = cfg.endpoint.connect().await?;
    let (tx, rx) = mpsc::channel::<RawMessage>(16);
    tx.send(RawMessage::of(&AgentMessage {
        body: Some(Body::Hello(cfg.hello.clone())),
    }))
    .await?;
    let mut acks = open_stream(channel, ReceiverStream::new(rx)).await?;
    metrics.set_connected(true);
    info!(node = %cfg.hello.node, agent_id = %cfg.hello.agent_id, "connected to collector");

    // Acks are read on their own task so a long run of sends never stalls them.
    let ack_outbox = Arc::clone(outbox);
    let ack_metrics = Arc::clone(metrics);
    let mut ack_task = tokio::spawn(async move {
        while let Some(ack) = acks.next().await {
            let ack =
                ack.map_err(|status| anyhow::anyhow!("collector closed the stream: {status}"))?;
            ack_outbox.ack(ack.acked_seq);
            ack_metrics.set_acked(ack.acked_seq);
        }
        anyhow::bail!("collector closed the stream")
    });
    let result = send_loop(&tx, outbox, metrics, &mut ack_task).await;
    ack_task.abort();
    result
}

/// `Ingest.Stream`, as the generated client calls it, but sending `AgentMessage`s
/// already encoded (wire.rs) through the same prost codec.
async fn open_stream(
    channel: tonic::transport::Channel,
    messages: ReceiverStream<RawMessage>,
) -> Result<tonic::Streaming<IngestAck>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    let codec = tonic::codec::ProstCodec::<RawMessage, IngestAck>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/ktrail.v1.Ingest/Stream");
    let mut request = tonic::Request::new(messages);
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new("ktrail.v1.Ingest", "Stream"));
    Ok(grpc.streaming(request, path, codec).await?.into_inner())
}

async fn send_loop(
    tx: &mpsc::Sender<RawMessage>,
    outbox: &Outbox,
    metrics: &Metrics,
    ack_task: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    // Everything not yet acked goes (again) first.
    let mut sent = outbox.acked();
    let mut report = tokio::time::interval(LOSS_REPORT_EVERY);
    loop {
        if let Some(batch) = outbox.batch_after(sent, MAX_BATCH) {
            sent = batch.last_seq;
            tx.send(batch.message).await?;
            continue;
        }
        tokio::select! {
            done = &mut *ack_task => {
                return match done {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("ack reader failed: {e}")),
                };
            }
            _ = outbox.ready.notified() => {}
            _ = report.tick() => {
                let loss = loss_report(outbox, metrics);
                tx.send(RawMessage::of(&AgentMessage { body: Some(Body::Loss(loss)) })).await?;
            }
        }
    }
}

pub fn loss_report(outbox: &Outbox, metrics: &Metrics) -> LossReport {
    let stats = outbox.stats();
    let kernel = metrics.kernel_drops();
    LossReport {
        ringbuf_full_per_cpu: kernel.ringbuf_full_per_cpu,
        inflight_full: kernel.inflight_full,
        tracked_full: kernel.tracked_full,
        read_failed: kernel.read_failed,
        buffer_full: stats.buffer_full,
        undecodable: metrics.undecodable(),
        last_seq: stats.last_seq,
        sent_unix_ns: crate::clock::now_unix_ns(),
    }
}
