//! The task that runs the assembler and the flow stitcher in the collector:
//! fed by ingest, ticked every 50 ms, publishing hops and flows live and to
//! the store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{AssemblerStats, HopAssembler, HopConfig};
use crate::clock::unix_now_ns;
use crate::flows::{FlowStitcher, StitchConfig, StitchStats, Update};
use crate::live::LiveHub;
use crate::metadata::ClusterMetadata;
use crate::store::writer::StoreWriter;

/// How often time-based completion runs.
pub const TICK: Duration = Duration::from_millis(50);
/// Queue between ingest and the assembler.
pub const INPUT_QUEUE: usize = 256;

/// Accepted events of one batch that may matter for hops.
#[derive(Debug)]
pub struct HopInput {
    pub node: Arc<str>,
    pub agent_id: Arc<str>,
    pub events: Vec<Event>,
}

/// Starts the task; it ends, after emitting what is left, when every sender
/// of its input is dropped.
pub fn spawn(
    cfg: HopConfig,
    live: Arc<LiveHub>,
    writer: StoreWriter,
    metadata: Option<Arc<ClusterMetadata>>,
) -> (mpsc::Sender<HopInput>, JoinHandle<AssemblerStats>) {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let out = Publisher {
        live,
        writer,
        metadata,
    };
    (tx, tokio::spawn(run(cfg, rx, out)))
}

fn id_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

async fn run(
    cfg: HopConfig,
    mut rx: mpsc::Receiver<HopInput>,
    publisher: Publisher,
) -> AssemblerStats {
    let start = Instant::now();
    let now = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let mut asm = HopAssembler::new(cfg, id_seed());
    // Stitching runs on event time (the nodes' wall clocks), so it is given
    // the collector's wall clock too.
    let mut flows = FlowStitcher::new(StitchConfig::default(), id_seed().rotate_left(17));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out = Vec::new();
    let mut updates = Vec::new();
    let mut reported = asm.stats();
    let mut reported_flows = flows.stats();
    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => {
                    let t = now();
                    for event in &input.events {
                        if is_process_event(event) {
                            let event = publisher.live.clocks().corrected_event(&input.node, event);
                            flows.on_process_event(&input.node, &input.agent_id, &event, unix_now_ns(), &mut updates);
                        } else {
                            asm.ingest(&input.node, &input.agent_id, event, t, &mut out);
                        }
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                asm.tick(now(), &mut out);
                flows.tick(unix_now_ns(), &mut updates);
                reported = report(reported, asm.stats());
                reported_flows = report_flows(reported_flows, flows.stats());
            }
        }
        for mut hop in out.drain(..) {
            publisher.live.clocks().correct_hop(&mut hop);
            flows.on_hop(hop, unix_now_ns(), &mut updates);
        }
        publisher.publish(&mut updates).await;
    }
    asm.flush(now(), &mut out);
    for hop in out.drain(..) {
        flows.on_hop(hop, unix_now_ns(), &mut updates);
    }
    publisher.publish(&mut updates).await;
    let stats = asm.stats();
    info!(hops = stats.hops_emitted, "hop assembly stopped");
    stats
}

/// Logs evictions since the last report.
fn report(last: AssemblerStats, now: AssemblerStats) -> AssemblerStats {
    if now.evicted_cap > last.evicted_cap {
        warn!(
            evicted = now.evicted_cap - last.evicted_cap,
            evicted_total = now.evicted_cap,
            connections = now.connections,
            "connection cap reached: least recently active connections evicted"
        );
    }
    let decode_drops =
        |s: &AssemblerStats| s.stream_items_dropped + s.streams_evicted + s.messages_dropped;
    if decode_drops(&now) > decode_drops(&last) {
        warn!(
            stream_items_dropped = now.stream_items_dropped,
            streams_evicted = now.streams_evicted,
            messages_dropped = now.messages_dropped,
            "decoded hops dropped at their per-connection caps"
        );
    }
    if now.evicted_idle > last.evicted_idle {
        debug!(
            evicted = now.evicted_idle - last.evicted_idle,
            connections = now.connections,
            "idle connections evicted"
        );
    }
    now
}

fn is_process_event(event: &Event) -> bool {
    matches!(
        event.body,
        Some(Body::Exec(_) | Body::Fork(_) | Body::Exit(_))
    )
}

/// Logs what stitching could not place or keep since the last report.
fn report_flows(last: StitchStats, now: StitchStats) -> StitchStats {
    if now.pending_evicted > last.pending_evicted || now.flows_evicted > last.flows_evicted {
        warn!(
            pending_evicted = now.pending_evicted,
            flows_evicted = now.flows_evicted,
            pending = now.pending,
            "flow stitching caps reached: hops left unplaced, or flows closed early"
        );
    }
    if now.flows_started > last.flows_started || now.flows_closed > last.flows_closed {
        debug!(
            started = now.flows_started,
            closed = now.flows_closed,
            hops_joined = now.hops_joined,
            pending = now.pending,
            pending_expired = now.pending_expired,
            "flows"
        );
    }
    now
}

/// Where finished hops and flows go: hops labelled with Kubernetes metadata
/// (if watched), to the store and to live clients.
struct Publisher {
    live: Arc<LiveHub>,
    writer: StoreWriter,
    metadata: Option<Arc<ClusterMetadata>>,
}

impl Publisher {
    async fn publish(&self, updates: &mut Vec<Update>) {
        let (live, writer) = (&self.live, &self.writer);
        for update in updates.drain(..) {
            match update {
                Update::Hop(mut hop) => {
                    if let Some(metadata) = &self.metadata {
                        metadata.label(&mut hop);
                    }
                    debug!(hop_id = %hop.id, flow_id = %hop.flow_id, kind = %hop.kind, summary = %hop.summary, "hop");
                    if writer.write_hop(&hop).await.is_err() {
                        warn!(hop_id = %hop.id, "store writer stopped: hop not stored");
                    }
                    live.publish_hop(*hop);
                }
                Update::Flow(flow) => {
                    info!(flow_id = %flow.id, title = %flow.title, state = %flow.state, reason = %flow.state_reason, hops = flow.hop_count, closed = flow.closed, "flow");
                    if writer.write_flow(&flow).await.is_err() {
                        warn!(flow_id = %flow.id, "store writer stopped: flow not stored");
                    }
                    live.publish_flow(*flow);
                }
            }
        }
    }
}
