//! Counters, and the HTTP endpoint serving them in Prometheus text format
//! (`/metrics`) beside the readiness probe (`/readyz`).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use axum::{extract::State, http::StatusCode, routing::get, Router};

use crate::outbox::Outbox;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelDrops {
    pub ringbuf_full_per_cpu: Vec<u64>,
    pub inflight_full: u64,
    pub tracked_full: u64,
    pub read_failed: u64,
}

#[derive(Default)]
pub struct Metrics {
    events: AtomicU64,
    undecodable: AtomicU64,
    acked: AtomicU64,
    connected: AtomicBool,
    ready: AtomicBool,
    tracked_at_start: AtomicU64,
    kernel: Mutex<KernelDrops>,
    go_tls: Mutex<Option<Arc<crate::gotls::attach::GoTlsCounters>>>,
}

impl Metrics {
    pub fn count_event(&self) {
        self.events.fetch_add(1, Relaxed);
    }
    pub fn count_undecodable(&self) {
        self.undecodable.fetch_add(1, Relaxed);
    }
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Relaxed)
    }
    pub fn set_acked(&self, seq: u64) {
        self.acked.fetch_max(seq, Relaxed);
    }
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Relaxed);
    }
    pub fn set_ready(&self, tracked_at_start: u64) {
        self.tracked_at_start.store(tracked_at_start, Relaxed);
        self.ready.store(true, Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }
    pub fn set_kernel_drops(&self, drops: KernelDrops) {
        *self.kernel.lock().unwrap_or_else(|e| e.into_inner()) = drops;
    }
    pub fn set_go_tls(&self, counters: Arc<crate::gotls::attach::GoTlsCounters>) {
        *self.go_tls.lock().unwrap_or_else(|e| e.into_inner()) = Some(counters);
    }

    pub fn kernel_drops(&self) -> KernelDrops {
        self.kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn render(&self, outbox: &Outbox) -> String {
        let s = outbox.stats();
        let k = self.kernel_drops();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            "ktrail_agent_events_total",
            "counter",
            "Events read from the kernel ring buffer.",
            &one(self.events.load(Relaxed)),
        );
        metric(
            "ktrail_agent_events_enqueued_total",
            "counter",
            "Events given a sequence number for the collector.",
            &one(s.last_seq),
        );
        metric(
            "ktrail_agent_events_acked_total",
            "counter",
            "Events the collector acknowledged as stored.",
            &one(s.acked_seq),
        );
        metric(
            "ktrail_agent_queue_depth",
            "gauge",
            "Events waiting for the collector's acknowledgement.",
            &one(s.queued as u64),
        );
        let mut drops = vec![
            ("{reason=\"buffer_full\"}".to_string(), s.buffer_full),
            ("{reason=\"undecodable\"}".to_string(), self.undecodable()),
            ("{reason=\"inflight_full\"}".to_string(), k.inflight_full),
            ("{reason=\"tracked_full\"}".to_string(), k.tracked_full),
            ("{reason=\"read_failed\"}".to_string(), k.read_failed),
        ];
        drops.push((
            "{reason=\"ringbuf_full\"}".to_string(),
            k.ringbuf_full_per_cpu.iter().sum(),
        ));
        metric(
            "ktrail_agent_events_dropped_total",
            "counter",
            "Events lost, by reason (never silently).",
            &drops,
        );
        let per_cpu: Vec<(String, u64)> = k
            .ringbuf_full_per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, v)| (format!("{{cpu=\"{cpu}\"}}"), *v))
            .collect();
        metric(
            "ktrail_agent_ringbuf_drops_total",
            "counter",
            "Events the kernel could not put into the ring buffer, per CPU.",
            &per_cpu,
        );
        metric(
            "ktrail_agent_connected",
            "gauge",
            "1 while streaming to the collector.",
            &one(self.connected.load(Relaxed) as u64),
        );
        metric(
            "ktrail_agent_ready",
            "gauge",
            "1 once programs are attached.",
            &one(self.is_ready() as u64),
        );
        metric(
            "ktrail_agent_tracked_at_start",
            "gauge",
            "Processes the /proc scan found to trace.",
            &one(self.tracked_at_start.load(Relaxed)),
        );
        if let Some(tls) = self
            .go_tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let outcome =
                |name: &str, v: &AtomicU64| (format!("{{outcome=\"{name}\"}}"), v.load(Relaxed));
            metric(
                "ktrail_agent_go_tls_binaries_total",
                "counter",
                "Traced binaries looked at for Go TLS probes, by outcome (the log says why one failed).",
                &[
                    outcome("attached", &tls.attached),
                    outcome("not_go", &tls.not_go),
                    outcome("no_tls", &tls.no_tls),
                    outcome("failed", &tls.failed),
                ],
            );
        }
        out
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
}

pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render(&s.outbox) }),
        )
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.metrics.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "attaching\n")
                }
            }),
        )
        .with_state(AppState { metrics, outbox });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        let ob = Outbox::new(1);
        ob.push(Default::default());
        ob.push(Default::default());
        m.count_event();
        m.set_kernel_drops(KernelDrops {
            ringbuf_full_per_cpu: vec![3, 4],
            ..Default::default()
        });
        let text = m.render(&ob);
        assert!(text.contains("ktrail_agent_events_total 1\n"));
        assert!(text.contains("ktrail_agent_events_dropped_total{reason=\"buffer_full\"} 1\n"));
        assert!(text.contains("ktrail_agent_events_dropped_total{reason=\"ringbuf_full\"} 7\n"));
        assert!(text.contains("ktrail_agent_ringbuf_drops_total{cpu=\"1\"} 4\n"));
        assert!(text.contains("# TYPE ktrail_agent_queue_depth gauge"));
        assert!(
            !text.contains("go_tls"),
            "no Go TLS counters before the attacher exists"
        );
        let tls = Arc::new(crate::gotls::attach::GoTlsCounters::default());
        tls.attached.fetch_add(2, Relaxed);
        tls.not_go.fetch_add(5, Relaxed);
        m.set_go_tls(tls);
        let text = m.render(&ob);
        assert!(text.contains("ktrail_agent_go_tls_binaries_total{outcome=\"attached\"} 2\n"));
        assert!(text.contains("ktrail_agent_go_tls_binaries_total{outcome=\"not_go\"} 5\n"));
        assert!(text.contains("ktrail_agent_go_tls_binaries_total{outcome=\"failed\"} 0\n"));
    }
}
