//! The `Query` service: live hops (`Watch`), live events (`Trace`), agent
//! status and recent hops.

// Stream items are `Result<_, Status>` as tonic wants them, large as it is.
#![allow(clippy::result_large_err)]

mod filter;
pub mod flows;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use ktrail_proto::v1::query_server::Query;
use ktrail_proto::v1::{
    trace_update, watch_update, ListHopsReply, ListHopsRequest, StatusReply, StatusRequest,
    TraceRequest, TraceUpdate, WatchRequest, WatchUpdate,
};
use tokio::sync::watch;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::agents::AgentRegistry;
use crate::live::{LiveHub, LiveUpdate};
use crate::shutdown;
use crate::store::Store;

pub use filter::TraceFilter;

/// `ListHops` with `limit` 0 returns this many.
pub const DEFAULT_LIST_LIMIT: usize = 100;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Debug, Clone)]
pub struct QueryService {
    registry: Arc<AgentRegistry>,
    live: Arc<LiveHub>,
    store: Option<Store>,
    /// The store's cap (`--store-max-gib`), for `Status`.
    store_max_bytes: u64,
    shutdown: watch::Receiver<bool>,
}

impl QueryService {
    pub fn new(
        registry: Arc<AgentRegistry>,
        live: Arc<LiveHub>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            registry,
            live,
            store: None,
            store_max_bytes: 0,
            shutdown,
        }
    }

    /// Flows and events older than the live windows come from `store`, kept within
    /// `max_bytes` on disk (0: no limit).
    pub fn with_store(mut self, store: Store, max_bytes: u64) -> Self {
        self.store = Some(store);
        self.store_max_bytes = max_bytes;
        self
    }
}

fn update(u: &LiveUpdate) -> WatchUpdate {
    let body = match u {
        LiveUpdate::Hop(hop) => watch_update::Body::Hop((**hop).clone()),
        LiveUpdate::Flow(flow) => watch_update::Body::Flow((**flow).clone()),
    };
    WatchUpdate { body: Some(body) }
}

#[tonic::async_trait]
impl Query for QueryService {
    type WatchStream = BoxStream<WatchUpdate>;
    type TraceStream = BoxStream<TraceUpdate>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let replay = request.into_inner().replay as usize;
        let (replayed, rx) = self.live.watch(replay);
        info!(replay, replayed = replayed.len(), "watch started");
        let replayed = futures::stream::iter(replayed.into_iter().map(|u| Ok(update(&u))));
        let live = BroadcastStream::new(rx).map(|item| {
            Ok(match item {
                Ok(u) => update(&u),
                Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                    debug!(skipped, "watcher lagged");
                    WatchUpdate {
                        body: Some(watch_update::Body::Lagged(skipped)),
                    }
                }
            })
        });
        let stream = replayed
            .chain(live)
            .take_until(shutdown::requested(self.shutdown.clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn trace(
        &self,
        request: Request<TraceRequest>,
    ) -> Result<Response<Self::TraceStream>, Status> {
        let req = request.into_inner();
        info!(node = %req.node, comm = %req.comm, pid = req.pid, "trace started");
        let filter = TraceFilter::new(&req);
        let stream = BroadcastStream::new(self.live.trace())
            .filter_map(move |item| {
                let update = match item {
                    Ok(traced) => filter.matches(&traced).then(|| TraceUpdate {
                        body: Some(trace_update::Body::Event((*traced).clone())),
                    }),
                    Err(BroadcastStreamRecvError::Lagged(skipped)) => Some(TraceUpdate {
                        body: Some(trace_update::Body::Lagged(skipped)),
                    }),
                };
                futures::future::ready(update.map(Ok))
            })
            .take_until(shutdown::requested(self.shutdown.clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let mut agents = self.registry.snapshot().await;
        for a in &mut agents {
            a.clock_correction_ns = self.live.clocks().correction_ns(&a.node);
        }
        let events_total = agents.iter().map(|a| a.events_received).sum();
        let store = match &self.store {
            Some(store) => {
                let store = store.clone();
                let max_bytes = self.store_max_bytes;
                // A read transaction and a stat: off the async workers.
                let counters = tokio::task::spawn_blocking(move || store.counters(max_bytes))
                    .await
                    .map_err(|e| Status::internal(format!("store status task: {e}")))?
                    .map_err(|e| Status::internal(format!("store status: {e}")))?;
                Some(counters)
            }
            None => None,
        };
        Ok(Response::new(StatusReply {
            agents,
            hops_total: self.live.hops_total(),
            events_total,
            pipeline: Some(self.live.pipeline()),
            store,
        }))
    }

    async fn list_flows(
        &self,
        request: Request<ktrail_proto::v1::ListFlowsRequest>,
    ) -> Result<Response<ktrail_proto::v1::ListFlowsReply>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n as usize,
        };
        let (live, store) = (self.live.clone(), self.store.clone());
        let flows = tokio::task::spawn_blocking(move || flows::list(&live, store.as_ref(), limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(ktrail_proto::v1::ListFlowsReply { flows }))
    }

    async fn get_flow(
        &self,
        request: Request<ktrail_proto::v1::GetFlowRequest>,
    ) -> Result<Response<ktrail_proto::v1::GetFlowReply>, Status> {
        let req = request.into_inner();
        let (live, store) = (self.live.clone(), self.store.clone());
        let reply = tokio::task::spawn_blocking(move || {
            flows::get(&live, store.as_ref(), &req.id, req.with_events)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(reply))
    }

    async fn list_hops(
        &self,
        request: Request<ListHopsRequest>,
    ) -> Result<Response<ListHopsReply>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n as usize,
        };
        let hops = self
            .live
            .recent_hops(limit)
            .iter()
            .map(|h| (**h).clone())
            .collect();
        Ok(Response::new(ListHopsReply { hops }))
    }
}
