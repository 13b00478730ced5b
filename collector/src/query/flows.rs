//! `ListFlows` and `GetFlow`: flows from the live window (then the store),
//! a flow's hops from the store and the live window, and on request the
//! events behind each hop.

use std::collections::HashMap;

use ktrail_proto::v1::{Flow, GetFlowReply, Hop, HopEvents, TracedEvent};
use tonic::Status;

use crate::live::LiveHub;
use crate::store::Store;

/// Hops may start a little before their flow's root (its first byte is the
/// root's, but clocks of two nodes differ).
const SLACK_NS: u64 = 10_000_000_000;
/// `with_events` returns at most this many events in all.
pub const MAX_EVENTS: usize = 50_000;

pub fn list(live: &LiveHub, store: Option<&Store>, limit: usize) -> Result<Vec<Flow>, Status> {
    let mut flows: Vec<Flow> = live
        .recent_flows(limit)
        .iter()
        .map(|f| (**f).clone())
        .collect();
    if flows.len() < limit {
        if let Some(store) = store {
            let stored = store.flows(limit).map_err(internal)?;
            for f in stored {
                if !flows.iter().any(|x| x.id == f.id) {
                    flows.push(f);
                }
            }
            flows.sort_by(|a, b| b.start_unix_ns.cmp(&a.start_unix_ns).then(a.id.cmp(&b.id)));
            flows.truncate(limit);
        }
    }
    Ok(flows)
}

pub fn find(live: &LiveHub, store: Option<&Store>, id: &str) -> Result<Flow, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "no flow id given: `ktrail flows` lists them",
        ));
    }
    match live.flow(id) {
        Ok(Some(f)) => return Ok((*f).clone()),
        Err(ids) => return Err(ambiguous(id, &ids)),
        Ok(None) => {}
    }
    if let Some(store) = store {
        let matching: Vec<Flow> = store
            .flows(usize::MAX)
            .map_err(internal)?
            .into_iter()
            .filter(|f| f.id.starts_with(id))
            .collect();
        match matching.len() {
            0 => {}
            1 => return Ok(matching.into_iter().next().unwrap_or_default()),
            _ => {
                let ids: Vec<String> = matching.iter().map(|f| f.id.clone()).collect();
                return Err(ambiguous(id, &ids));
            }
        }
    }
    Err(Status::not_found(format!(
        "no flow {id:?}: `ktrail flows` lists the flows the collector holds"
    )))
}

pub fn get(
    live: &LiveHub,
    store: Option<&Store>,
    id: &str,
    with_events: bool,
) -> Result<GetFlowReply, Status> {
    let flow = find(live, store, id)?;
    let mut by_id: HashMap<String, Hop> = HashMap::new();
    if let Some(store) = store {
        let from = flow.start_unix_ns.saturating_sub(SLACK_NS);
        let to = flow
            .end_unix_ns
            .max(flow.start_unix_ns)
            .saturating_add(SLACK_NS);
        for hop in store.hops_between(from, to).map_err(internal)? {
            if hop.flow_id == flow.id {
                by_id.insert(hop.id.clone(), hop);
            }
        }
    }
    // Not yet committed, or newer (re-parented) versions.
    for hop in live.recent_hops(usize::MAX) {
        if hop.flow_id == flow.id {
            by_id.insert(hop.id.clone(), (*hop).clone());
        }
    }
    let mut hops: Vec<Hop> = by_id.into_values().collect();
    hops.sort_by(|a, b| a.start_unix_ns.cmp(&b.start_unix_ns).then(a.id.cmp(&b.id)));
    let events = match (with_events, store) {
        (true, Some(store)) => events(store, &hops)?,
        (true, None) => {
            return Err(Status::failed_precondition(
                "this collector keeps no store, so it has no events to show",
            ))
        }
        (false, _) => Vec::new(),
    };
    Ok(GetFlowReply {
        flow: Some(flow),
        hops,
        events,
    })
}

fn events(store: &Store, hops: &[Hop]) -> Result<Vec<HopEvents>, Status> {
    let mut out = Vec::new();
    let mut total = 0;
    for hop in hops {
        let mut events = Vec::new();
        for r in &hop.events {
            if total >= MAX_EVENTS {
                break;
            }
            if let Some(stored) = store.event(&r.agent_id, r.seq).map_err(internal)? {
                total += 1;
                events.push(TracedEvent {
                    node: stored.node,
                    event: stored.event,
                });
            }
        }
        events.sort_by_key(|e| e.event.as_ref().map_or(0, |e| e.timestamp_unix_ns));
        out.push(HopEvents {
            hop_id: hop.id.clone(),
            events,
        });
    }
    Ok(out)
}

fn ambiguous(id: &str, ids: &[String]) -> Status {
    Status::invalid_argument(format!(
        "flow id {id:?} is ambiguous: it starts {} flows ({}); give more of it",
        ids.len(),
        ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    ))
}

fn internal(e: crate::error::StoreError) -> Status {
    Status::internal(format!("store: {e}"))
}
