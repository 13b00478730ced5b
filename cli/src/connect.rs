//! Reaching the collector, with errors that say what to do.

use std::time::Duration;

use anyhow::{anyhow, Context};
use tonic::transport::{Channel, Endpoint};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `127.0.0.1:7700` is taken as `http://127.0.0.1:7700`.
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// An error and its causes on one line, without repeats.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| {
            format!(
                "invalid collector URL {url:?} (expected e.g. {})",
                crate::args::DEFAULT_COLLECTOR
            )
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach the collector at {url}: {} — is ktrail-collector running? pass --collector URL (or set KTRAIL_COLLECTOR)",
            chain(&e)
        )
    })
}

/// A failed call or a broken stream, naming the collector.
pub fn call_error(url: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unavailable {
        anyhow!(
            "lost the collector at {url}: {} — is ktrail-collector still running?",
            status.message()
        )
    } else {
        anyhow!(
            "the collector at {url} answered: {} ({:?})",
            status.message(),
            status.code()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7700"), "http://127.0.0.1:7700");
        assert_eq!(normalize_url("https://c:1"), "https://c:1");
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_explained() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let url = format!("http://127.0.0.1:{port}");
        let err = connect(&url).await.expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the collector at {url}: ")),
            "{text}"
        );
        assert!(
            text.contains("is ktrail-collector running? pass --collector"),
            "{text}"
        );
    }
}
