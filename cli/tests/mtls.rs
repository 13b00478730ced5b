//! Mutual TLS: the real `ktrail` binary and a bare gRPC client against an
//! in-process collector that requires client certificates.

mod support;

use std::path::Path;
use std::process::Output;

use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::StatusRequest;
use rcgen::ExtendedKeyUsagePurpose;
use support::start;
use tokio::process::Command;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

async fn ktrail(url: &str, cert: &Path, key: &Path, ca: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ktrail"))
        .args(["--collector", url, "--tls-cert"])
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .arg("--tls-ca")
        .arg(ca)
        .args(["status", "--output", "json"])
        .env_remove("KTRAIL_INSECURE")
        .output()
        .await
        .expect("run ktrail")
}

#[tokio::test]
async fn a_client_with_a_certificate_from_the_ca_is_served() {
    let s = start().await;
    let (cert, key) = s.ours.leaf("cli", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let out = ktrail(&s.url, &cert, &key, &s.ours.ca()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    s.collector.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let s = start().await;
    let (cert, key) = s
        .other
        .leaf("cli", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let out = ktrail(&s.url, &cert, &key, &s.ours.ca()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not trust this client certificate (not signed by its CA)"),
        "{stderr}"
    );
    s.collector.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_collector_certificate_from_another_ca_is_refused_by_the_client() {
    let s = start().await;
    let (cert, key) = s.ours.leaf("cli", &[], ExtendedKeyUsagePurpose::ClientAuth);
    let out = ktrail(&s.url, &cert, &key, &s.other.ca()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the collector's certificate is not signed by --tls-ca"),
        "{stderr}"
    );
    s.collector.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let s = start().await;
    // The CLI will not even start without --tls-cert, so a bare client: it trusts
    // the collector but presents nothing.
    let ca = std::fs::read(s.ours.ca()).expect("ca");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let result = async {
        let channel = Endpoint::from_shared(s.url.clone())?
            .tls_config(tls)?
            .connect()
            .await?;
        QueryClient::new(channel)
            .status(StatusRequest::default())
            .await
            .map_err(|status| {
                let mut text = status.to_string();
                let mut source = std::error::Error::source(&status);
                while let Some(e) = source {
                    text.push_str(&format!(": {e}"));
                    source = e.source();
                }
                anyhow::anyhow!(text)
            })?;
        anyhow::Ok(())
    }
    .await;
    let err = format!("{:#}", result.expect_err("refused"));
    assert!(err.contains("CertificateRequired"), "{err}");
    s.collector.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_cli_without_certificates_says_which_flags_are_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_ktrail"))
        .args(["--collector", "https://127.0.0.1:1", "status"])
        .env_remove("KTRAIL_TLS_CERT")
        .env_remove("KTRAIL_TLS_KEY")
        .env_remove("KTRAIL_TLS_CA")
        .env_remove("KTRAIL_INSECURE")
        .output()
        .await
        .expect("run ktrail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the collector speaks mutual TLS: pass --tls-cert, --tls-key, --tls-ca"),
        "{stderr}"
    );
}
