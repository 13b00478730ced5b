//! Reaching the collector, with errors that say what to do.

use anyhow::{anyhow, bail};
use ktrail_proto::client_tls::{self, ClientTls};
use ktrail_proto::v1::query_client::QueryClient;
use tonic::transport::Channel;

use crate::args::TlsArgs;

/// Largest reply the CLI accepts: a whole flow comes as one message (each hop
/// with up to 4 KiB captured each way, and with --syscalls every event's
/// payload), far over gRPC's default 4 MiB for a deployment of a few pods.
pub const MAX_REPLY: usize = 512 << 20;

/// A Query client that takes replies up to [`MAX_REPLY`].
pub fn query_client(channel: Channel) -> QueryClient<Channel> {
    QueryClient::new(channel).max_decoding_message_size(MAX_REPLY)
}

/// `127.0.0.1:7700` is taken as `https://127.0.0.1:7700` (`http://` when insecure).
pub fn normalize_url(url: &str, insecure: bool) -> String {
    if url.contains("://") {
        url.to_owned()
    } else if insecure {
        format!("http://{url}")
    } else {
        format!("https://{url}")
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

/// The TLS files from the flags, or `None` with --insecure; says what is missing
/// otherwise.
pub fn client_tls(url: &str, tls: &TlsArgs) -> anyhow::Result<Option<ClientTls>> {
    if tls.insecure {
        if !url.starts_with("http://") {
            bail!("--insecure talks plaintext: use an http:// --collector URL, not {url}");
        }
        return Ok(None);
    }
    if !url.starts_with("https://") {
        bail!(
            "{url} is plaintext http://: the collector speaks mutual TLS by default (use https:// \
             and --tls-cert/--tls-key/--tls-ca), or pass --insecure if it runs with --insecure"
        );
    }
    let (Some(cert), Some(key), Some(ca)) = (&tls.tls_cert, &tls.tls_key, &tls.tls_ca) else {
        let missing: Vec<&str> = [
            ("--tls-cert", tls.tls_cert.is_none()),
            ("--tls-key", tls.tls_key.is_none()),
            ("--tls-ca", tls.tls_ca.is_none()),
        ]
        .into_iter()
        .filter_map(|(flag, missing)| missing.then_some(flag))
        .collect();
        bail!(
            "the collector speaks mutual TLS: pass {} (or set KTRAIL_TLS_CERT, KTRAIL_TLS_KEY, \
             KTRAIL_TLS_CA); `cargo xtask certs` writes cli.crt, cli.key and ca.crt to deploy/certs/. \
             --insecure for a collector started with --insecure",
            missing.join(", ")
        );
    };
    Ok(Some(ClientTls {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
        server_name: tls.tls_server_name.clone(),
    }))
}

pub async fn connect(url: &str, tls: &TlsArgs) -> anyhow::Result<Channel> {
    let tls = client_tls(url, tls)?;
    let endpoint = client_tls::endpoint(url, tls.as_ref()).map_err(|e| match e {
        client_tls::ClientTlsError::Url(_) => anyhow!(
            "invalid collector URL {url:?} (expected e.g. {})",
            crate::args::DEFAULT_COLLECTOR
        ),
        e => e.into(),
    })?;
    let channel = endpoint.connect().await.map_err(|e| {
        let text = chain(&e);
        if let Some(hint) = client_tls::hint(&text) {
            return anyhow!("the TLS handshake with the collector at {url} failed: {text} — {hint}");
        }
        anyhow!(
            "cannot reach the collector at {url}: {text} — is ktrail-collector running? pass --collector URL (or set KTRAIL_COLLECTOR)"
        )
    })?;
    if let Some(tls) = &tls {
        // A refused client certificate shows only after the handshake (TLS 1.3):
        // ask once, so that the error says so instead of "operation was canceled".
        if let Err(why) = client_tls::probe(url, tls).await {
            if client_tls::hint(&why).is_some() {
                bail!("the collector at {url} refused the connection: {why}");
            }
        }
    }
    Ok(channel)
}

/// A failed call or a broken stream, naming the collector.
pub fn call_error(url: &str, status: tonic::Status) -> anyhow::Error {
    let text = chain(&status);
    if let Some(hint) = client_tls::hint(&text) {
        // TLS 1.3: the collector refuses a client certificate after the client
        // finished its handshake, so the refusal arrives with the first call.
        return anyhow!("the collector at {url} refused the connection: {text} — {hint}");
    }
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
    fn without_certificates_the_error_says_which_flags() {
        let tls = TlsArgs {
            tls_cert: Some("cli.crt".into()),
            tls_key: None,
            tls_ca: None,
            tls_server_name: None,
            insecure: false,
        };
        let err = client_tls("https://c:1", &tls).expect_err("incomplete");
        assert!(
            err.to_string()
                .starts_with("the collector speaks mutual TLS: pass --tls-key, --tls-ca"),
            "{err}"
        );
        let err = client_tls("http://c:1", &tls).expect_err("plaintext URL");
        assert!(err.to_string().contains("pass --insecure"), "{err}");
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(
            normalize_url("127.0.0.1:7700", true),
            "http://127.0.0.1:7700"
        );
        assert_eq!(
            normalize_url("127.0.0.1:7700", false),
            "https://127.0.0.1:7700"
        );
        assert_eq!(normalize_url("https://c:1", true), "https://c:1");
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_explained() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let url = format!("http://127.0.0.1:{port}");
        let tls = TlsArgs {
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_server_name: None,
            insecure: true,
        };
        let err = connect(&url, &tls).await.expect_err("nothing listens");
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
