//! Live fan-out: hops and flows (with bounded replay windows) and traced
//! events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ktrail_proto::v1::{Flow, Hop, PipelineCounters, TracedEvent};
use tokio::sync::broadcast;

use crate::node_clocks::NodeClocks;

/// Updates a watcher may fall behind by before it is told it lagged.
pub const HOP_CHANNEL: usize = 4096;
/// Flows kept for `ListFlows` and replay (their latest versions).
pub const FLOW_WINDOW: usize = 10_000;

/// What watchers receive.
#[derive(Clone, Debug)]
pub enum LiveUpdate {
    Hop(Arc<Hop>),
    Flow(Arc<Flow>),
}

/// The latest version of recent flows, oldest first.
#[derive(Debug, Default)]
struct FlowWindow {
    by_id: HashMap<String, Arc<Flow>>,
    order: VecDeque<String>,
}
/// Events a tracer may fall behind by.
pub const EVENT_CHANNEL: usize = 16384;

#[derive(Debug)]
pub struct LiveHub {
    hops: broadcast::Sender<LiveUpdate>,
    clocks: NodeClocks,
    flows: Mutex<FlowWindow>,
    events: broadcast::Sender<Arc<TracedEvent>>,
    window: Mutex<VecDeque<Arc<Hop>>>,
    window_cap: usize,
    hops_total: AtomicU64,
    pipeline: Mutex<PipelineCounters>,
}

impl LiveHub {
    /// `recent` (oldest first) seeds the window; `hops_total` counts stored hops.
    pub fn new(window_cap: usize, recent: Vec<Hop>, hops_total: u64) -> Self {
        Self::with_flows(window_cap, recent, hops_total, Vec::new())
    }

    /// As [`LiveHub::new`], with stored flows (any order) seeding the flow window.
    pub fn with_flows(
        window_cap: usize,
        recent: Vec<Hop>,
        hops_total: u64,
        mut flows: Vec<Flow>,
    ) -> Self {
        flows.sort_by_key(|f| f.start_unix_ns);
        let skip = flows.len().saturating_sub(FLOW_WINDOW);
        let mut flow_window = FlowWindow::default();
        for f in flows.into_iter().skip(skip) {
            flow_window.order.push_back(f.id.clone());
            flow_window.by_id.insert(f.id.clone(), Arc::new(f));
        }
        let window_cap = window_cap.max(1);
        let skip = recent.len().saturating_sub(window_cap);
        let window = recent.into_iter().skip(skip).map(Arc::new).collect();
        Self {
            hops: broadcast::channel(HOP_CHANNEL).0,
            events: broadcast::channel(EVENT_CHANNEL).0,
            window: Mutex::new(window),
            clocks: NodeClocks::default(),
            flows: Mutex::new(flow_window),
            window_cap,
            hops_total: AtomicU64::new(hops_total),
            pipeline: Mutex::default(),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Hop>>> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a hop to the window and sends it to every watcher.
    pub fn publish_hop(&self, hop: impl Into<Arc<Hop>>) {
        let hop = hop.into();
        let mut window = self.window();
        if window.len() >= self.window_cap {
            window.pop_front();
        }
        window.push_back(hop.clone());
        self.hops_total.fetch_add(1, Ordering::Relaxed);
        // Sent under the window lock so a new watcher's replay and live stream
        // neither miss nor repeat a hop. No receivers is fine.
        let _ = self.hops.send(LiveUpdate::Hop(hop));
    }

    /// The nodes' clock offsets (fed by ingest, applied by the hop task).
    pub fn clocks(&self) -> &NodeClocks {
        &self.clocks
    }

    fn flow_window(&self) -> std::sync::MutexGuard<'_, FlowWindow> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a flow's latest version and sends it to every watcher.
    pub fn publish_flow(&self, flow: Flow) {
        let flow = Arc::new(flow);
        // Lock order: hop window, then flows (as in `watch`).
        let _window = self.window();
        let mut flows = self.flow_window();
        if flows.by_id.insert(flow.id.clone(), flow.clone()).is_none() {
            flows.order.push_back(flow.id.clone());
            while flows.order.len() > FLOW_WINDOW {
                if let Some(old) = flows.order.pop_front() {
                    flows.by_id.remove(&old);
                }
            }
        }
        let _ = self.hops.send(LiveUpdate::Flow(flow));
    }

    /// Recent flows, most recent start first.
    pub fn recent_flows(&self, limit: usize) -> Vec<Arc<Flow>> {
        let flows = self.flow_window();
        let mut v: Vec<Arc<Flow>> = flows.by_id.values().cloned().collect();
        v.sort_by(|a, b| b.start_unix_ns.cmp(&a.start_unix_ns).then(a.id.cmp(&b.id)));
        v.truncate(limit);
        v
    }

    /// A recent flow by id or unique id prefix; `Err` lists the ambiguous ids.
    pub fn flow(&self, id_or_prefix: &str) -> Result<Option<Arc<Flow>>, Vec<String>> {
        let flows = self.flow_window();
        if let Some(f) = flows.by_id.get(id_or_prefix) {
            return Ok(Some(f.clone()));
        }
        let matching: Vec<&Arc<Flow>> = flows
            .by_id
            .values()
            .filter(|f| f.id.starts_with(id_or_prefix))
            .collect();
        match matching.len() {
            0 => Ok(None),
            1 => Ok(Some(matching[0].clone())),
            _ => Err(matching.iter().map(|f| f.id.clone()).collect()),
        }
    }

    /// The last `replay` hops (oldest first), each preceded by its flow the
    /// first time the flow appears, and a receiver for every later update.
    pub fn watch(&self, replay: usize) -> (Vec<LiveUpdate>, broadcast::Receiver<LiveUpdate>) {
        let window = self.window();
        let flows = self.flow_window();
        let rx = self.hops.subscribe();
        let skip = window.len().saturating_sub(replay);
        let mut sent = std::collections::HashSet::new();
        let mut out = Vec::new();
        for hop in window.iter().skip(skip) {
            if !hop.flow_id.is_empty() && sent.insert(hop.flow_id.clone()) {
                if let Some(f) = flows.by_id.get(&hop.flow_id) {
                    out.push(LiveUpdate::Flow(f.clone()));
                }
            }
            out.push(LiveUpdate::Hop(hop.clone()));
        }
        (out, rx)
    }

    /// The last `limit` hops, oldest first.
    pub fn recent_hops(&self, limit: usize) -> Vec<Arc<Hop>> {
        let window = self.window();
        let skip = window.len().saturating_sub(limit);
        window.iter().skip(skip).cloned().collect()
    }

    pub fn hops_total(&self) -> u64 {
        self.hops_total.load(Ordering::Relaxed)
    }

    /// The hop task's latest counters, for `ktrail status`.
    pub fn set_pipeline(&self, counters: PipelineCounters) {
        *self.pipeline.lock().unwrap_or_else(PoisonError::into_inner) = counters;
    }

    pub fn pipeline(&self) -> PipelineCounters {
        *self.pipeline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anyone is tracing (so events need not be copied otherwise).
    pub fn has_tracers(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub fn publish_event(&self, event: TracedEvent) {
        let _ = self.events.send(Arc::new(event));
    }

    pub fn trace(&self) -> broadcast::Receiver<Arc<TracedEvent>> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(id: &str) -> Hop {
        Hop {
            id: id.into(),
            ..Hop::default()
        }
    }

    #[test]
    fn the_window_is_bounded_and_replays_the_latest() {
        let hub = LiveHub::new(3, vec![hop("a"), hop("b")], 2);
        for id in ["c", "d", "e"] {
            hub.publish_hop(hop(id));
        }
        let ids = |v: Vec<Arc<Hop>>| v.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(hub.recent_hops(10)), ["c", "d", "e"]);
        assert_eq!(ids(hub.recent_hops(2)), ["d", "e"]);
        assert_eq!(hub.hops_total(), 5);
    }

    #[test]
    fn a_watcher_gets_hops_after_its_replay() {
        let hub = LiveHub::new(10, vec![hop("a")], 1);
        let (replay, mut rx) = hub.watch(5);
        assert_eq!(replay.len(), 1);
        hub.publish_hop(hop("b"));
        match rx.try_recv().expect("live hop") {
            LiveUpdate::Hop(h) => assert_eq!(h.id, "b"),
            other => panic!("expected a hop, got {other:?}"),
        }
    }

    #[test]
    fn flows_keep_their_latest_version_and_come_before_their_hops() {
        let hub = LiveHub::new(10, Vec::new(), 0);
        let flow = |state: &str| Flow {
            id: "f-abc".into(),
            state: state.into(),
            ..Flow::default()
        };
        hub.publish_flow(flow("running"));
        hub.publish_hop(Hop {
            id: "h".into(),
            flow_id: "f-abc".into(),
            ..Hop::default()
        });
        hub.publish_flow(flow("settled"));
        let (replay, _) = hub.watch(5);
        match &replay[..] {
            [LiveUpdate::Flow(f), LiveUpdate::Hop(h)] => {
                assert_eq!((f.state.as_str(), h.id.as_str()), ("settled", "h"));
            }
            other => panic!("unexpected replay {other:?}"),
        }
        assert_eq!(hub.flow("f-a").expect("unique").expect("found").id, "f-abc");
        assert_eq!(hub.recent_flows(10).len(), 1);
    }
}
