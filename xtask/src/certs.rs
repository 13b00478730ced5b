//! `cargo xtask certs`: a CA and the certificates for mutual TLS between the
//! agents, the CLI and the collector.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

pub const LONG_ABOUT: &str = "\
Make the certificates for mutual TLS between ktrail's agents, CLI and collector: a CA of
its own (ca.crt, ca.key), the collector's server certificate (collector.crt/.key), one
client certificate shared by the agents (agent.crt/.key) and one for the CLI
(cli.crt/.key), all PEM, keys ECDSA P-256 and mode 0600.

The collector's certificate is valid for ktrail-collector, ktrail-collector.ktrail-system,
….svc and ….svc.cluster.local (the Service in deploy/), localhost and 127.0.0.1 (a
`kubectl port-forward`), plus every --san. The collector accepts only clients whose
certificate this CA signed.

It also writes web-token, a random token the collector's web page requires
(`?token=…` or `Authorization: Bearer …`), once.

deploy/kustomization.yaml puts the collector's and the agents' files and the token into
Secrets (never ca.key, which stays here to sign more). Use the CLI's with
  ktrail --tls-cert deploy/certs/cli.crt --tls-key deploy/certs/cli.key --tls-ca deploy/certs/ca.crt …
An existing set is kept (a new CA would lock out everything deployed with the old
one); --force replaces it.";

const COLLECTOR_NAMES: [&str; 6] = [
    "ktrail-collector",
    "ktrail-collector.ktrail-system",
    "ktrail-collector.ktrail-system.svc",
    "ktrail-collector.ktrail-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
];

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write to (created when missing).
    #[arg(long, value_name = "DIR", default_value = "deploy/certs")]
    pub out: PathBuf,
    /// Another name or IP address for the collector's certificate (repeatable),
    /// e.g. the address agents outside the cluster reach it on.
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// Validity of every certificate, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
    /// Replace an existing set (everything deployed with the old CA must then get the new files).
    #[arg(long)]
    pub force: bool,
}

/// One certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// A whole set, in memory.
pub struct CertSet {
    pub ca: Issued,
    pub collector: Issued,
    pub agent: Issued,
    pub cli: Issued,
}

fn params(common_name: &str, sans: Vec<String>, days: u32) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(sans)
        .with_context(|| format!("a subject alternative name of {common_name} is invalid"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ktrail");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = std::time::SystemTime::now();
    // An hour back: nodes' clocks differ a little.
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86_400)).into();
    Ok(params)
}

/// Makes a CA and the collector's, agents' and CLI's certificates.
pub fn generate(extra_sans: &[String], days: u32) -> Result<CertSet> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = params("ktrail CA", Vec::new(), days)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("signing the CA")?;

    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| -> Result<Issued> {
        let key = KeyPair::generate().with_context(|| format!("generating the {name} key"))?;
        let mut p = params(name, sans, days)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let cert = p
            .signed_by(&key, &ca)
            .with_context(|| format!("signing the {name} certificate"))?;
        Ok(Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    };
    let mut collector_sans: Vec<String> = COLLECTOR_NAMES.iter().map(|s| s.to_string()).collect();
    collector_sans.extend(extra_sans.iter().cloned());
    Ok(CertSet {
        collector: leaf(
            "ktrail-collector",
            collector_sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?,
        agent: leaf(
            "ktrail-agent",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?,
        cli: leaf(
            "ktrail-cli",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?,
        ca: Issued {
            cert: ca.pem(),
            key: ca_key_pem,
        },
    })
}

fn write(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<()> {
    let path = dir.join(name);
    // Remove first: an existing file keeps its old mode when truncated.
    let _ = fs::remove_file(&path);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// The files of a set, as `cargo xtask certs` writes them.
pub const FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "collector.crt",
    "collector.key",
    "agent.crt",
    "agent.key",
    "cli.crt",
    "cli.key",
];

pub fn write_set(dir: &Path, set: &CertSet) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, issued) in [
        ("ca", &set.ca),
        ("collector", &set.collector),
        ("agent", &set.agent),
        ("cli", &set.cli),
    ] {
        write(dir, &format!("{name}.crt"), &issued.cert, 0o644)?;
        write(dir, &format!("{name}.key"), &issued.key, 0o600)?;
    }
    Ok(())
}

/// The web page's token file: 32 random bytes as hex, made once.
pub const WEB_TOKEN: &str = "web-token";

fn ensure_web_token(dir: &Path) -> Result<()> {
    let path = dir.join(WEB_TOKEN);
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(dir, WEB_TOKEN, &hex, 0o600)?;
    println!("wrote a token for the web page to {}", path.display());
    Ok(())
}

pub fn run(args: CertsArgs) -> Result<()> {
    let result = run_certs(&args);
    if result.is_ok() {
        ensure_web_token(&args.out)?;
    }
    result
}

fn run_certs(args: &CertsArgs) -> Result<()> {
    let present: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| args.out.join(f).exists())
        .collect();
    if present.len() == FILES.len() && !args.force && args.sans.is_empty() {
        println!(
            "certificates already in {} (kept; --force makes a new CA and set)",
            args.out.display()
        );
        return Ok(());
    }
    if !present.is_empty() && !args.force {
        bail!(
            "{} already holds {} of a certificate set: pass --force to replace the whole set \
             (a new CA: everything deployed with the old one needs the new files)",
            args.out.display(),
            present.join(", ")
        );
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let set = generate(&args.sans, args.days)?;
    let _ = fs::remove_file(args.out.join(WEB_TOKEN));
    write_set(&args.out, &set)?;
    println!(
        "wrote a CA and certificates for the collector, the agents and the CLI to {} (valid {} days)",
        args.out.display(),
        args.days
    );
    println!(
        "collector names: {}",
        COLLECTOR_NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(args.sans.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_is_written_with_private_keys_unreadable_to_others() {
        let dir = std::env::temp_dir().join(format!("ktrail-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let set = generate(&["collector.example".into()], 2).expect("generate");
        write_set(&dir, &set).expect("write");
        ensure_web_token(&dir).expect("token");
        let token = fs::read_to_string(dir.join(WEB_TOKEN)).expect("token written");
        assert_eq!(token.len(), 64, "{token}");
        ensure_web_token(&dir).expect("kept");
        assert_eq!(
            fs::read_to_string(dir.join(WEB_TOKEN)).expect("token"),
            token
        );
        for f in FILES {
            let path = dir.join(f);
            let text = fs::read_to_string(&path).expect("written");
            let mode = fs::metadata(&path).expect("meta").permissions();
            use std::os::unix::fs::PermissionsExt;
            if f.ends_with(".key") {
                assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{f}");
                assert_eq!(mode.mode() & 0o777, 0o600, "{f}");
            } else {
                assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
            }
        }
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_partial_set_is_not_overwritten_without_force() {
        let dir = std::env::temp_dir().join(format!("ktrail-certs-partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        fs::write(dir.join("ca.crt"), "x").expect("write");
        let args = CertsArgs {
            out: dir.clone(),
            sans: Vec::new(),
            days: 1,
            force: false,
        };
        let err = run(args).expect_err("partial set");
        assert!(!dir.join(WEB_TOKEN).exists(), "nothing written on an error");
        assert!(err.to_string().contains("pass --force"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).expect("kept"), "x");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
