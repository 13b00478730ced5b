//! One side of a connection: a process on a node using its local end.

use std::collections::VecDeque;
use std::sync::Arc;

use ktrail_proto::v1::EventRef;

use super::decode::SideDecoder;
use super::endpoint::{Endpoint, LocalId};
use super::run::{Direction, EventSource, Run, Transfer};
use super::stream::SideStreams;

/// Client or server end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn opposite(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// Who a side is, as a hop reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideIdentity {
    pub node: String,
    pub agent_id: String,
    pub pid: u32,
    pub comm: String,
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// Events waiting to be attached to the next hop that involves the side.
pub const MAX_PENDING_REFS: usize = 64;

#[derive(Debug)]
pub struct Side {
    /// Shared with the ends of the pairs taken from the side: a hop is built from
    /// each, and copying five strings per end per hop was 1 % of a busy collector.
    pub ident: Arc<SideIdentity>,
    pub local_id: LocalId,
    /// Data runs not yet emitted in a hop, oldest first.
    pub runs: VecDeque<Run>,
    /// Exchanges of this side already dropped (emitted or stale): the global
    /// index of the exchange starting at `runs[0]`.
    pub dropped_exchanges: usize,
    pub closed: bool,
    /// Collector clock of the last event of this side.
    pub last_activity: u64,
    /// Direction of the first data transfer ever seen, with its arrival number.
    pub first_data: Option<(Direction, u64)>,
    /// Fixed once the side took part in a hop.
    pub locked_role: Option<Role>,
    /// connect/accept/close events not yet attached to a hop.
    pub pending_refs: Vec<EventRef>,
    /// Event-time span of everything seen on this side (for connection hops).
    pub first_ts: u64,
    pub last_ts: u64,
    /// TLS plaintext was seen: from then on the encrypted syscalls are ignored.
    pub tls: bool,
    /// What this side moved, decoded.
    pub decoder: SideDecoder,
    /// Per-stream items, once the decoder found HTTP/2.
    pub streams: SideStreams,
}

impl Side {
    pub fn new(ident: SideIdentity, local_id: LocalId, now: u64) -> Self {
        Self {
            ident: Arc::new(ident),
            local_id,
            runs: VecDeque::new(),
            dropped_exchanges: 0,
            closed: false,
            last_activity: now,
            first_data: None,
            locked_role: None,
            pending_refs: Vec::new(),
            first_ts: u64::MAX,
            last_ts: 0,
            tls: false,
            decoder: SideDecoder::default(),
            streams: SideStreams::default(),
        }
    }

    /// Records an event's time on the side's event-time span.
    pub fn saw_event_at(&mut self, timestamp_ns: u64, duration_ns: u64) {
        self.first_ts = self.first_ts.min(timestamp_ns);
        self.last_ts = self.last_ts.max(timestamp_ns.saturating_add(duration_ns));
    }

    /// Event-time span, when any event with a time was seen.
    pub fn event_span(&self) -> Option<(u64, u64)> {
        (self.first_ts != u64::MAX).then_some((self.first_ts, self.last_ts.max(self.first_ts)))
    }

    pub fn data_seen(&self) -> bool {
        self.first_data.is_some()
    }

    /// TLS plaintext from now on: the side's encrypted transfers are ignored.
    pub fn begin_plaintext(&mut self, dir: Direction) {
        if !self.tls {
            self.tls = true;
            // The ciphertext decoded so far says nothing: start over.
            self.decoder.reset();
            if let Some(run) = self.runs.back_mut().filter(|run| run.dir == dir) {
                run.restart_capture();
            }
        }
    }

    pub fn push_transfer(
        &mut self,
        dir: Direction,
        t: &Transfer<'_>,
        r: &EventSource<'_>,
        arrival: u64,
    ) {
        self.first_data.get_or_insert((dir, arrival));
        match self.runs.back_mut() {
            Some(run) if run.dir == dir => run.add(t, r),
            _ => self.runs.push_back(Run::new(dir, t, r)),
        }
    }

    pub fn push_ref(&mut self, r: EventRef) {
        if self.pending_refs.len() < MAX_PENDING_REFS {
            self.pending_refs.push(r);
        }
    }
}
