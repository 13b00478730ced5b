//! The task that runs the assembler and the flow stitcher in the collector:
//! fed by ingest, ticked every 50 ms, publishing hops and flows live and to
//! the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::{Event, Hop, PipelineCounters};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{AssemblerStats, HopAssembler, HopConfig};
use crate::clock::unix_now_ns;
use crate::flows::{FlowStitcher, LossWindow, StitchConfig, StitchStats, Update};
use crate::live::LiveHub;
use crate::metadata::ClusterMetadata;
use crate::store::writer::{EncodedHops, StoreWriter};

/// How often time-based completion runs.
pub const TICK: Duration = Duration::from_millis(50);
/// Queue between ingest and the assembler, in received batches (up to 1,024 events
/// each, ~1.2 MB decoded with 1 KiB payloads): 16 is enough to smooth the hand-over,
/// and ingest waits beyond it. At 256 batches of 512 a saturated collector held ~150 MB
/// here; 16 of 1,024 hold as many events as the 32 of 512 before agents' batches grew.
pub const INPUT_QUEUE: usize = 16;
/// Hops no flow has claimed yet, kept for a flow to claim them (flows/pending.rs).
/// About 5 KB each (a `Hop` with its captured request and response, its lookup
/// keys, and its slot in the table, which never shrinks): at the stitcher's default of
/// 50,000 a heap profile (heaptrack, 10 replayed agents) put 173 MB in the table alone.
/// A cluster's unclaimed hops in the 15-s wait are a few thousand (leases, status
/// updates, probes); past this, the oldest are published unclaimed (counted, logged).
pub const MAX_PENDING_HOPS: usize = 10_000;

/// An agent whose stream ended is declared gone when it has not reconnected
/// within this long (it retries within 2 s; its unacked events come again).
pub const AGENT_GONE_GRACE: Duration = Duration::from_secs(5);

/// What ingest tells hop assembly and stitching.
#[derive(Debug)]
pub enum HopInput {
    /// Accepted events of one batch that may matter for hops.
    Events {
        node: Arc<str>,
        agent_id: Arc<str>,
        events: Vec<Event>,
    },
    /// Events a node's agent lost (its loss report grew, or a sequence gap).
    Lost(LossWindow),
    /// An agent's stream opened.
    Connected { node: Arc<str>, agent_id: Arc<str> },
    /// An agent's stream ended, at `at_unix_ns` on the collector's clock.
    Disconnected {
        node: Arc<str>,
        agent_id: Arc<str>,
        reason: String,
        at_unix_ns: u64,
    },
}

/// An agent whose stream ended, not yet declared gone.
#[derive(Debug)]
struct Departure {
    node: Arc<str>,
    reason: String,
    at_unix_ns: u64,
    /// Task clock after which it is gone.
    deadline: u64,
}

/// Agents' comings and goings, as the task sees them.
#[derive(Debug, Default)]
struct Presence {
    connected: HashMap<Arc<str>, Arc<str>>,
    departed: HashMap<Arc<str>, Departure>,
    /// Agent runs whose first events arrived (one per agent process run).
    started: HashSet<Arc<str>>,
}

impl Presence {
    /// Agents whose grace ran out by `now`, forgotten here.
    fn gone(&mut self, now: u64) -> Vec<(Arc<str>, Departure)> {
        let ids: Vec<Arc<str>> = self
            .departed
            .iter()
            .filter(|(_, d)| now >= d.deadline)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.departed.remove(&id).map(|d| (id, d)))
            .collect()
    }

    fn node_has_agent(&self, node: &str) -> bool {
        self.connected.values().any(|n| &**n == node)
    }
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
    let stitch = StitchConfig {
        max_pending: MAX_PENDING_HOPS,
        ..StitchConfig::default()
    };
    let mut flows = FlowStitcher::new(stitch, id_seed().rotate_left(17));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out = Vec::new();
    let mut updates = Vec::new();
    let mut reported = asm.stats();
    let mut reported_flows = flows.stats();
    let mut presence = Presence::default();
    // Applied after the hops of the same round are stitched: a flow whose
    // root was among them lost events too.
    let mut losses: Vec<LossWindow> = Vec::new();
    let grace = u64::try_from(AGENT_GONE_GRACE.as_nanos()).unwrap_or(u64::MAX);
    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(HopInput::Events { node, agent_id, events }) => {
                    let t = now();
                    if !presence.started.contains(&agent_id) {
                        if let Some(first) = events.iter().map(|e| e.timestamp_unix_ns).min() {
                            presence.started.insert(agent_id.clone());
                            asm.agent_started(first);
                        }
                    }
                    for event in &events {
                        if is_process_event(event) {
                            let event = publisher.live.clocks().corrected_event(&node, event);
                            flows.on_process_event(&node, &agent_id, &event, unix_now_ns(), &mut updates);
                        } else {
                            asm.ingest(&node, &agent_id, event, t, &mut out);
                        }
                    }
                }
                Some(HopInput::Lost(w)) => losses.push(w),
                Some(HopInput::Connected { node, agent_id }) => {
                    presence.departed.remove(&agent_id);
                    flows.on_node_back(&node);
                    asm.agent_connected(now());
                    presence.connected.insert(agent_id, node);
                }
                Some(HopInput::Disconnected { node, agent_id, reason, at_unix_ns }) => {
                    presence.connected.remove(&agent_id);
                    presence.departed.insert(agent_id, Departure { node, reason, at_unix_ns, deadline: now().saturating_add(grace) });
                }
                None => break,
            },
            _ = ticker.tick() => {
                let t = now();
                for (agent_id, d) in presence.gone(t) {
                    let why = format!("agent on {} gone before the hop ended: {}", d.node, d.reason);
                    asm.retire_agent(&agent_id, &why, t, &mut out);
                    if presence.node_has_agent(&d.node) {
                        info!(node = %d.node, agent_id = %agent_id, reason = %d.reason, "agent gone; another agent traces its node");
                        continue;
                    }
                    warn!(node = %d.node, agent_id = %agent_id, reason = %d.reason, "agent gone: open flows are marked, its node's hops are missing until an agent is back");
                    losses.push(LossWindow {
                        node: d.node.to_string(),
                        events_lost: 0,
                        reason: format!("agent gone: {}", d.reason),
                        start_unix_ns: d.at_unix_ns,
                        end_unix_ns: d.at_unix_ns,
                        agent_gone: true,
                    });
                }
                // Also while a departure found now is applied (after this tick).
                flows.hold_closing(!presence.departed.is_empty() || !losses.is_empty());
                asm.tick(t, &mut out);
                flows.tick(unix_now_ns(), &mut updates);
                reported = report(reported, asm.stats());
                reported_flows = report_flows(reported_flows, flows.stats());
                publisher.live.set_pipeline(pipeline_counters(&reported, &reported_flows));
            }
        }
        for mut hop in out.drain(..) {
            publisher.live.clocks().correct_hop(&mut hop);
            flows.on_hop(hop, unix_now_ns(), &mut updates);
        }
        for w in losses.drain(..) {
            flows.on_loss(w, unix_now_ns(), &mut updates);
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

fn pipeline_counters(asm: &AssemblerStats, flows: &StitchStats) -> PipelineCounters {
    PipelineCounters {
        connections: asm.connections as u64,
        connections_evicted: asm.evicted_cap,
        stream_items_dropped: asm.stream_items_dropped,
        streams_evicted: asm.streams_evicted,
        messages_dropped: asm.messages_dropped,
        connections_agent_gone: asm.retired_agent_gone,
        flows_started: flows.flows_started,
        flows_closed: flows.flows_closed,
        flows_evicted: flows.flows_evicted,
        hops_pending: flows.pending as u64,
        hops_unplaced: flows.pending_expired,
        hops_pending_evicted: flows.pending_evicted,
    }
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
    /// Hops go to the store in one write per run of them (queued before they go
    /// live, as one by one), a flow after the hops before it.
    async fn publish(&self, updates: &mut Vec<Update>) {
        let mut hops = Vec::new();
        for update in updates.drain(..) {
            match update {
                Update::Hop(mut hop) => {
                    if let Some(metadata) = &self.metadata {
                        metadata.label(Arc::make_mut(&mut hop));
                    }
                    debug!(hop_id = %hop.id, flow_id = %hop.flow_id, kind = %hop.kind, summary = %hop.summary, "hop");
                    hops.push(hop);
                }
                Update::Flow(flow) => {
                    self.publish_hops(&mut hops).await;
                    info!(flow_id = %flow.id, title = %flow.title, state = %flow.state, reason = %flow.state_reason, hops = flow.hop_count, closed = flow.closed, "flow");
                    if self.writer.write_flow(&flow).await.is_err() {
                        warn!(flow_id = %flow.id, "store writer stopped: flow not stored");
                    }
                    self.live.publish_flow(*flow);
                }
            }
        }
        self.publish_hops(&mut hops).await;
    }

    async fn publish_hops(&self, hops: &mut Vec<Arc<Hop>>) {
        if hops.is_empty() {
            return;
        }
        let bytes = hops.iter().map(|h| h.encoded_len() + 8).sum();
        let mut encoded = EncodedHops::with_capacity(hops.len(), bytes);
        for hop in hops.iter() {
            encoded.push(hop);
        }
        if self.writer.write_hops(encoded).await.is_err() {
            warn!(hops = hops.len(), "store writer stopped: hops not stored");
        }
        for hop in hops.drain(..) {
            self.live.publish_hop(hop);
        }
    }
}
