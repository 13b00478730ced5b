//! Command-line flags.

use std::net::SocketAddr;

use clap::Parser;

pub const DEFAULT_TARGETS: &str = "kube-apiserver,kube-scheduler,kube-controller-manager,kubelet,\
containerd,containerd-shim*,runc,etcd,kubectl*";

/// ktrail's per-node agent: traces Kubernetes components with eBPF and streams the
/// events to the collector.
///
/// It tracks processes whose name matches --targets (and every process they start),
/// records their syscalls, TCP connections and process lifecycle in the kernel, and
/// sends them to the collector, buffering (within --buffer-events) while the
/// collector is away. Needs root, or CAP_BPF + CAP_PERFMON.
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
        default_value = "http://127.0.0.1:7700"
    )]
    pub collector: String,

    /// Which processes belong to this node: `auto` = those in the agent's own network
    /// namespace and their descendants (several nodes on one kernel, as in kind);
    /// `all` = every matching process on the kernel; or a network-namespace inode.
    #[arg(long, default_value = "auto")]
    pub scope: String,

    /// Process names to trace, comma separated; a trailing `*` matches a prefix.
    /// Names longer than 15 bytes match the kernel's 15-byte cut.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_TARGETS)]
    pub targets: Vec<String>,

    /// Bytes of each read/write buffer to capture (like `strace -s`), 0..=4096.
    #[arg(long, default_value_t = 4096)]
    pub payload_bytes: u32,

    /// Events held for the collector before new ones are dropped (and counted).
    #[arg(long, default_value_t = 262_144)]
    pub buffer_events: usize,

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
    #[error("--collector {0:?}: expected a URL such as http://10.0.0.1:7700")]
    Collector(String),
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

    #[test]
    fn defaults_are_valid() {
        let a = parse(&[]);
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
}
