//! `cargo xtask`: ktrail's developer tasks.

mod bench;
mod certs;
mod cluster;
mod demo;
mod demo_stand_in;
mod ebpf;
mod image;
mod jaeger;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "ktrail developer tasks",
    long_about = "ktrail developer tasks. All of them need root: they install Debian \
                  packages, mount tracefs, create network namespaces and load eBPF programs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and running ktrail needs (idempotent, quick when done)
    #[command(long_about = setup::LONG_ABOUT)]
    Setup,
    /// Run setup, build everything, run all tests (the one test command, also used by CI)
    #[command(long_about = test::LONG_ABOUT)]
    Test,
    /// Run setup, start the local cluster with ktrail and show the live flow of `kubectl run` (Ctrl-C stops)
    #[command(long_about = demo::LONG_ABOUT)]
    Demo(demo::DemoArgs),
    /// A real two-node Kubernetes cluster on this machine: up, down, status, kubeconfig
    #[command(long_about = cluster::LONG_ABOUT)]
    Cluster {
        #[command(subcommand)]
        action: cluster::Action,
    },
    /// Measure overhead, throughput, latency and memory against issue 7's targets; write BENCHMARKS.md
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Make a CA and certificates for mutual TLS between agents, CLI and collector (deploy/certs)
    #[command(long_about = certs::LONG_ABOUT)]
    Certs(certs::CertsArgs),
    /// Build the agent and collector images without Docker and push them (to the local cluster's registry)
    #[command(long_about = image::LONG_ABOUT)]
    Image(image::ImageArgs),
    /// kubectl operations in a loop against the traced local cluster: every flow checked, RSS sampled
    #[command(long_about = soak::LONG_ABOUT)]
    Soak(soak::SoakArgs),
    /// Build (once; then cached) the Jaeger the OTLP export test sends traces to
    Jaeger,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test => test::run(),
        Command::Demo(args) => demo::run(args),
        Command::Cluster { action } => cluster::run(action),
        Command::Bench(args) => bench::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Image(args) => image::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Jaeger => jaeger::ensure().map(|bin| println!("{}", bin.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The message and its causes; no backtrace even when RUST_BACKTRACE is set.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
