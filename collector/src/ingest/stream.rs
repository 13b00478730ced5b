//! One agent's ingest stream after its Hello.

use std::sync::Arc;

use bytes::Bytes;
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::{Event, EventBatch, Hello, IngestAck, LossReport, TracedEvent};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::codec::Received;
use super::loss::loss_since;
use super::IngestShared;
use crate::agents::{apply_seq, AgentHandle, SeqVerdict};
use crate::clock::unix_now_ns;
use crate::flows::LossWindow;
use crate::hops::is_relevant;
use crate::hops::task::HopInput;
use crate::shutdown;
use crate::store::batch::{self, RowBody};
use crate::store::writer::{AckTarget, EncodedEvents, EventsWrite, WriterClosed};

type AckSender = mpsc::UnboundedSender<Result<IngestAck, Status>>;

pub(super) struct AgentStream {
    shared: Arc<IngestShared>,
    conn_id: u64,
    node: Arc<str>,
    agent_id: Arc<str>,
    agent: AgentHandle,
    acks: AckSender,
}

/// Why a stream stopped being read.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the store writer has stopped")]
    Writer(#[from] WriterClosed),
}

impl AgentStream {
    /// Registers the agent as connected. Its first ack (after the next commit)
    /// tells it what the collector already holds, so it can drop those events.
    pub(super) async fn connect(
        shared: Arc<IngestShared>,
        hello: &Hello,
        conn_id: u64,
        acks: AckSender,
    ) -> Result<Self, Status> {
        let agent = shared
            .registry
            .get_or_insert(&hello.agent_id, &hello.node)
            .map_err(|full| {
                warn!(error = %full, "agent refused");
                Status::resource_exhausted(full.to_string())
            })?;
        let stream = Self {
            conn_id,
            node: Arc::from(hello.node.as_str()),
            agent_id: Arc::from(hello.agent_id.as_str()),
            agent,
            acks,
            shared,
        };
        let mut state = stream.agent.lock().await;
        if state.status.node != hello.node {
            warn!(previous_node = %state.status.node, "agent id seen before on another node");
            state.status.node.clone_from(&hello.node);
        }
        if state.conn_id.is_some() {
            warn!("agent reconnected while its previous stream looked open; the new stream takes over");
        }
        state.status.connected = true;
        state.conn_id = Some(conn_id);
        state.status.last_seen_unix_ns = unix_now_ns();
        info!(
            agent_version = %hello.agent_version,
            kernel = %hello.kernel,
            contiguous_seq = state.status.contiguous_seq,
            "agent connected"
        );
        let held = state.status.contiguous_seq;
        let write = EventsWrite {
            agent_id: stream.agent_id.clone(),
            events: None,
            status: state.status.clone(),
            ack: (held > 0).then(|| stream.ack_target(held)),
        };
        stream
            .shared
            .writer
            .write_events(write)
            .await
            .map_err(|_| Status::unavailable("the collector's store is not accepting writes"))?;
        drop(state);
        stream
            .to_hops(HopInput::Connected {
                node: stream.node.clone(),
                agent_id: stream.agent_id.clone(),
            })
            .await;
        Ok(stream)
    }

    async fn to_hops(&self, input: HopInput) {
        if self.shared.hop_input.send(input).await.is_err() {
            warn!("hop assembly has stopped: events not paired");
        }
    }

    fn ack_target(&self, acked_seq: u64) -> AckTarget {
        AckTarget {
            conn_id: self.conn_id,
            acked_seq,
            tx: self.acks.clone(),
        }
    }

    pub(super) async fn run(self, mut inbound: Streaming<Received>) {
        let stop = shutdown::requested(self.shared.shutdown.clone());
        tokio::pin!(stop);
        let reason = loop {
            let message = tokio::select! {
                () = &mut stop => {
                    info!("collector shutting down: closing the agent's stream");
                    break "the collector shut down".to_string();
                }
                message = inbound.message() => message,
            };
            let result = match message {
                Ok(Some(message)) => self.handle(message).await,
                Ok(None) => {
                    info!("agent closed its stream");
                    break "it closed its stream".to_string();
                }
                Err(status) => {
                    // A malformed or oversized message, or the connection
                    // gone: the sender is told, if it still listens.
                    warn!(code = ?status.code(), error = %status.message(), "agent stream failed");
                    let why = format!("its stream failed ({})", status.message());
                    let _ = self.acks.send(Err(status));
                    break why;
                }
            };
            if let Err(e) = result {
                warn!(error = %e, "closing the agent's stream");
                let _ = self.acks.send(Err(Status::unavailable(e.to_string())));
                break format!("the collector closed its stream: {e}");
            }
        };
        self.disconnect(reason).await;
    }

    async fn handle(&self, received: Received) -> Result<(), StreamEnd> {
        match received.message.body {
            Some(Body::Batch(batch)) => self.accept_batch(batch, received.stored).await,
            Some(Body::Loss(loss)) => self.record_loss(loss).await,
            Some(Body::Hello(_)) => {
                warn!("second Hello on one stream ignored");
                Ok(())
            }
            None => {
                debug!("empty agent message ignored");
                Ok(())
            }
        }
    }

    /// `stored`: the batch's bytes as received, for its row when every event is
    /// accepted ([`super::codec`]).
    async fn accept_batch(
        &self,
        batch: EventBatch,
        stored: Option<Bytes>,
    ) -> Result<(), StreamEnd> {
        let received = batch.events.len();
        let mut accepted = Vec::with_capacity(received);
        let mut gaps = Vec::new();
        {
            let mut state = self.agent.lock().await;
            let state = &mut *state;
            for event in batch.events {
                match apply_seq(&mut state.status, &mut state.gaps, event.seq) {
                    SeqVerdict::Duplicate => {}
                    SeqVerdict::Next => accepted.push(event),
                    SeqVerdict::Gap { missing } => {
                        warn!(
                            seq = event.seq,
                            missing,
                            gaps_total = state.gaps,
                            "sequence gap: events between agent and collector were lost"
                        );
                        let at = self
                            .shared
                            .live
                            .clocks()
                            .correct(&self.node, event.timestamp_unix_ns);
                        gaps.push(LossWindow {
                            node: self.node.to_string(),
                            events_lost: missing,
                            reason: "sequence gap".into(),
                            start_unix_ns: at,
                            end_unix_ns: at,
                            agent_gone: false,
                        });
                        accepted.push(event);
                    }
                }
            }
            state.status.last_seen_unix_ns = unix_now_ns();
            // One row for the batch's accepted events: the received bytes when
            // they all were (not copied), else encoded here without copying the
            // events (they go on to hop assembly); framed by the writer.
            let events = match (accepted.first(), accepted.last()) {
                (Some(first), Some(last)) => Some(EncodedEvents {
                    first_seq: first.seq,
                    last_seq: last.seq,
                    count: u32::try_from(accepted.len()).unwrap_or(u32::MAX),
                    body: match stored {
                        Some(batch) if accepted.len() == received => RowBody::Received {
                            node: self.node.clone(),
                            batch,
                        },
                        _ => RowBody::Encoded(batch::encode(&self.node, &accepted)),
                    },
                }),
                _ => None,
            };
            // Queued while the agent is locked: writes of one agent reach the
            // store in the order its state changed.
            let write = EventsWrite {
                agent_id: self.agent_id.clone(),
                events,
                status: state.status.clone(),
                ack: Some(self.ack_target(state.status.contiguous_seq)),
            };
            self.shared.writer.write_events(write).await?;
        }
        if accepted.len() < received {
            debug!(
                received,
                accepted = accepted.len(),
                "duplicate events ignored"
            );
        }
        for w in gaps {
            self.to_hops(HopInput::Lost(w)).await;
        }
        self.fan_out(accepted).await;
        Ok(())
    }

    /// Live tracers get process and syscall events; the assembler gets what
    /// can make a hop.
    async fn fan_out(&self, mut accepted: Vec<Event>) {
        if self.shared.live.has_tracers() {
            for event in &accepted {
                if matches!(
                    event.body,
                    Some(
                        EventBody::Syscall(_)
                            | EventBody::Exec(_)
                            | EventBody::Fork(_)
                            | EventBody::Exit(_)
                    )
                ) {
                    self.shared.live.publish_event(TracedEvent {
                        node: self.node.to_string(),
                        event: Some(event.clone()),
                    });
                }
            }
        }
        // In place: nearly every event is relevant, and then none moves.
        accepted.retain(is_relevant);
        let events = accepted;
        if events.is_empty() {
            return;
        }
        self.to_hops(HopInput::Events {
            node: self.node.clone(),
            agent_id: self.agent_id.clone(),
            events,
        })
        .await;
    }

    async fn record_loss(&self, loss: LossReport) -> Result<(), StreamEnd> {
        let mut state = self.agent.lock().await;
        debug!(
            last_seq = loss.last_seq,
            buffer_full = loss.buffer_full,
            "loss report"
        );
        let now = unix_now_ns();
        self.shared
            .live
            .clocks()
            .sample(&self.node, loss.sent_unix_ns, now);
        let lost = loss_since(
            &self.node,
            state.status.loss.as_ref(),
            &loss,
            self.shared.live.clocks(),
        );
        state.status.loss = Some(loss);
        state.status.last_seen_unix_ns = now;
        self.shared.writer.write_agent(state.status.clone()).await?;
        drop(state);
        if let Some(w) = lost {
            debug!(events_lost = w.events_lost, reason = %w.reason, "events lost on the node");
            self.to_hops(HopInput::Lost(w)).await;
        }
        Ok(())
    }

    async fn disconnect(self, reason: String) {
        let mut state = self.agent.lock().await;
        let current = state.conn_id == Some(self.conn_id);
        if current {
            state.conn_id = None;
            state.status.connected = false;
        }
        state.status.last_seen_unix_ns = unix_now_ns();
        if self
            .shared
            .writer
            .write_agent(state.status.clone())
            .await
            .is_err()
        {
            warn!("store writer stopped: disconnect not stored");
        }
        info!(
            events_received = state.status.events_received,
            contiguous_seq = state.status.contiguous_seq,
            duplicates_ignored = state.status.duplicates_ignored,
            "agent disconnected"
        );
        drop(state);
        // A stream taken over by a newer one of the same agent is not a departure.
        if current {
            self.to_hops(HopInput::Disconnected {
                node: self.node.clone(),
                agent_id: self.agent_id.clone(),
                reason,
                at_unix_ns: unix_now_ns(),
            })
            .await;
        }
    }
}
