//! The collector's web page (`ktrail-collector --web-listen ADDR`): flows as
//! a live swimlane timeline, read-only, one self-contained page.
//!
//! - `GET /` the page (page.html: HTML, CSS and JavaScript, nothing fetched
//!   from elsewhere);
//! - `GET /api/flows?limit=N` recent flows, most recent first;
//! - `GET /api/flows/:id` one flow (id or unique prefix) and its hops;
//! - `GET /api/live` Server-Sent Events: `hop`, `flow`, `lagged`.
//!
//! Plain HTTP. With `--web-token` every request needs the token (header
//! `Authorization: Bearer …`, or `?token=…`); without it anyone who reaches the
//! address reads every flow, so bind it to a private address or reach it
//! through `kubectl port-forward`.

mod json;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::live::LiveHub;
use crate::shutdown;
use crate::store::Store;

pub use routes::WebState;

#[derive(Clone, Debug)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Required of every request when set.
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("web page: cannot listen on {addr}: {error}")]
pub struct WebError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// A running web server.
#[derive(Debug)]
pub struct WebServer {
    pub local_addr: SocketAddr,
    /// Open `/api/live` streams (the page's live connections).
    pub live_clients: Arc<AtomicUsize>,
    pub task: JoinHandle<()>,
}

/// Binds `cfg.listen` and serves the page until `shutdown` turns true.
pub async fn start(
    cfg: WebConfig,
    live: Arc<LiveHub>,
    store: Option<Store>,
    shutdown: watch::Receiver<bool>,
) -> Result<WebServer, WebError> {
    let err = |error| WebError {
        addr: cfg.listen,
        error,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(err)?;
    let local_addr = listener.local_addr().map_err(err)?;
    let live_clients = Arc::new(AtomicUsize::new(0));
    let token_required = cfg.token.is_some();
    let state = WebState {
        live,
        store,
        token: cfg.token.map(Arc::from),
        live_clients: live_clients.clone(),
        shutdown: shutdown.clone(),
    };
    let app = routes::router(state);
    let task = tokio::spawn(async move {
        let stop = shutdown::requested(shutdown);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(error = %e, "web page server stopped");
        }
    });
    info!(addr = %local_addr, token_required, "web page listening");
    Ok(WebServer {
        local_addr,
        live_clients,
        task,
    })
}
