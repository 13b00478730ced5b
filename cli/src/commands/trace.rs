//! `ktrail trace`: syscalls and process events, live.

use anyhow::anyhow;
use ktrail_proto::v1::{trace_update, TraceRequest};
use tonic::transport::Channel;

use crate::args::{Output, TraceArgs};
use crate::connect::{call_error, query_client};
use crate::output::Out;
use crate::render::event_human::{event_line, lagged_line};
use crate::render::event_json::event_json;
use crate::render::lagged_json;
use crate::style::Style;

pub async fn run(
    channel: Channel,
    url: &str,
    args: &TraceArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let mut client = query_client(channel);
    let request = TraceRequest {
        node: args.node.clone().unwrap_or_default(),
        comm: args.comm.clone().unwrap_or_default(),
        pid: args.pid.unwrap_or(0),
    };
    let mut stream = client
        .trace(request)
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    let style = Style::detect();
    while let Some(update) = stream.message().await.map_err(|s| call_error(url, s))? {
        let line = match (update.body, args.output) {
            (Some(trace_update::Body::Event(ev)), Output::Json) => event_json(&ev).transpose()?,
            (Some(trace_update::Body::Event(ev)), Output::Human) => event_line(&ev, &style),
            (Some(trace_update::Body::Lagged(n)), Output::Json) => Some(lagged_json(n)),
            (Some(trace_update::Body::Lagged(n)), Output::Human) => Some(lagged_line(n, &style)),
            (None, _) => None,
        };
        if let Some(line) = line {
            out.line(&line)?;
        }
    }
    Err(anyhow!(
        "the collector at {url} ended the trace (is it shutting down?)"
    ))
}
