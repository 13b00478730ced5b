//! Live fan-out: hops (with a bounded replay window) and traced events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ktrail_proto::v1::{Hop, TracedEvent};
use tokio::sync::broadcast;

/// Hops a watcher may fall behind by before it is told it lagged.
pub const HOP_CHANNEL: usize = 4096;
/// Events a tracer may fall behind by.
pub const EVENT_CHANNEL: usize = 16384;

#[derive(Debug)]
pub struct LiveHub {
    hops: broadcast::Sender<Arc<Hop>>,
    events: broadcast::Sender<Arc<TracedEvent>>,
    window: Mutex<VecDeque<Arc<Hop>>>,
    window_cap: usize,
    hops_total: AtomicU64,
}

impl LiveHub {
    /// `recent` (oldest first) seeds the window; `hops_total` counts stored hops.
    pub fn new(window_cap: usize, recent: Vec<Hop>, hops_total: u64) -> Self {
        let window_cap = window_cap.max(1);
        let skip = recent.len().saturating_sub(window_cap);
        let window = recent.into_iter().skip(skip).map(Arc::new).collect();
        Self {
            hops: broadcast::channel(HOP_CHANNEL).0,
            events: broadcast::channel(EVENT_CHANNEL).0,
            window: Mutex::new(window),
            window_cap,
            hops_total: AtomicU64::new(hops_total),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Hop>>> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a hop to the window and sends it to every watcher.
    pub fn publish_hop(&self, hop: Hop) {
        let hop = Arc::new(hop);
        let mut window = self.window();
        if window.len() >= self.window_cap {
            window.pop_front();
        }
        window.push_back(hop.clone());
        self.hops_total.fetch_add(1, Ordering::Relaxed);
        // Sent under the window lock so a new watcher's replay and live stream
        // neither miss nor repeat a hop. No receivers is fine.
        let _ = self.hops.send(hop);
    }

    /// The last `replay` hops (oldest first) and a receiver for every later one.
    pub fn watch(&self, replay: usize) -> (Vec<Arc<Hop>>, broadcast::Receiver<Arc<Hop>>) {
        let window = self.window();
        let rx = self.hops.subscribe();
        let skip = window.len().saturating_sub(replay);
        (window.iter().skip(skip).cloned().collect(), rx)
    }

    /// The last `limit` hops, oldest first.
    pub fn recent_hops(&self, limit: usize) -> Vec<Arc<Hop>> {
        self.watch(limit).0
    }

    pub fn hops_total(&self) -> u64 {
        self.hops_total.load(Ordering::Relaxed)
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
        assert_eq!(rx.try_recv().expect("live hop").id, "b");
    }
}
