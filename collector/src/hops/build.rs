//! Turning a paired exchange into a `Hop` (without its ids).

use ktrail_proto::v1::{EventRef, Hop, HopEnd};

use super::connection::{EndPart, PairKind, PairReady};
use super::run::Run;
use super::summary::summarize;

fn hop_end(part: &EndPart, other: &EndPart) -> HopEnd {
    match &part.ident {
        Some(id) => HopEnd {
            node: id.node.clone(),
            pid: id.pid,
            comm: id.comm.clone(),
            addr: id.local.addr.clone(),
            port: id.local.port,
            observed: true,
        },
        // Nobody saw this end: the other end's peer address is all we know.
        None => {
            let remote = other
                .ident
                .as_ref()
                .map(|o| o.remote.clone())
                .unwrap_or_default();
            HopEnd {
                addr: remote.addr,
                port: remote.port,
                observed: false,
                ..HopEnd::default()
            }
        }
    }
}

/// Start and duration: from the client's view when it saw the request,
/// else the server's; never mixing the two nodes' clocks.
fn timing(client: &EndPart, server: &EndPart) -> (u64, u64) {
    let full = |p: &EndPart| match (&p.request, &p.response) {
        (Some(q), Some(r)) => Some(r.last_end.max(q.last_end).saturating_sub(q.first_ts)),
        _ => None,
    };
    if let Some(q) = &client.request {
        let duration = full(client)
            .or_else(|| full(server))
            .unwrap_or_else(|| q.last_end.saturating_sub(q.first_ts));
        return (q.first_ts, duration);
    }
    if let Some(q) = &server.request {
        let duration = full(server).unwrap_or_else(|| q.last_end.saturating_sub(q.first_ts));
        return (q.first_ts, duration);
    }
    if let Some(r) = client.response.as_ref().or(server.response.as_ref()) {
        return (r.first_ts, r.last_end.saturating_sub(r.first_ts));
    }
    match client.event_span.or(server.event_span) {
        Some((start, end)) => (start, end.saturating_sub(start)),
        None => (0, 0),
    }
}

fn refs_of(run: &Option<Run>, out: &mut Vec<EventRef>) {
    if let Some(run) = run {
        out.extend(run.refs.iter().cloned());
    }
}

/// Builds the hop; `id` and `flow_id` are left empty.
pub fn build_hop(pair: PairReady) -> Hop {
    let PairReady {
        protocol,
        kind,
        client,
        server,
        mut refs,
    } = pair;
    let (start_unix_ns, duration_ns) = timing(&client, &server);
    // The request as the client sent it, the response as the server sent it,
    // unless only the receiving end saw them in plaintext.
    let (c_req, s_req) = (client.request.as_ref(), server.request.as_ref());
    let (c_resp, s_resp) = (client.response.as_ref(), server.response.as_ref());
    let request = if server.tls && !client.tls {
        s_req.or(c_req)
    } else {
        c_req.or(s_req)
    };
    let response = if client.tls && !server.tls {
        c_resp.or(s_resp)
    } else {
        s_resp.or(c_resp)
    };
    for run in [
        &client.request,
        &client.response,
        &server.request,
        &server.response,
    ] {
        refs_of(run, &mut refs);
    }
    refs.sort_by(|a, b| (&a.node, &a.agent_id, a.seq).cmp(&(&b.node, &b.agent_id, b.seq)));
    refs.dedup();
    let request_data = request.map(|r| r.data.clone()).unwrap_or_default();
    Hop {
        id: String::new(),
        flow_id: String::new(),
        protocol: protocol.to_owned(),
        client: Some(hop_end(&client, &server)),
        server: Some(hop_end(&server, &client)),
        start_unix_ns,
        duration_ns,
        summary: summarize(&request_data),
        request: request_data,
        response: response.map(|r| r.data.clone()).unwrap_or_default(),
        request_bytes: request.map_or(0, |r| r.bytes),
        response_bytes: response.map_or(0, |r| r.bytes),
        kind: match kind {
            PairKind::RequestResponse => "request/response",
            PairKind::Connection => "connection",
        }
        .to_owned(),
        events: refs,
    }
}
