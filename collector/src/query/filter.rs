//! Which events a `Trace` stream wants.

use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::{TraceRequest, TracedEvent};

#[derive(Clone, Debug, PartialEq, Eq)]
enum CommMatch {
    Any,
    Exact(String),
    Prefix(String),
}

/// node (exact, empty = all), comm (exact, or a prefix with a trailing `*`,
/// empty = all), pid (0 = all); only syscall and process events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFilter {
    node: String,
    comm: CommMatch,
    pid: u32,
}

impl TraceFilter {
    pub fn new(req: &TraceRequest) -> Self {
        let comm = if req.comm.is_empty() || req.comm == "*" {
            CommMatch::Any
        } else if let Some(prefix) = req.comm.strip_suffix('*') {
            CommMatch::Prefix(prefix.to_owned())
        } else {
            CommMatch::Exact(req.comm.clone())
        };
        Self {
            node: req.node.clone(),
            comm,
            pid: req.pid,
        }
    }

    pub fn matches(&self, traced: &TracedEvent) -> bool {
        let Some(event) = &traced.event else {
            return false;
        };
        let kind_ok = matches!(
            event.body,
            Some(Body::Syscall(_) | Body::Exec(_) | Body::Fork(_) | Body::Exit(_))
        );
        let comm_ok = match &self.comm {
            CommMatch::Any => true,
            CommMatch::Exact(c) => &event.comm == c,
            CommMatch::Prefix(p) => event.comm.starts_with(p.as_str()),
        };
        kind_ok
            && comm_ok
            && (self.node.is_empty() || traced.node == self.node)
            && (self.pid == 0 || event.pid == self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{Event, ProcessExit, SyscallEvent, TcpStateChange};

    fn traced(node: &str, comm: &str, pid: u32, body: Body) -> TracedEvent {
        TracedEvent {
            node: node.into(),
            event: Some(Event {
                comm: comm.into(),
                pid,
                body: Some(body),
                ..Event::default()
            }),
        }
    }

    fn req(node: &str, comm: &str, pid: u32) -> TraceFilter {
        TraceFilter::new(&TraceRequest {
            node: node.into(),
            comm: comm.into(),
            pid,
        })
    }

    #[test]
    fn node_comm_and_pid() {
        let ev = traced("w1", "kubelet", 42, Body::Syscall(SyscallEvent::default()));
        assert!(req("", "", 0).matches(&ev));
        assert!(req("w1", "kubelet", 42).matches(&ev));
        assert!(req("", "kube*", 0).matches(&ev));
        assert!(
            !req("", "kube", 0).matches(&ev),
            "exact unless a trailing *"
        );
        assert!(!req("cp", "", 0).matches(&ev));
        assert!(!req("", "", 7).matches(&ev));
    }

    #[test]
    fn process_events_yes_tcp_states_no() {
        assert!(req("", "", 0).matches(&traced("n", "c", 1, Body::Exit(ProcessExit::default()))));
        assert!(!req("", "", 0).matches(&traced(
            "n",
            "c",
            1,
            Body::TcpState(TcpStateChange::default())
        )));
    }
}
