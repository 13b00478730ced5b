//! `ktrail watch`: hops, live.

use anyhow::anyhow;
use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::{watch_update, WatchRequest};
use tonic::transport::Channel;

use crate::args::{Output, WatchArgs};
use crate::connect::call_error;
use crate::output::Out;
use crate::render::hop_human::{hop_line, lagged_line};
use crate::render::hop_json::hop_json;
use crate::render::lagged_json;
use crate::style::Style;

pub async fn run(
    channel: Channel,
    url: &str,
    args: &WatchArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let mut client = QueryClient::new(channel);
    let mut stream = client
        .watch(WatchRequest {
            replay: args.replay,
        })
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    let style = Style::detect();
    while let Some(update) = stream.message().await.map_err(|s| call_error(url, s))? {
        let line = match (update.body, args.output) {
            (Some(watch_update::Body::Hop(hop)), Output::Json) => hop_json(&hop)?,
            (Some(watch_update::Body::Hop(hop)), Output::Human) => hop_line(&hop, &style),
            (Some(watch_update::Body::Lagged(n)), Output::Json) => lagged_json(n),
            (Some(watch_update::Body::Lagged(n)), Output::Human) => lagged_line(n, &style),
            (None, _) => continue,
        };
        out.line(&line)?;
    }
    Err(anyhow!(
        "the collector at {url} ended the watch (is it shutting down?)"
    ))
}
