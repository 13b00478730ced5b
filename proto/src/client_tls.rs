//! The client side of mutual TLS with the collector, shared by the agent and the
//! CLI: the endpoint from the certificate files, and a probe that tells why the
//! collector refused a connection.
//!
//! Why a probe: with TLS 1.3 the collector checks the client's certificate after
//! the client has finished its handshake, so a refusal reaches the client as an
//! alert on the first read — which tonic turns into "operation was canceled".
//! The probe does one handshake itself and reads the collector's first bytes (its
//! HTTP/2 SETTINGS) or the alert, whose name says what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The files (and name) a client uses to reach the collector over mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// The name to verify in the collector's certificate; default: the URL's host.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("cannot read {flag} {path}: {error}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{flag} {path} holds no PEM {expected}")]
    NotPem {
        flag: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("collector URL {0:?} is invalid (expected e.g. https://127.0.0.1:7700)")]
    Url(String),
    #[error("the TLS files do not make a client configuration: {0}")]
    Config(String),
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClientTlsError> {
    let pem = std::fs::read(path).map_err(|error| ClientTlsError::Read {
        flag,
        path: path.to_owned(),
        error,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
        return Err(ClientTlsError::NotPem {
            flag,
            path: path.to_owned(),
            expected: if flag == "--tls-key" {
                "PRIVATE KEY"
            } else {
                "CERTIFICATE"
            },
        });
    }
    Ok(pem)
}

/// The endpoint for `url`: mutual TLS with `tls` (its files are read now, so a
/// bad file is reported at once), or plaintext with `None`.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientTlsError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| ClientTlsError::Url(url.to_owned()))?
        .connect_timeout(TIMEOUT);
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("--tls-ca", &tls.ca)?))
        .identity(Identity::from_pem(
            read("--tls-cert", &tls.cert)?,
            read("--tls-key", &tls.key)?,
        ));
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| ClientTlsError::Config(e.to_string()))
}

/// What a TLS failure in `text` (an error chain) means, and what to do.
pub fn hint(text: &str) -> Option<&'static str> {
    const HINTS: [(&str, &str); 8] = [
        ("CertificateRequired", "the collector requires a client certificate: pass --tls-cert and --tls-key"),
        ("alert: UnknownCA", "the collector does not trust this client certificate (not signed by its CA): use a --tls-cert from the collector's `cargo xtask certs` set"),
        ("alert: DecryptError", "the collector does not trust this client certificate (not signed by its CA): use a --tls-cert from the collector's `cargo xtask certs` set"),
        ("alert: BadCertificate", "the collector refused this client certificate: use a --tls-cert from the collector's `cargo xtask certs` set"),
        ("Expired", "a certificate has expired: make a new set with `cargo xtask certs --force`"),
        ("invalid peer certificate: UnknownIssuer", "the collector's certificate is not signed by --tls-ca: use the ca.crt of the collector's set"),
        ("invalid peer certificate: BadSignature", "the collector's certificate is not signed by --tls-ca: use the ca.crt of the collector's set"),
        ("NotValidForName", "the collector's certificate is not for this host name: pass --tls-server-name with a name it holds (e.g. ktrail-collector.ktrail-system.svc)"),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, hint)| *hint)
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port.parse().ok()?,
    ))
}

/// One TLS handshake with the collector at `url` and a read of its first bytes.
/// `Ok` if it accepted us; otherwise the failure, with [`hint`]'s advice when
/// one applies.
pub async fn probe(url: &str, tls: &ClientTls) -> Result<(), String> {
    let (host, port) = host_port(url).ok_or_else(|| format!("no host:port in {url}"))?;
    let certs = |flag, path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        rustls_pemfile::certs(&mut read(flag, path).map_err(|e| e.to_string())?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{flag} {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for ca in certs("--tls-ca", &tls.ca)? {
        roots.add(ca).map_err(|e| format!("--tls-ca: {e}"))?;
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(
        &mut read("--tls-key", &tls.key)
            .map_err(|e| e.to_string())?
            .as_slice(),
    )
    .map_err(|e| format!("--tls-key: {e}"))?
    .ok_or("--tls-key holds no key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs("--tls-cert", &tls.cert)?, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = tls.server_name.clone().unwrap_or(host.clone());
    let server_name =
        ServerName::try_from(name.clone()).map_err(|e| format!("server name {name:?}: {e}"))?;
    let explain = |e: std::io::Error| {
        let text = e.to_string();
        match hint(&text) {
            Some(h) => format!("{text} — {h}"),
            None => text,
        }
    };
    let attempt = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let mut stream = TlsConnector::from(Arc::new(config))
            .connect(server_name, tcp)
            .await
            .map_err(explain)?;
        let mut first = [0u8; 9];
        match stream.read(&mut first).await {
            Ok(0) => Err("the collector closed the connection after the TLS handshake".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(explain(e)),
        }
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer from {host}:{port} within {TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_from_urls() {
        assert_eq!(
            host_port("https://10.0.0.1:7700"),
            Some(("10.0.0.1".into(), 7700))
        );
        assert_eq!(
            host_port("https://[::1]:7700/x"),
            Some(("::1".into(), 7700))
        );
        assert_eq!(host_port("https://host"), None);
    }

    #[test]
    fn alerts_get_advice() {
        assert!(hint("received fatal alert: CertificateRequired")
            .is_some_and(|h| h.contains("--tls-cert")));
        assert!(
            hint("invalid peer certificate: UnknownIssuer").is_some_and(|h| h.contains("--tls-ca"))
        );
        assert_eq!(hint("connection refused"), None);
    }
}
