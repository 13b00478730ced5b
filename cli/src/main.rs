//! `ktrail`: watch hops, trace syscalls and read agent status from a ktrail
//! collector.

mod args;
mod commands;
mod connect;
mod errno;
mod escape;
mod output;
mod render;
mod style;
mod time;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use args::{Cli, Command};
use output::{is_broken_pipe, Out};

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = connect::normalize_url(&cli.collector, cli.tls.insecure);
    let channel = connect::connect(&url, &cli.tls).await?;
    let mut out = Out::new();
    match &cli.command {
        Command::Watch(args) => commands::watch::run(channel, &url, args, &mut out).await,
        Command::Trace(args) => commands::trace::run(channel, &url, args, &mut out).await,
        Command::Status(args) => commands::status::run(channel, &url, args, &mut out).await,
        Command::Flows(args) => commands::flows::run(channel, &url, args, &mut out).await,
        Command::Show(args) => commands::show::run(channel, &url, args, &mut out).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`ktrail watch | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ktrail: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
