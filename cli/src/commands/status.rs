//! `ktrail status`: agents and totals.

use std::time::{SystemTime, UNIX_EPOCH};

use ktrail_proto::v1::StatusRequest;
use tonic::transport::Channel;

use crate::args::{Output, StatusArgs};
use crate::connect::{call_error, query_client};
use crate::output::Out;
use crate::render::status_human::status_lines;
use crate::render::status_json::status_json;
use crate::style::Style;

pub async fn run(
    channel: Channel,
    url: &str,
    args: &StatusArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let reply = query_client(channel)
        .status(StatusRequest {})
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    match args.output {
        Output::Json => out.line(&status_json(&reply)?)?,
        Output::Human => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            for line in status_lines(&reply, now, &Style::detect()) {
                out.line(&line)?;
            }
        }
    }
    Ok(())
}
