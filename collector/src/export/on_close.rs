//! Exporting each flow when it closes: a live-update listener of its own
//! (stitching never waits for it) hands closed flows to a reader that gathers
//! their hops — from the store and the live window, off the async threads —
//! and offers them to the exporter's bounded queue.

// The flow queries answer tonic's `Status`, large as it is.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use ktrail_proto::v1::Flow;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::warn;

use super::OtlpExporter;
use crate::live::{LiveHub, LiveUpdate};
use crate::query::flows;
use crate::store::Store;

/// Closed flows waiting for their hops to be read. Reading can take a
/// while (a store scan); the listener must keep up with the live updates
/// meanwhile, or it lags and misses flows.
const PENDING: usize = 1024;

/// Starts the listener and the reader; both end at shutdown.
pub fn spawn(
    exporter: OtlpExporter,
    live: Arc<LiveHub>,
    store: Option<Store>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel(PENDING);
    let reader = tokio::spawn(read_and_offer(rx, exporter, live.clone(), store));
    let listener = tokio::spawn(listen(live, tx, shutdown));
    tokio::spawn(async move {
        let _ = listener.await;
        // The listener dropped its sender: the reader ends after the queue.
        let _ = reader.await;
    })
}

/// Picks closed flows out of the live updates.
async fn listen(
    live: Arc<LiveHub>,
    tx: mpsc::Sender<Arc<Flow>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (_, mut rx) = live.watch(0);
    let (mut lagged, mut dropped) = (0u64, 0u64);
    loop {
        let update = tokio::select! {
            u = rx.recv() => u,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match update {
            Ok(LiveUpdate::Flow(f)) if f.closed => {
                if tx.try_send(f).is_err() {
                    dropped += 1;
                    warn!(
                        dropped_total = dropped,
                        "OTLP export: too many closed flows waiting to be read; flow not exported"
                    );
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                // Closed flows among them are not exported: say so.
                lagged += n;
                warn!(
                    skipped = n,
                    skipped_total = lagged,
                    "OTLP export fell behind the live updates; flows closed among them are not exported"
                );
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// Reads each closed flow's hops (store and live window, off the async
/// threads) and offers the flow to the exporter.
async fn read_and_offer(
    mut rx: mpsc::Receiver<Arc<Flow>>,
    exporter: OtlpExporter,
    live: Arc<LiveHub>,
    store: Option<Store>,
) {
    while let Some(flow) = rx.recv().await {
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
}
