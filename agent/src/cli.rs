//! Command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

pub const DEFAULT_TARGETS: &str = "kube-apiserver,kube-scheduler,kube-controller-manager,kubelet,\
containerd,containerd-shim*,runc,etcd,kubectl*";

/// ktrail's per-node agent: traces Kubernetes components with eBPF and streams the
/// events to the collector.
///
/// It tracks processes whose name matches --targets (and every process they start),
/// records their syscalls, TCP connections and process lifecycle in the kernel, and
/// sends them to the collector, buffering (within --buffer-events) while the
/// collector is away. Needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_PTRACE to read
/// other users' /proc/PID/exe; deploy/ explains each capability).
///
/// The connection to the collector is mutual TLS by default: --tls-cert/--tls-key
/// identify this agent, --tls-ca verifies the collector (`cargo xtask certs` makes a
/// set). --insecure streams plaintext to an http:// collector instead.
#[derive(Debug, Parser)]
#[command(name = "ktrail-agent", version, about, long_about)]
pub struct Args {
    /// Name of this node as the flows will show it (default: the host name).
    #[arg(long, env = "KTRAIL_NODE_NAME")]
    pub node_name: Option<String>,

    /// Collector gRPC address.
    #[arg(
        long,
        env = "KTRAIL_COLLECTOR",
        default_value = "https://127.0.0.1:7700"
    )]
    pub collector: String,

    /// This agent's client certificate (PEM), signed by the collector's CA.
    #[arg(long, env = "KTRAIL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "KTRAIL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The CA (PEM) that signed the collector's certificate.
    #[arg(long, env = "KTRAIL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The name to verify in the collector's certificate (default: the host of
    /// --collector). For connecting by IP to a certificate issued for a DNS name,
    /// e.g. ktrail-collector.ktrail-system.svc.
    #[arg(long, env = "KTRAIL_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Stream plaintext to an http:// collector, without TLS (tests, demos).
    #[arg(long, env = "KTRAIL_INSECURE", conflicts_with_all = ["tls_cert", "tls_key", "tls_ca", "tls_server_name"])]
    pub insecure: bool,

    /// Which processes belong to this node: `auto` = those in the agent's own network
    /// namespace and their descendants (several nodes on one kernel, as in kind);
    /// `all` = every matching process on the kernel; or a network-namespace inode.
    #[arg(long, default_value = "auto")]
    pub scope: String,

    /// Process names to trace, comma separated; a trailing `*` matches a prefix.
    /// Names longer than 15 bytes match the kernel's 15-byte cut.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TARGETS)]
    pub targets: Vec<String>,

    /// Bytes of each socket read/write buffer to capture (like `strace -s`), 0..=4096.
    /// Reads and writes of files, pipes and terminals are reported without their bytes.
    #[arg(long, default_value_t = 4096)]
    pub payload_bytes: u32,

    /// Events held for the collector before new ones are dropped (and counted).
    #[arg(long, default_value_t = 262_144)]
    pub buffer_events: usize,

    /// Bytes of events (payloads, names, addresses) held for the collector before new
    /// ones are dropped (and counted), whichever of this and --buffer-events comes first.
    #[arg(long, default_value_t = 32 << 20)]
    pub buffer_bytes: usize,

    /// Benchmarks only: attach empty programs to the syscall tracepoints (no syscall
    /// events), to measure what syscall tracing costs before any of ktrail's work.
    #[arg(long, hide = true)]
    pub empty_syscall_programs: bool,

    /// Address of the /metrics (Prometheus) and /readyz endpoint.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,

    /// Shift this node's timestamps by this many milliseconds (to test the
    /// collector's clock-skew correction).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,

    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    OwnNetns,
    All,
    Netns(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("--scope {0:?}: expected `auto`, `all` or a network-namespace inode number")]
    Scope(String),
    #[error("--payload-bytes {0}: must be at most 4096")]
    PayloadBytes(u32),
    #[error("--collector {0:?}: expected a URL such as https://10.0.0.1:7700")]
    Collector(String),
    #[error("--collector {0:?}: mutual TLS needs an https:// URL (or pass --insecure for plaintext http://)")]
    NeedsHttps(String),
    #[error("--collector {0:?}: --insecure talks plaintext; use an http:// URL")]
    NeedsHttp(String),
    #[error("mutual TLS with the collector needs {0} (or --insecure for plaintext); `cargo xtask certs` makes a certificate set")]
    TlsMissing(&'static str),
    #[error("--targets: pattern {0:?} is empty")]
    Target(String),
    #[error("--buffer-events must be at least 1")]
    Buffer,
}

impl Args {
    pub fn scope(&self) -> Result<Scope, ArgError> {
        match self.scope.as_str() {
            "auto" => Ok(Scope::OwnNetns),
            "all" => Ok(Scope::All),
            n => n
                .parse()
                .map(Scope::Netns)
                .map_err(|_| ArgError::Scope(n.into())),
        }
    }

    pub fn validate(&self) -> Result<(), ArgError> {
        self.scope()?;
        if self.payload_bytes as usize > ktrail_agent_common::MAX_PAYLOAD {
            return Err(ArgError::PayloadBytes(self.payload_bytes));
        }
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            return Err(ArgError::Collector(self.collector.clone()));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.trim_end_matches('*').is_empty())
        {
            return Err(ArgError::Target(t.clone()));
        }
        if self.buffer_events == 0 {
            return Err(ArgError::Buffer);
        }
        if self.insecure {
            if !self.collector.starts_with("http://") {
                return Err(ArgError::NeedsHttp(self.collector.clone()));
            }
        } else {
            if !self.collector.starts_with("https://") {
                return Err(ArgError::NeedsHttps(self.collector.clone()));
            }
            for (flag, set) in [
                ("--tls-cert", self.tls_cert.is_some()),
                ("--tls-key", self.tls_key.is_some()),
                ("--tls-ca", self.tls_ca.is_some()),
            ] {
                if !set {
                    return Err(ArgError::TlsMissing(flag));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("ktrail-agent").chain(extra.iter().copied()))
            .expect("parses")
    }

    const TLS: [&str; 6] = [
        "--tls-cert",
        "a.crt",
        "--tls-key",
        "a.key",
        "--tls-ca",
        "ca.crt",
    ];

    #[test]
    fn defaults_are_valid() {
        let a = parse(&TLS);
        assert_eq!(a.validate(), Ok(()));
        assert_eq!(a.scope(), Ok(Scope::OwnNetns));
        assert!(a.targets.iter().any(|t| t == "containerd-shim*"));
    }

    #[test]
    fn bad_values_name_the_problem() {
        assert_eq!(
            parse(&["--scope", "mine"]).validate(),
            Err(ArgError::Scope("mine".into()))
        );
        assert_eq!(
            parse(&["--payload-bytes", "9000"]).validate(),
            Err(ArgError::PayloadBytes(9000))
        );
        assert!(matches!(
            parse(&["--collector", "10.0.0.1:7700"]).validate(),
            Err(ArgError::Collector(_))
        ));
        assert!(matches!(
            parse(&["--targets", "kubelet,*"]).validate(),
            Err(ArgError::Target(_))
        ));
        assert_eq!(
            parse(&["--scope", "4026531840"]).scope(),
            Ok(Scope::Netns(4026531840))
        );
        assert_eq!(parse(&["--clock-offset-ms", "-250"]).clock_offset_ms, -250);
    }

    #[test]
    fn tls_is_the_default_and_insecure_is_plain_http() {
        assert_eq!(
            parse(&["--tls-cert", "a.crt", "--tls-key", "a.key"]).validate(),
            Err(ArgError::TlsMissing("--tls-ca"))
        );
        assert_eq!(
            parse(&TLS).validate(),
            Ok(()),
            "the default https URL with certificates"
        );
        let mut plain = vec!["--collector", "http://10.0.0.1:7700"];
        assert!(matches!(
            parse(&[&plain[..], &TLS[..]].concat()).validate(),
            Err(ArgError::NeedsHttps(_))
        ));
        plain.push("--insecure");
        assert_eq!(parse(&plain).validate(), Ok(()));
        assert!(matches!(
            parse(&["--insecure"]).validate(),
            Err(ArgError::NeedsHttp(_))
        ));
        let both = Args::try_parse_from(["ktrail-agent", "--insecure", "--tls-ca", "ca.crt"]);
        assert!(both.is_err(), "--insecure conflicts with the TLS files");
    }
}
