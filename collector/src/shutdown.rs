//! The collector-wide shutdown signal.

use tokio::sync::watch;

/// Resolves once shutdown is requested (or its sender is gone).
pub async fn requested(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
