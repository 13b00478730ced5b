//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:7700";

/// ktrail: follow requests across a Kubernetes cluster, live.
#[derive(Debug, Parser)]
#[command(name = "ktrail", version)]
pub struct Cli {
    /// The collector's gRPC address.
    #[arg(long, global = true, env = "KTRAIL_COLLECTOR", value_name = "URL", default_value = DEFAULT_COLLECTOR)]
    pub collector: String,

    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// First print up to N of the most recent hops the collector holds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub replay: u32,
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
            "--output",
            "json",
        ])
        .expect("parses");
        assert_eq!(cli.collector, "http://x:1");
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs {
                output: Output::Json
            })
        ));
    }
}
