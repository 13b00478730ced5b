//! The `Ingest` service: one stream per agent, Hello first, then batches
//! deduplicated by sequence number, stored, acked after commit.

mod codec;
mod event_decode;
mod loss;
mod server;
mod stream;

pub use codec::{decode_message, IngestCodec, Received};
pub use server::IngestServer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::{Hello, IngestAck};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::agents::AgentRegistry;
use crate::hops::task::HopInput;
use crate::live::LiveHub;
use crate::store::writer::StoreWriter;

/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// What ingest streams share.
#[derive(Debug)]
pub struct IngestShared {
    pub registry: Arc<AgentRegistry>,
    pub live: Arc<LiveHub>,
    pub writer: StoreWriter,
    pub hop_input: mpsc::Sender<HopInput>,
    pub shutdown: watch::Receiver<bool>,
    next_conn: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct IngestService {
    shared: Arc<IngestShared>,
}

impl IngestService {
    pub fn new(
        registry: Arc<AgentRegistry>,
        live: Arc<LiveHub>,
        writer: StoreWriter,
        hop_input: mpsc::Sender<HopInput>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(IngestShared {
                registry,
                live,
                writer,
                hop_input,
                shutdown,
                next_conn: AtomicU64::new(1),
            }),
        }
    }
}

// tonic's API is in terms of `Status`, large as it is.
#[allow(clippy::result_large_err)]
fn check_hello(first: Option<Received>) -> Result<Hello, Status> {
    let hello = match first.and_then(|m| m.message.body) {
        Some(Body::Hello(hello)) => hello,
        Some(_) => {
            return Err(Status::invalid_argument(
                "the first message of an ingest stream must be Hello",
            ))
        }
        None => {
            return Err(Status::invalid_argument(
                "the ingest stream ended before its Hello",
            ))
        }
    };
    if hello.node.is_empty() || hello.agent_id.is_empty() {
        return Err(Status::invalid_argument(
            "Hello needs a non-empty node and agent_id",
        ));
    }
    Ok(hello)
}

/// The acks going back on an ingest stream.
pub type AckStream = UnboundedReceiverStream<Result<IngestAck, Status>>;

impl IngestService {
    /// One agent's stream (`Ingest.Stream`).
    pub async fn stream(
        &self,
        request: Request<Streaming<Received>>,
    ) -> Result<Response<AckStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 30 s of opening the ingest stream")
            })??;
        let hello = check_hello(first).inspect_err(|status| {
            tracing::warn!(peer = ?peer, reason = %status.message(), "ingest stream rejected");
        })?;
        let conn_id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!("agent", node = %hello.node, agent_id = %hello.agent_id, conn = conn_id);
        let agent = stream::AgentStream::connect(self.shared.clone(), &hello, conn_id, tx)
            .instrument(span.clone())
            .await?;
        tokio::spawn(agent.run(inbound).instrument(span));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}
