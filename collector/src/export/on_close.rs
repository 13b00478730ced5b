//! Exporting each flow when it closes: a live-update listener of its own
//! (stitching never waits for it) that gathers the closed flow's hops — from
//! the store and the live window, off the async threads — and offers them to
//! the exporter's bounded queue.

// The flow queries answer tonic's `Status`, large as it is.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use super::OtlpExporter;
use crate::live::{LiveHub, LiveUpdate};
use crate::query::flows;
use crate::store::Store;

/// Starts the listener; it ends at shutdown.
pub fn spawn(
    exporter: OtlpExporter,
    live: Arc<LiveHub>,
    store: Option<Store>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (_, mut rx) = live.watch(0);
    let missed = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let update = tokio::select! {
                u = rx.recv() => u,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let flow = match update {
                Ok(LiveUpdate::Flow(f)) if f.closed => f,
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    // Closed flows among them are not exported: say so.
                    let total = missed.fetch_add(n, Ordering::Relaxed) + n;
                    warn!(
                        skipped = n,
                        skipped_total = total,
                        "OTLP export fell behind the live updates; flows closed among them are not exported"
                    );
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let (live, store, id) = (live.clone(), store.clone(), flow.id.clone());
            let got =
                tokio::task::spawn_blocking(move || flows::get(&live, store.as_ref(), &id, false))
                    .await;
            match got {
                Ok(Ok(reply)) => {
                    let flow = reply.flow.unwrap_or_else(|| (*flow).clone());
                    exporter.offer(flow, reply.hops);
                }
                Ok(Err(status)) => {
                    warn!(flow_id = %flow.id, error = %status.message(), "closed flow not found for export")
                }
                Err(e) => {
                    warn!(flow_id = %flow.id, error = %e, "reading a closed flow for export failed")
                }
            }
        }
    })
}
