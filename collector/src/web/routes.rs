//! The web page's routes: the page, flows as JSON and live updates as
//! Server-Sent Events. Read-only.

// The flow queries answer tonic's `Status`, large as it is.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tonic::Code;
use tracing::debug;

use super::json;
use crate::live::{LiveHub, LiveUpdate};
use crate::query::flows;
use crate::shutdown;
use crate::store::Store;

/// The page: HTML, CSS and JavaScript in one file, nothing loaded from elsewhere.
const PAGE: &str = include_str!("page.html");
/// `/api/flows` without `limit`.
const DEFAULT_FLOWS: usize = 200;
const MAX_FLOWS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct WebState {
    pub live: Arc<LiveHub>,
    pub store: Option<Store>,
    /// Required of every request when set (`--web-token`).
    pub token: Option<Arc<str>>,
    /// Open `/api/live` streams.
    pub live_clients: Arc<AtomicUsize>,
    pub shutdown: watch::Receiver<bool>,
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/flows", get(list_flows))
        .route("/api/flows/:id", get(get_flow))
        .route("/api/live", get(live))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Equal without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With a token set, a request needs `Authorization: Bearer TOKEN` or
/// `?token=TOKEN` (the page passes it on to its API calls and its event
/// stream, which cannot set headers).
async fn authorize(State(s): State<WebState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let param = query_param(req.uri().query(), "token");
    let given = bearer.or(param).unwrap_or("");
    if same(given.as_bytes(), token.as_bytes()) {
        next.run(req).await
    } else {
        debug!(path = %req.uri().path(), "web request without the token refused");
        (
            StatusCode::UNAUTHORIZED,
            "this collector's web page needs its token: open /?token=TOKEN (--web-token)\n",
        )
            .into_response()
    }
}

async fn page() -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, PAGE)
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(status: &tonic::Status) -> Response {
    let code = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_response(code, &json!({"error": status.message()}))
}

/// Store reads block: they run off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string())))
}

async fn list_flows(State(s): State<WebState>, RawQuery(q): RawQuery) -> Response {
    let limit = query_param(q.as_deref(), "limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_FLOWS)
        .min(MAX_FLOWS);
    match blocking(move || flows::list(&s.live, s.store.as_ref(), limit)).await {
        Ok(list) => json_response(
            StatusCode::OK,
            &json!({"flows": list.iter().map(json::flow).collect::<Vec<_>>()}),
        ),
        Err(e) => error_response(&e),
    }
}

async fn get_flow(State(s): State<WebState>, Path(id): Path<String>) -> Response {
    match blocking(move || flows::get(&s.live, s.store.as_ref(), &id, false)).await {
        Ok(reply) => json_response(
            StatusCode::OK,
            &json!({
                "flow": reply.flow.as_ref().map(json::flow),
                "hops": reply.hops.iter().map(json::hop).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => error_response(&e),
    }
}

/// Counts an open event stream while it lives.
struct LiveClient(Arc<AtomicUsize>);

impl LiveClient {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn event(update: Result<LiveUpdate, BroadcastStreamRecvError>) -> Event {
    match update {
        Ok(LiveUpdate::Hop(h)) => Event::default()
            .event("hop")
            .data(json::hop(&h).to_string()),
        Ok(LiveUpdate::Flow(f)) => Event::default()
            .event("flow")
            .data(json::flow(&f).to_string()),
        // The page reloads what it shows when told it missed updates.
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            Event::default().event("lagged").data(n.to_string())
        }
    }
}

/// Every hop and flow update from now on: events `hop`, `flow` (JSON as in
/// `/api/flows/:id`) and `lagged` (how many the stream skipped because the
/// client read too slowly).
async fn live(State(s): State<WebState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (_, rx) = s.live.watch(0);
    let client = LiveClient::new(s.live_clients.clone());
    let hello = futures::stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    let updates = BroadcastStream::new(rx).map(move |u| {
        let _open = &client;
        Ok(event(u))
    });
    let stream = hello
        .chain(updates)
        .take_until(shutdown::requested(s.shutdown.clone()));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_query_or_is_compared_whole() {
        assert_eq!(query_param(Some("a=1&token=xyz"), "token"), Some("xyz"));
        assert_eq!(query_param(Some("tokens=1"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
