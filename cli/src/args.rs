//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_COLLECTOR: &str = "https://127.0.0.1:7700";

/// ktrail: follow requests across a Kubernetes cluster, live.
///
/// The collector is reached over mutual TLS: --tls-cert/--tls-key identify you,
/// --tls-ca verifies the collector (`cargo xtask certs` writes a set to
/// deploy/certs/: cli.crt, cli.key, ca.crt). Against a collector started with
/// --insecure, pass --insecure.
#[derive(Debug, Parser)]
#[command(name = "ktrail", version)]
pub struct Cli {
    /// The collector's gRPC address (a bare HOST:PORT gets https://, or http://
    /// with --insecure).
    #[arg(long, global = true, env = "KTRAIL_COLLECTOR", value_name = "URL", default_value = DEFAULT_COLLECTOR)]
    pub collector: String,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Your client certificate (PEM), signed by the collector's CA.
    #[arg(long, global = true, env = "KTRAIL_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, global = true, env = "KTRAIL_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The CA (PEM) that signed the collector's certificate.
    #[arg(long, global = true, env = "KTRAIL_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The name to verify in the collector's certificate (default: the host of
    /// --collector), e.g. ktrail-collector.ktrail-system.svc when connecting by IP.
    #[arg(
        long,
        global = true,
        env = "KTRAIL_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,

    /// Talk plaintext gRPC to a collector started with --insecure.
    #[arg(long, global = true, env = "KTRAIL_INSECURE",
          conflicts_with_all = ["tls_cert", "tls_key", "tls_ca", "tls_server_name"])]
    pub insecure: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people (colour on a terminal unless NO_COLOR is set).
    #[default]
    Human,
    /// One JSON object per line (schemas in docs/json.md).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print hops (one request and its response between two processes) as they complete.
    Watch(WatchArgs),
    /// Print the syscalls and process events of chosen processes anywhere in the cluster, strace-like.
    Trace(TraceArgs),
    /// Show every agent's delivery and loss counters, and totals.
    Status(StatusArgs),
    /// List flows (everything one user operation caused), most recent first.
    Flows(FlowsArgs),
    /// Print one flow as a tree of hops (or as JSON lines), optionally with
    /// the syscalls behind each hop.
    Show(ShowArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WatchView {
    /// Each flow as it unfolds: a header, then its hops indented under the
    /// hop that caused them. Hops that belong to no flow are not shown.
    #[default]
    Flows,
    /// Every hop, one line each, as it completes (flow or not).
    Hops,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// At most this many flows.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: u32,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// The hop tree for people.
    #[default]
    Tree,
    /// The flow then its hops, one JSON object per line (docs/json.md).
    Jsonl,
    /// Chrome Trace Event Format JSON for Perfetto (ui.perfetto.dev: "Open trace
    /// file") or chrome://tracing: a process per node, a thread per component,
    /// a slice per hop, arrows from each hop's parent. Save it to a file:
    /// `ktrail show ID --format perfetto > flow.json`.
    Perfetto,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The flow's id (`ktrail flows` lists them), or a unique prefix of it.
    pub id: String,
    /// Under each hop, the syscalls and Go TLS reads/writes behind it.
    #[arg(long)]
    pub syscalls: bool,
    /// How to print it (with --syscalls, perfetto shows each syscall as an
    /// instant on its process's thread).
    #[arg(long, value_enum, default_value_t = ShowFormat::Tree)]
    pub format: ShowFormat,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// First print up to N of the most recent hops the collector holds (and
    /// their flows).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub replay: u32,
    /// What to show (human output): flows as trees, or every hop.
    #[arg(long, value_enum, default_value_t = WatchView::Flows)]
    pub view: WatchView,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Only events from this node (exact name).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only processes with this name; a trailing '*' matches a prefix ("kube*").
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,
    /// Only this process id.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn collector_flag_goes_anywhere() {
        let cli = Cli::try_parse_from([
            "ktrail",
            "status",
            "--collector",
            "http://x:1",
            "--insecure",
            "--output",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.collector, "http://x:1");
        assert!(cli.tls.insecure);
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs {
                output: Output::Json
            })
        ));
    }
}
