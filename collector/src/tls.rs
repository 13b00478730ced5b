//! Mutual TLS for the gRPC server: the collector presents its certificate and
//! accepts only clients (agents, `ktrail`) whose certificate is signed by the
//! configured CA.
//!
//! The handshakes are done here rather than by tonic so that a refused client is
//! logged with its address and the reason (no certificate, a certificate from
//! another CA, an expired one …) — tonic drops failed handshakes silently.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the collector's certificate, its key and the clients' CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The collector's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA (PEM) that signed the clients' certificates.
    pub ca: PathBuf,
}

/// Loading the TLS files or building the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {error}")]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected} (is it the right file?)")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the CA {path} cannot verify clients: {error}")]
    Ca { path: PathBuf, error: String },
    #[error("certificate {cert} and key {key} do not make a TLS identity: {error}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
}

fn open(what: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|error| TlsError::Read {
            what,
            path: path.to_owned(),
            error,
        })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Read {
            what,
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "key (--tls-key)";
    rustls_pemfile::private_key(&mut open(WHAT, path)?)
        .map_err(|error| TlsError::Read {
            what: WHAT,
            path: path.to_owned(),
            error,
        })?
        .ok_or_else(|| TlsError::Empty {
            what: WHAT,
            path: path.to_owned(),
            expected: "PRIVATE KEY",
        })
}

/// The rustls server configuration: our identity, client certificates required
/// and verified against the CA, HTTP/2 only (gRPC).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs("CA (--tls-ca)", &files.ca)? {
        roots.add(ca).map_err(|e| TlsError::Ca {
            path: files.ca.clone(),
            error: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Ca {
            path: files.ca.clone(),
            error: e.to_string(),
        })?;
    let identity_error = |error| TlsError::Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
        error,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(identity_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs("certificate (--tls-cert)", &files.cert)?,
            key(&files.key)?,
        )
        .map_err(identity_error)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts connections on `listener` and yields those whose TLS handshake (with
/// a valid client certificate) succeeded; refused clients are logged with why.
/// Handshakes run concurrently, so a slow or silent client holds up no one.
pub fn incoming(
    listener: TcpListener,
    config: ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                // The server has stopped.
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        debug!(%peer, client = %client_name(&tls), "TLS client accepted");
                        let _ = tx.send(Ok(tls)).await;
                    }
                    // A TCP check (the Deployment's probes, a port scan) connects
                    // and closes without a handshake: not worth a warning.
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        debug!(%peer, error = %e, "connection closed before the TLS handshake");
                    }
                    Ok(Err(e)) => refused(peer, &e.to_string()),
                    Err(_) => refused(peer, "no TLS handshake within 10 s"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn refused(peer: SocketAddr, reason: &str) {
    let hint = if reason.contains("CertificateRequired") || reason.contains("NoCertificate") {
        " (the client sent no certificate: give it --tls-cert and --tls-key)"
    } else if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        " (its certificate is not signed by this collector's --tls-ca)"
    } else {
        ""
    };
    warn!(%peer, reason = %format!("{reason}{hint}"), "refused a client");
}

/// The client certificate's size, for the debug log (its subject would need an
/// X.509 parser; the CA vouches for it anyway).
fn client_name(tls: &TlsStream<TcpStream>) -> String {
    let (_, session) = tls.get_ref();
    match session.peer_certificates() {
        Some(certs) => format!("{} certificate(s)", certs.len()),
        None => "no certificate".into(),
    }
}
