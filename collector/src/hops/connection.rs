//! One connection: its sides, and pairing their exchanges into hops.

use std::sync::Arc;

use ktrail_proto::v1::EventRef;
use ktrail_protocols::Protocol;

use super::decode::h2_stream_ids;
use super::emitted::Emitted;
use super::endpoint::{ConnectionKey, LocalId};
use super::exchange::{is_complete, split, Completion};
use super::roles::{self, RoleHint};
use super::run::{data_time, Direction, EventSource, Run, Transfer};
use super::side::{Role, Side, SideIdentity};
use super::stream::StreamItem;

/// Events kept per connection for its next hop (TCP state changes).
const MAX_CONN_REFS: usize = 32;

/// Timing of pairing, all on the collector clock.
#[derive(Clone, Copy, Debug)]
pub struct PairTiming {
    pub completion: Completion,
    /// How long a complete exchange waits for the other side to show up.
    pub missing_side_wait_ns: u64,
    /// When waiting for a side in vain proves it absent: an agent that connected
    /// or started later may trace that side but could not have seen the exchange.
    pub absence_proof: AbsenceProof,
}

/// Which waits prove a side absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbsenceProof {
    /// Collector clock of the latest agent connection: a wait must begin after it.
    pub wait_begun_after: u64,
    /// Event time (any node's clock) the exchange must be after: the latest
    /// agent's first event, plus a margin for the nodes' clock offsets.
    pub exchange_after: u64,
}

impl AbsenceProof {
    fn holds(&self, wait_began: u64, exchange_ts: Option<u64>) -> bool {
        wait_began >= self.wait_begun_after
            && exchange_ts.is_some_and(|ts| ts >= self.exchange_after)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    RequestResponse,
    Connection,
}

/// One end's share of a hop. `request` is what travelled from client to server
/// as this end saw it (sends for the client, receives for the server).
#[derive(Clone, Debug, Default)]
pub struct EndPart {
    /// `None` when no agent saw this end.
    pub ident: Option<Arc<SideIdentity>>,
    pub request: Option<Run>,
    pub response: Option<Run>,
    pub event_span: Option<(u64, u64)>,
    /// Its data is TLS plaintext.
    pub tls: bool,
}

/// One data transfer of a side, as [`Connection::push_data`] takes it.
pub struct DataIn<'a> {
    pub dir: Direction,
    pub transfer: &'a Transfer<'a>,
    /// TLS plaintext, which replaces the side's ciphertext.
    pub plaintext: bool,
    /// Arrival number (order of events across the connection's sides).
    pub arrival: u64,
}

/// Everything needed to build one hop.
#[derive(Clone, Debug)]
pub struct PairReady {
    pub protocol: &'static str,
    pub kind: PairKind,
    pub client: EndPart,
    pub server: EndPart,
    pub refs: Vec<EventRef>,
    /// A multiplexed connection's stream item (then `client`/`server` carry
    /// identities only).
    pub stream: Option<StreamItem>,
    /// The end whose decoder produced the stream item (its times are that
    /// end's node's clock).
    pub stream_timed_by: Option<Role>,
}

/// Where one role's side stands for the exchange being paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExState {
    /// No side of this role is known.
    Absent,
    /// The side is known but has not shown this exchange (yet).
    Missing,
    Pending,
    Complete,
}

#[derive(Debug)]
pub struct Connection {
    pub key: ConnectionKey,
    pub sides: Vec<Side>,
    hints: Vec<RoleHint>,
    pending_refs: Vec<EventRef>,
    /// Exchanges paired so far: the index of the next one.
    pub pairs_emitted: usize,
    head_wait_since: Option<u64>,
    /// Per role (client, server): the side never showed up within the wait
    /// once, so later exchanges need not wait for it again.
    absent_confirmed: [bool; 2],
    first_close_at: Option<u64>,
    connection_hop_emitted: bool,
    /// Set by a TCP `CLOSE` when no side is known.
    tcp_closed: bool,
    locked: [Option<usize>; 2],
    pub last_activity: u64,
    /// Collector clock since when [`Connection::is_finished`] holds.
    pub finished_since: Option<u64>,
    /// Stream items already emitted (oldest first, bounded).
    emitted: Emitted,
    /// The server's copy of the streams was preferred once (the client's
    /// header tables were lost): kept for the connection's life, since a
    /// client that recovers its tables may still have lost stream items,
    /// and the two ends' item numbering would no longer agree.
    streams_from_server: bool,
}

fn role_index(role: Role) -> usize {
    match role {
        Role::Client => 0,
        Role::Server => 1,
    }
}

impl Connection {
    pub fn new(key: ConnectionKey, now: u64) -> Self {
        Self {
            key,
            sides: Vec::new(),
            hints: Vec::new(),
            pending_refs: Vec::new(),
            pairs_emitted: 0,
            head_wait_since: None,
            absent_confirmed: [false; 2],
            streams_from_server: false,
            first_close_at: None,
            connection_hop_emitted: false,
            tcp_closed: false,
            locked: [None; 2],
            last_activity: now,
            finished_since: None,
            emitted: Emitted::default(),
        }
    }

    pub fn side_index(&self, node: &str, pid: u32, local_id: &LocalId) -> Option<usize> {
        self.sides
            .iter()
            .position(|s| s.ident.node == node && s.ident.pid == pid && &s.local_id == local_id)
    }

    /// An opening event for `node`/`local_id` by `pid` starts a new connection
    /// on the same key: that endpoint was closed, and not by a process that is
    /// still using it.
    pub fn is_reused_by(&self, node: &str, pid: u32, local_id: &LocalId) -> bool {
        let same_end = |s: &&Side| s.ident.node == node && &s.local_id == local_id;
        let endpoint_closed = self.sides.iter().filter(same_end).any(|s| s.closed);
        let own_open = self
            .sides
            .iter()
            .filter(same_end)
            .any(|s| s.ident.pid == pid && !s.closed);
        endpoint_closed && !own_open
    }

    pub fn add_side(&mut self, side: Side) -> usize {
        self.sides.push(side);
        self.sides.len() - 1
    }

    pub fn add_hint(&mut self, node: &str, local_id: &LocalId, role: Role) {
        self.hints
            .retain(|h| !(h.node == node && &h.local_id == local_id));
        self.hints.push(RoleHint {
            node: node.to_owned(),
            local_id: local_id.clone(),
            role,
        });
    }

    pub fn push_ref(&mut self, r: EventRef) {
        if self.pending_refs.len() < MAX_CONN_REFS {
            self.pending_refs.push(r);
        }
    }

    pub fn close_side(&mut self, idx: usize, now: u64) {
        if let Some(side) = self.sides.get_mut(idx) {
            if !side.closed {
                // What the decoder was still assembling ends here.
                let msgs = side.decoder.finish(side.last_ts);
                if side.decoder.protocol() == Protocol::Http2 {
                    for m in msgs {
                        side.streams.push_message(m, now);
                    }
                    side.streams.close(now);
                } else if let Some(run) = side.runs.back_mut() {
                    run.add_messages(msgs);
                }
            }
            side.closed = true;
            self.first_close_at.get_or_insert(now);
        }
    }

    /// The role of side `idx` as known now.
    fn role_of(&self, idx: usize) -> Option<Role> {
        roles::resolve(&self.sides, &self.hints)
            .get(idx)
            .copied()
            .flatten()
    }

    /// A data transfer of side `idx`: decoded, then kept as part of a run
    /// (request/response runs) or, on an HTTP/2 connection, of its streams.
    pub fn push_data(&mut self, idx: usize, data: DataIn<'_>, r: &EventSource<'_>, now: u64) {
        let DataIn {
            dir,
            transfer: t,
            plaintext,
            arrival,
        } = data;
        let Some(side) = self.sides.get_mut(idx) else {
            return;
        };
        if plaintext {
            side.begin_plaintext(dir);
        } else if side.tls {
            return;
        }
        side.first_data.get_or_insert((dir, arrival));
        let role = self.role_of(idx);
        let side = &mut self.sides[idx];
        let msgs = side
            .decoder
            .feed(role, dir, t.data, t.bytes, data_time(dir, t));
        if side.decoder.protocol() == Protocol::Http2 {
            side.runs.clear();
            side.streams.add_ref(&h2_stream_ids(t.data), r, now);
            for m in msgs {
                side.streams.push_message(m, now);
            }
        } else {
            side.push_transfer(dir, t, r, arrival);
            if let Some(run) = side.runs.back_mut() {
                run.add_messages(msgs);
            }
        }
    }

    /// Stream items and streams its sides had to drop at their caps since
    /// the last call (items dropped, streams evicted).
    pub fn take_drops(&mut self) -> (u64, u64) {
        let mut total = (0, 0);
        for side in &mut self.sides {
            let (items, streams) = side.streams.take_drops();
            total.0 += items;
            total.1 += streams;
        }
        total
    }

    /// A multiplexed (HTTP/2) connection: hops are per stream.
    pub fn is_multiplexed(&self) -> bool {
        self.sides
            .iter()
            .any(|s| s.decoder.protocol() == Protocol::Http2)
    }

    /// A TCP `CLOSE` for an endpoint closes every side using it.
    pub fn close_endpoint(&mut self, node: &str, local_id: &LocalId, now: u64) {
        self.tcp_closed = true;
        for i in 0..self.sides.len() {
            if self.sides[i].ident.node == node && &self.sides[i].local_id == local_id {
                self.close_side(i, now);
            }
        }
    }

    fn any_data(&self) -> bool {
        self.sides.iter().any(Side::data_seen)
    }

    /// Something could still become a hop.
    pub fn has_pending(&self) -> bool {
        self.sides
            .iter()
            .any(|s| !s.runs.is_empty() || !s.streams.is_empty())
            || self.connection_hop_due()
    }

    fn connection_hop_due(&self) -> bool {
        !self.connection_hop_emitted
            && !self.sides.is_empty()
            && self.first_close_at.is_some()
            && !self.any_data()
    }

    /// Closed on every known side (or by TCP) with nothing left to emit.
    pub fn is_finished(&self) -> bool {
        let closed = if self.sides.is_empty() {
            self.tcp_closed
        } else {
            self.sides.iter().all(|s| s.closed)
        };
        closed && !self.has_pending()
    }

    fn pick_sides(&self) -> (Option<usize>, Option<usize>) {
        let roles = roles::resolve(&self.sides, &self.hints);
        // The sides of earlier hops, as long as they still have their role:
        // bytes that tell otherwise (a connection joined in its middle, its
        // first hop paired by the first sender) re-pair it from then on.
        let kept = |role: Role| {
            self.locked[role_index(role)].filter(|&i| roles.get(i).copied().flatten() == Some(role))
        };
        let client = kept(Role::Client).or_else(|| roles::pick(&self.sides, &roles, Role::Client));
        let server = kept(Role::Server).or_else(|| roles::pick(&self.sides, &roles, Role::Server));
        match (client, server) {
            (Some(c), Some(s)) if c == s => (Some(c), None),
            other => other,
        }
    }

    /// An agent connected: a side that never showed up may be on its node (an agent
    /// that starts after its peer's sees a long-lived connection's next exchange),
    /// so the next exchange waits for it again.
    pub fn forget_absences(&mut self) {
        self.absent_confirmed = [false; 2];
    }

    /// Emits every hop that is ready at `now`.
    pub fn poll(&mut self, now: u64, t: &PairTiming, out: &mut Vec<PairReady>) {
        self.poll_connection_hop(now, t, false, out);
        if self.is_multiplexed() {
            self.poll_streams(now, t, false, out);
            return;
        }
        loop {
            let (ci, si) = self.pick_sides();
            if ci.is_none() && si.is_none() {
                return;
            }
            let p = self.pairs_emitted;
            self.drop_stale(ci, Role::Client, p, now, t, false);
            self.drop_stale(si, Role::Server, p, now, t, false);
            let cs = self.state(ci, Role::Client, p, now, t);
            let ss = self.state(si, Role::Server, p, now, t);
            use ExState::*;
            let emit = match (cs, ss) {
                (Complete, Complete) => true,
                (Complete, Absent | Missing) | (Absent | Missing, Complete) => {
                    let waiting = if cs == Complete { ss } else { cs };
                    let waiting_role = if cs == Complete {
                        Role::Server
                    } else {
                        Role::Client
                    };
                    if waiting == Absent && self.absent_confirmed[role_index(waiting_role)] {
                        true
                    } else {
                        let since = *self.head_wait_since.get_or_insert(now);
                        let due = now.saturating_sub(since) >= t.missing_side_wait_ns;
                        // When the exchange began (its complete side's first run).
                        let exchange_ts = || {
                            let complete = if cs == Complete { ci } else { si };
                            complete
                                .and_then(|i| self.sides[i].runs.front())
                                .map(|r| r.first_ts)
                        };
                        if due && waiting == Absent && t.absence_proof.holds(since, exchange_ts()) {
                            self.absent_confirmed[role_index(waiting_role)] = true;
                        }
                        due
                    }
                }
                _ => {
                    self.head_wait_since = None;
                    false
                }
            };
            if !emit {
                return;
            }
            let pair = self.take_pair(ci, si, cs == Complete, ss == Complete);
            out.push(pair);
        }
    }

    /// Emits everything left, complete or not (eviction, shutdown).
    pub fn finalize(&mut self, now: u64, t: &PairTiming, out: &mut Vec<PairReady>) {
        self.poll_connection_hop(now, t, true, out);
        if self.is_multiplexed() {
            for i in 0..self.sides.len() {
                self.close_side(i, now);
            }
            self.poll_streams(now, t, true, out);
            return;
        }
        loop {
            let (ci, si) = self.pick_sides();
            let p = self.pairs_emitted;
            self.drop_stale(ci, Role::Client, p, now, t, true);
            self.drop_stale(si, Role::Server, p, now, t, true);
            let has = |idx: Option<usize>| idx.is_some_and(|i| !self.sides[i].runs.is_empty());
            let (c, s) = (has(ci), has(si));
            if !c && !s {
                return;
            }
            let pair = self.take_pair(ci, si, c, s);
            out.push(pair);
        }
    }

    /// Emits the stream items that are ready: the preferred side's, each
    /// merged with the other side's copy or after waiting for it. Preferred is
    /// the client's when an agent saw it decoding HTTP/2 with its header
    /// tables known, else the server's when its tables are known (from then
    /// on), else whichever decodes HTTP/2 (client first). Both ends are often captured
    /// in plaintext (Go TLS on both), and the end that lost sync — a client
    /// whose large reads of a watch stream were cut by the capture limit, or
    /// one whose probes attached after the connection started — has lost its
    /// HPACK state for good, while the writer of those bytes has not.
    fn poll_streams(&mut self, now: u64, t: &PairTiming, force: bool, out: &mut Vec<PairReady>) {
        for side in &mut self.sides {
            side.runs.clear();
            side.streams.expire(now, t.completion.no_response_ns);
        }
        let (ci, si) = self.pick_sides();
        let h2 =
            |i: Option<usize>| i.filter(|&i| self.sides[i].decoder.protocol() == Protocol::Http2);
        let known = |i: usize| self.sides[i].decoder.h2_tables_known();
        let (primary, role, other) = match (h2(ci), h2(si)) {
            (Some(c), Some(s)) if self.streams_from_server || !known(c) && known(s) => {
                self.streams_from_server = true;
                (s, Role::Server, ci)
            }
            (Some(c), _) => (c, Role::Client, si),
            (None, Some(s)) => (s, Role::Server, ci),
            (None, None) => return,
        };
        let wait = t.missing_side_wait_ns;
        while let Some(head) = self.sides[primary].streams.ready.front() {
            let (id, ready_at, print) = (head.id, head.ready_at, head.print);
            let age = now.saturating_sub(ready_at);
            let other_role = role.opposite();
            let copy = other.and_then(|o| self.sides[o].streams.copy_of(id, print));
            let matched = copy.is_some();
            let emit = force
                || matched
                || age >= wait
                || (other.is_none() && self.absent_confirmed[role_index(other_role)]);
            if !emit {
                break;
            }
            if other.is_none() && age >= wait && t.absence_proof.holds(ready_at, head.event_ts()) {
                self.absent_confirmed[role_index(other_role)] = true;
            }
            let Some(mut item) = self.sides[primary].streams.ready.pop_front() else {
                break;
            };
            if !self.emitted.note_id(id) || print.is_some_and(|p| self.emitted.take_orphan(&p)) {
                // Emitted from the other end's copy before this end showed up.
                continue;
            }
            match (other, copy) {
                (Some(o), Some(pos)) => {
                    if let Some(mut copy) = self.sides[o].streams.ready.remove(pos) {
                        item.refs.append(&mut copy.refs);
                    }
                }
                // The other end may show up later with its copy (its agent's
                // events late), even if it is not known yet.
                _ => {
                    if let Some(p) = print {
                        self.emitted.went_out_unpaired(p);
                    }
                }
            }
            out.push(self.stream_pair(item, primary, role, other));
        }
        // The other side's copies nobody claimed: mostly their hop went out
        // without them (they came too late), so this is no loss; but a message
        // only the other end has (the primary's read of it was cut, or its
        // probes attached later) becomes a hop of its own.
        let mut orphans = Vec::new();
        for (i, side) in self.sides.iter_mut().enumerate() {
            if i == primary {
                continue;
            }
            // Ready in arrival order: the old ones are at the front.
            let old = |it: &StreamItem| force || now.saturating_sub(it.ready_at) >= 2 * wait;
            while side.streams.ready.front().is_some_and(old) {
                orphans.extend(side.streams.ready.pop_front().map(|it| (i, it)));
            }
        }
        for (i, item) in orphans {
            let Some(p) = item.print else { continue };
            if !self.emitted.take_unpaired(&p) {
                self.emitted.went_out_as_orphan(p);
                let item_role = self.role_of(i).unwrap_or(role.opposite());
                out.push(self.stream_pair(item, i, item_role, Some(primary)));
            }
        }
    }

    /// A hop for stream `item` of side `own` (in `role`), timed by that side.
    fn stream_pair(
        &mut self,
        mut item: StreamItem,
        own: usize,
        role: Role,
        other: Option<usize>,
    ) -> PairReady {
        let mut pair = match role {
            Role::Client => self.take_pair(Some(own), other, false, false),
            Role::Server => self.take_pair(other, Some(own), false, false),
        };
        pair.refs.append(&mut item.refs);
        pair.stream = Some(item);
        pair.stream_timed_by = Some(role);
        pair
    }

    fn poll_connection_hop(
        &mut self,
        now: u64,
        t: &PairTiming,
        force: bool,
        out: &mut Vec<PairReady>,
    ) {
        if !self.connection_hop_due() {
            return;
        }
        // Both ends known and closed: nothing more to wait for. Otherwise give
        // the other end's agent the usual time to show up.
        let all_closed = self.sides.iter().all(|s| s.closed);
        let both_ends = self.sides.iter().any(|s| {
            s.ident.node != self.sides[0].ident.node || s.local_id != self.sides[0].local_id
        });
        let since = self.first_close_at.unwrap_or(now);
        let ready = force || (all_closed && both_ends);
        if !ready && now.saturating_sub(since) < t.missing_side_wait_ns {
            return;
        }
        let (mut ci, mut si) = self.pick_sides();
        if ci.is_none() && si.is_none() {
            // Nothing tells the roles: the first side seen is taken as the client.
            ci = Some(0);
            si = self.sides.iter().position(|s| {
                s.local_id != self.sides[0].local_id || s.ident.node != self.sides[0].ident.node
            });
        }
        let mut pair = self.take_pair(ci, si, false, false);
        pair.kind = PairKind::Connection;
        // A connection hop is not an exchange: later data pairs from index 0.
        self.pairs_emitted -= 1;
        self.connection_hop_emitted = true;
        out.push(pair);
    }

    /// Drops a side's exchanges that were paired without it (it showed up late).
    fn drop_stale(
        &mut self,
        idx: Option<usize>,
        role: Role,
        p: usize,
        now: u64,
        t: &PairTiming,
        force: bool,
    ) {
        let Some(i) = idx else { return };
        let side = &mut self.sides[i];
        while side.dropped_exchanges < p {
            let spans = split(&side.runs, role);
            if spans.is_empty() || !(force || is_complete(side, &spans, 0, now, t.completion)) {
                return;
            }
            side.runs.drain(..spans[0].run_count());
            side.dropped_exchanges += 1;
        }
    }

    fn state(&self, idx: Option<usize>, role: Role, p: usize, now: u64, t: &PairTiming) -> ExState {
        let Some(i) = idx else { return ExState::Absent };
        let side = &self.sides[i];
        if side.dropped_exchanges < p {
            return ExState::Pending;
        }
        let spans = split(&side.runs, role);
        let local = p - side.dropped_exchanges;
        if local >= spans.len() {
            ExState::Missing
        } else if is_complete(side, &spans, local, now, t.completion) {
            ExState::Complete
        } else {
            ExState::Pending
        }
    }

    fn take_end(&mut self, idx: Option<usize>, role: Role, take: bool) -> EndPart {
        let Some(i) = idx else {
            return EndPart::default();
        };
        self.locked[role_index(role)] = Some(i);
        let side = &mut self.sides[i];
        side.locked_role = Some(role);
        let mut part = EndPart {
            ident: Some(side.ident.clone()),
            event_span: side.event_span(),
            tls: side.tls,
            ..EndPart::default()
        };
        if take {
            if let Some(span) = split(&side.runs, role).first().copied() {
                let mut runs = side.runs.drain(..span.run_count());
                if span.request.is_some() {
                    part.request = runs.next();
                }
                part.response = runs.next();
                side.dropped_exchanges += 1;
            }
        }
        part
    }

    fn take_pair(
        &mut self,
        ci: Option<usize>,
        si: Option<usize>,
        take_c: bool,
        take_s: bool,
    ) -> PairReady {
        let client = self.take_end(ci, Role::Client, take_c);
        let server = self.take_end(si, Role::Server, take_s);
        let mut refs = std::mem::take(&mut self.pending_refs);
        for side in &mut self.sides {
            refs.append(&mut side.pending_refs);
        }
        self.pairs_emitted += 1;
        self.head_wait_since = None;
        PairReady {
            protocol: self.key.protocol(),
            kind: PairKind::RequestResponse,
            client,
            server,
            refs,
            stream_timed_by: None,
            stream: None,
        }
    }
}
