//! A CA, certificates it signs, and an in-process collector that requires
//! them (mutual TLS), for the tests that talk to the collector as a client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ktrail_collector::tls::TlsFiles;
use ktrail_collector::{Collector, CollectorConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

/// A CA in `dir` (`NAME-ca.crt`) and leaf certificates it signs.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: &'static str,
}

impl Ca {
    pub fn new(dir: &Path, name: &'static str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
        std::fs::write(dir.join(format!("{name}-ca.crt")), issuer.pem()).expect("write");
        Self {
            issuer,
            dir: dir.to_owned(),
            name,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// Writes `NAME-LEAF.crt` and `.key`; returns (cert, key).
    pub fn leaf(
        &self,
        leaf: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let base = self.dir.join(format!("{}-{leaf}", self.name));
        let (crt, k) = (base.with_extension("crt"), base.with_extension("key"));
        std::fs::write(&crt, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (crt, k)
    }
}

pub struct Setup {
    pub collector: Collector,
    pub url: String,
    pub ours: Ca,
    pub other: Ca,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = Ca::new(dir.path(), "ours");
    let other = Ca::new(dir.path(), "other");
    let (cert, key) = ours.leaf(
        "collector",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut cfg = CollectorConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("data"),
    );
    cfg.tls = Some(TlsFiles {
        cert,
        key,
        ca: ours.ca(),
    });
    let collector = Collector::start(cfg).await.expect("collector");
    let url = format!("https://localhost:{}", collector.local_addr().port());
    Setup {
        collector,
        url,
        ours,
        other,
        _dir: dir,
    }
}

impl Setup {
    /// A gRPC channel presenting a client certificate from the collector's CA.
    pub async fn client(&self, name: &str) -> tonic::transport::Channel {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let (cert, key) = self
            .ours
            .leaf(name, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let read = |p: &Path| std::fs::read(p).expect("read certificate file");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ours.ca())))
            .identity(Identity::from_pem(read(&cert), read(&key)))
            .domain_name("localhost");
        Endpoint::from_shared(self.url.clone())
            .expect("url")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
            .expect("connect with a valid client certificate")
    }
}
