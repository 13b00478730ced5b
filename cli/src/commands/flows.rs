//! `ktrail flows`: the flows the collector holds, most recent first.

use ktrail_proto::v1::ListFlowsRequest;
use tonic::transport::Channel;

use crate::args::{FlowsArgs, Output};
use crate::connect::{call_error, query_client};
use crate::output::Out;
use crate::render::flow_human::flow_header;
use crate::render::flow_json::flow_json;
use crate::style::Style;

pub async fn run(
    channel: Channel,
    url: &str,
    args: &FlowsArgs,
    out: &mut Out,
) -> anyhow::Result<()> {
    let reply = query_client(channel)
        .list_flows(ListFlowsRequest { limit: args.limit })
        .await
        .map_err(|s| call_error(url, s))?
        .into_inner();
    let style = Style::detect();
    if reply.flows.is_empty() && args.output == Output::Human {
        out.line("no flows yet: a flow starts when a client such as kubectl sends the API server a request while agents run")?;
    }
    for flow in &reply.flows {
        match args.output {
            Output::Json => out.line(&flow_json(flow)?)?,
            Output::Human => {
                for line in flow_header(flow, &style) {
                    out.line(&line)?;
                }
            }
        }
    }
    Ok(())
}
