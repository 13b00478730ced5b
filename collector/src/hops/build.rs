//! Turning a paired exchange into a `Hop` (without its ids).

use ktrail_proto::v1::{EventRef, Hop, HopEnd};
use ktrail_protocols::{Message, Part, Protocol};

use super::connection::{EndPart, PairKind, PairReady};
use super::decode::{annotate, is_watch_event};
use super::run::Run;
use super::side::Role;
use super::stream::StreamItem;
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
            ..HopEnd::default()
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

fn node_of(part: &EndPart) -> String {
    part.ident
        .as_ref()
        .map(|i| i.node.clone())
        .unwrap_or_default()
}

/// The end [`timing`] takes the start from.
fn timer<'a>(client: &'a EndPart, server: &'a EndPart) -> &'a EndPart {
    if client.request.is_some() {
        client
    } else if server.request.is_some() {
        server
    } else if client.response.is_some()
        || (server.response.is_none() && client.event_span.is_some())
    {
        client
    } else {
        server
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

/// Moves a run's event references to `out`: the pair is built once and then
/// dropped, so its runs' references (two strings each) need no copies.
fn take_refs(run: &mut Option<Run>, out: &mut Vec<EventRef>) {
    if let Some(run) = run {
        out.append(&mut run.refs);
    }
}

/// A run's captured bytes, moved out (as [`take_refs`]), and how many it moved.
fn take_capture(run: &mut Option<Run>) -> (Vec<u8>, u64) {
    run.as_mut()
        .map_or((Vec::new(), 0), |r| (std::mem::take(&mut r.data), r.bytes))
}

/// The decoded messages of an end's runs.
fn messages(part: &EndPart) -> impl Iterator<Item = &Message> {
    [&part.request, &part.response]
        .into_iter()
        .flatten()
        .flat_map(|r| r.messages.iter())
}

/// The end whose decoded messages a hop uses: the client's when it decoded
/// anything, else the server's.
fn source<'a>(client: &'a EndPart, server: &'a EndPart) -> &'a EndPart {
    let known = |p: &EndPart| messages(p).any(|m| m.protocol != Protocol::Unknown);
    if known(client) || !known(server) && messages(client).next().is_some() {
        client
    } else {
        server
    }
}

/// The request and response the decoders saw.
fn decoded<'a>(
    client: &'a EndPart,
    server: &'a EndPart,
) -> (Option<&'a Message>, Option<&'a Message>) {
    let src = source(client, server);
    let req = messages(src).find(|m| m.part == Part::Request);
    let resp = messages(src).find(|m| m.part == Part::Response);
    match (req, resp) {
        (None, None) => (messages(src).find(|m| m.part != Part::Event), None),
        other => other,
    }
}

/// One hop per streamed item of a run-based exchange (the events of an
/// HTTP/1.1 watch), between the ends of `main`.
fn event_hop(main: &Hop, ev: &Message) -> Hop {
    let mut hop = Hop {
        protocol: main.protocol.clone(),
        client: main.client.clone(),
        server: main.server.clone(),
        start_unix_ns: ev.ts_first,
        duration_ns: ev.ts_last.saturating_sub(ev.ts_first),
        kind: if is_watch_event(ev) {
            "watch-event"
        } else {
            "stream-message"
        }
        .to_owned(),
        ..Hop::default()
    };
    annotate(&mut hop, None, Some(ev));
    hop
}

/// Builds the hops of a pair: usually one; a run-based exchange that carried
/// a watch stream gives its request/response hop (when it has one) and one
/// hop per watch event.
pub fn build_hops(pair: PairReady) -> Vec<Hop> {
    if pair.stream.is_some() || pair.kind == PairKind::Connection {
        return vec![build_hop(pair)];
    }
    let src = source(&pair.client, &pair.server);
    let src_node = node_of(src);
    let events: Vec<Message> = messages(src)
        .filter(|m| m.part == Part::Event && m.protocol != Protocol::Unknown)
        .cloned()
        .collect();
    if events.is_empty() {
        return vec![build_hop(pair)];
    }
    let has_main = messages(src).any(|m| m.part != Part::Event);
    let main = build_hop(pair);
    let mut out: Vec<Hop> = events
        .iter()
        .map(|ev| {
            let mut hop = event_hop(&main, ev);
            // Event times are those of the end that decoded them.
            hop.clock_node.clone_from(&src_node);
            hop
        })
        .collect();
    if has_main {
        out.insert(0, main);
    } else if let Some(first) = out.first_mut() {
        // A burst of a stream whose head went out before: its syscalls
        // belong to its first event.
        first.events = main.events;
    }
    out
}

/// A stream item's hop (multiplexed connections).
fn build_stream_hop(
    protocol: &str,
    client: &EndPart,
    server: &EndPart,
    mut refs: Vec<EventRef>,
    item: &StreamItem,
) -> Hop {
    let (start_unix_ns, duration_ns) = item.timing();
    refs.sort_by(|a, b| (&a.node, &a.agent_id, a.seq).cmp(&(&b.node, &b.agent_id, b.seq)));
    refs.dedup();
    let body = |m: &Option<Message>| {
        m.as_ref()
            .map(|m| m.body_prefix.clone())
            .unwrap_or_default()
    };
    let len = |m: &Option<Message>| m.as_ref().map_or(0, |m| m.body_len);
    let mut hop = Hop {
        protocol: protocol.to_owned(),
        client: Some(hop_end(client, server)),
        server: Some(hop_end(server, client)),
        start_unix_ns,
        duration_ns,
        request: body(&item.request),
        response: body(&item.response),
        request_bytes: len(&item.request),
        response_bytes: len(&item.response),
        kind: item.id.kind.hop_kind().to_owned(),
        events: refs,
        ..Hop::default()
    };
    annotate(&mut hop, item.request.as_ref(), item.response.as_ref());
    hop.stream_id = item.id.stream_id;
    hop
}

/// Builds the hop; `id` and `flow_id` are left empty.
fn build_hop(pair: PairReady) -> Hop {
    let PairReady {
        protocol,
        kind,
        mut client,
        mut server,
        mut refs,
        stream,
        stream_timed_by,
    } = pair;
    if let Some(item) = &stream {
        let mut hop = build_stream_hop(protocol, &client, &server, refs, item);
        let timer = match stream_timed_by {
            Some(Role::Server) => &server,
            _ => &client,
        };
        hop.clock_node = node_of(timer);
        return hop;
    }
    let (start_unix_ns, duration_ns) = timing(&client, &server);
    let clock_node = node_of(timer(&client, &server));
    // The request as the client sent it, the response as the server sent it,
    // unless only the receiving end saw them in plaintext.
    let request_from_server = if server.tls && !client.tls {
        server.request.is_some()
    } else {
        client.request.is_none()
    };
    let response_from_client = if client.tls && !server.tls {
        client.response.is_some()
    } else {
        server.response.is_none()
    };
    let (request_data, request_bytes) = take_capture(if request_from_server {
        &mut server.request
    } else {
        &mut client.request
    });
    let (response_data, response_bytes) = take_capture(if response_from_client {
        &mut client.response
    } else {
        &mut server.response
    });
    for run in [
        &mut client.request,
        &mut client.response,
        &mut server.request,
        &mut server.response,
    ] {
        take_refs(run, &mut refs);
    }
    refs.sort_by(|a, b| (&a.node, &a.agent_id, a.seq).cmp(&(&b.node, &b.agent_id, b.seq)));
    refs.dedup();
    let (dreq, dresp) = decoded(&client, &server);
    let mut hop = Hop {
        id: String::new(),
        flow_id: String::new(),
        protocol: protocol.to_owned(),
        client: Some(hop_end(&client, &server)),
        server: Some(hop_end(&server, &client)),
        start_unix_ns,
        duration_ns,
        summary: summarize(&request_data),
        request: request_data,
        response: response_data,
        request_bytes,
        response_bytes,
        kind: match kind {
            PairKind::RequestResponse => "request/response",
            PairKind::Connection => "connection",
        }
        .to_owned(),
        events: refs,
        clock_node,
        ..Hop::default()
    };
    annotate(&mut hop, dreq, dresp);
    hop
}
