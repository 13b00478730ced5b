//! `ktrail show ID`: one flow, as a hop tree or JSON lines.

use std::collections::HashMap;

use ktrail_proto::v1::GetFlowRequest;
use tonic::transport::Channel;

use crate::args::{ShowArgs, ShowFormat};
use crate::connect::{call_error, query_client};
use crate::output::Out;
use crate::render::event_human::event_line;
use crate::render::event_json::event_json;
use crate::render::flow_human::{depths, flow_header, flow_hop_line, tree_order};
use crate::render::flow_json::flow_json;
use crate::render::hop_json::hop_json;
use crate::render::perfetto;
use crate::style::Style;

pub async fn run(
    channel: Channel,
    url: &str,
    args: &ShowArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let reply = query_client(channel)
        .get_flow(GetFlowRequest {
            id: args.id.clone(),
            with_events: args.syscalls,
        })
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    let flow = reply.flow.unwrap_or_default();
    let events: HashMap<&str, _> = reply
        .events
        .iter()
        .map(|e| (e.hop_id.as_str(), &e.events))
        .collect();
    let style = Style::detect();
    match args.format {
        ShowFormat::Perfetto => {
            let trace = perfetto::render(&flow, &reply.hops, &reply.events);
            out.line(&serde_json::to_string(&trace)?)?;
        }
        ShowFormat::Jsonl => {
            out.line(&flow_json(&flow)?)?;
            for hop in &reply.hops {
                out.line(&hop_json(hop)?)?;
                for ev in events.get(hop.id.as_str()).copied().into_iter().flatten() {
                    if let Some(line) = event_json(ev) {
                        out.line(&line?)?;
                    }
                }
            }
        }
        ShowFormat::Tree => {
            for line in flow_header(&flow, &style) {
                out.line(&line)?;
            }
            let depth = depths(&reply.hops);
            for hop in tree_order(&reply.hops) {
                let d = depth.get(&hop.id).copied().unwrap_or(0);
                out.line(&flow_hop_line(flow.start_unix_ns, d, hop, &style))?;
                for ev in events.get(hop.id.as_str()).copied().into_iter().flatten() {
                    if let Some(line) = event_line(ev, &style) {
                        out.line(&format!("{:>27}{}    {line}", "", "  ".repeat(d.min(12))))?;
                    }
                }
            }
        }
    }
    Ok(())
}
