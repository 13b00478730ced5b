//! The hop assembler: connections by key, fed event by event, driven by ticks.

use std::sync::Arc;

use ktrail_proto::v1::{event::Body, Event, EventRef, Hop, SyscallEvent, TcpStateChange};

use super::build::build_hops;
use super::classify::{classify, is_tls_plaintext, SyscallClass};
use super::connection::{AbsenceProof, Connection, DataIn, PairReady, PairTiming};
use super::endpoint::{tcp_state_view, ConnectionKey};
use super::exchange::Completion;
use super::ids::IdGen;
use super::run::{Direction, EventSource, Transfer};
use super::side::{Role, Side, SideIdentity};
use super::view_cache::ViewCache;
use super::HopConfig;
use crate::fast_hash::{FastMap, FastSet};

/// Counters of the assembler's work, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Connections held now.
    pub connections: usize,
    pub hops_emitted: u64,
    pub connections_closed: u64,
    pub evicted_idle: u64,
    /// Connections dropped because the cap was reached.
    pub evicted_cap: u64,
    /// Decoded stream items (per-stream hops, watch events) dropped because
    /// a side held too many not yet paired.
    pub stream_items_dropped: u64,
    /// HTTP/2 streams given up (emitted without response) because a side
    /// held too many open ones.
    pub streams_evicted: u64,
    /// Decoded messages not kept because a run held too many (a long watch
    /// burst): their events get no hop of their own.
    pub messages_dropped: u64,
    /// Connections emitted early because an agent that saw them is gone.
    pub retired_agent_gone: u64,
}

/// Pairs the two ends of connections into hops as events stream in.
///
/// Pure logic: the caller passes `now`, a monotonic collector clock in
/// nanoseconds, to [`HopAssembler::ingest`] and [`HopAssembler::tick`]; the
/// waits (quiet, missing side, linger, idle) are measured on it, the hop
/// timestamps come from the events.
#[derive(Debug)]
pub struct HopAssembler {
    cfg: HopConfig,
    conns: FastMap<u64, Connection>,
    by_key: FastMap<ConnectionKey, u64>,
    /// The views of the sockets events name.
    views: ViewCache,
    /// Connections that may have something to emit or evict on a tick.
    active: FastSet<u64>,
    next_conn: u64,
    arrival: u64,
    ids: IdGen,
    stats: AssemblerStats,
    last_sweep: u64,
    absence_proof: AbsenceProof,
}

/// How far apart two nodes' clocks may be when an exchange seen on one is
/// compared with an agent's start on another.
const AGENT_CLOCK_MARGIN_NS: u64 = 1_000_000_000;

fn normalize_state(state: &str) -> String {
    let upper = state.trim().to_ascii_uppercase();
    upper
        .strip_prefix("TCP_")
        .map(str::to_owned)
        .unwrap_or(upper)
}

impl HopAssembler {
    pub fn new(cfg: HopConfig, id_seed: u64) -> Self {
        Self {
            cfg,
            conns: FastMap::default(),
            by_key: FastMap::default(),
            views: ViewCache::default(),
            active: FastSet::default(),
            next_conn: 0,
            arrival: 0,
            ids: IdGen::new(id_seed),
            stats: AssemblerStats::default(),
            last_sweep: 0,
            absence_proof: AbsenceProof::default(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        AssemblerStats {
            connections: self.conns.len(),
            ..self.stats
        }
    }

    fn timing(&self) -> PairTiming {
        PairTiming {
            completion: Completion {
                quiet_ns: self.cfg.quiet_ns,
                no_response_ns: self.cfg.no_response_ns,
            },
            missing_side_wait_ns: self.cfg.missing_side_wait_ns,
            absence_proof: self.absence_proof,
        }
    }

    /// Feeds one event seen on `node` by agent `agent_id`; hops it completes
    /// are appended to `out`.
    pub fn ingest(
        &mut self,
        node: &str,
        agent_id: &str,
        event: &Event,
        now: u64,
        out: &mut Vec<Hop>,
    ) {
        match &event.body {
            Some(Body::Syscall(sc)) => self.on_syscall(node, agent_id, event, sc, now, out),
            Some(Body::TcpState(change)) => {
                self.on_tcp_state(node, agent_id, event, change, now, out)
            }
            _ => {}
        }
    }

    fn on_syscall(
        &mut self,
        node: &str,
        agent_id: &str,
        event: &Event,
        sc: &SyscallEvent,
        now: u64,
        out: &mut Vec<Hop>,
    ) {
        let class = classify(&sc.name);
        let Some(view) = sc.socket.as_ref().and_then(|s| self.views.get(node, s)) else {
            return;
        };
        let moves_data = matches!(class, SyscallClass::Send | SyscallClass::Recv);
        if class == SyscallClass::Other
            || (moves_data && sc.ret <= 0)
            || (class == SyscallClass::Close && sc.ret < 0)
        {
            return;
        }
        let opens = class != SyscallClass::Close;
        let mut id = match self.by_key.get(&view.key) {
            Some(&id) => id,
            // A close alone says nothing about what went before it.
            None if !opens => return,
            None => self.create(view.key.clone(), now, out),
        };
        let reused = self
            .conns
            .get(&id)
            .is_some_and(|c| opens && c.is_reused_by(node, event.pid, &view.local_id));
        if reused {
            self.retire(id, now, out);
            id = self.create(view.key.clone(), now, out);
        }
        self.arrival += 1;
        let arrival = self.arrival;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let idx = match conn.side_index(node, event.pid, &view.local_id) {
            Some(i) => i,
            None => conn.add_side(Side::new(
                SideIdentity {
                    node: node.to_owned(),
                    agent_id: agent_id.to_owned(),
                    pid: event.pid,
                    comm: event.comm.clone(),
                    local: view.local.clone(),
                    remote: view.remote.clone(),
                },
                view.local_id.clone(),
                now,
            )),
        };
        let source = EventSource {
            node,
            agent_id,
            seq: event.seq,
        };
        let side = &mut conn.sides[idx];
        if !event.comm.is_empty() && side.ident.comm != event.comm {
            Arc::make_mut(&mut side.ident).comm.clone_from(&event.comm);
        }
        side.last_activity = now;
        side.saw_event_at(event.timestamp_unix_ns, sc.duration_ns);
        match class {
            SyscallClass::Send | SyscallClass::Recv => {
                let dir = if class == SyscallClass::Send {
                    Direction::Send
                } else {
                    Direction::Recv
                };
                let transfer = Transfer {
                    timestamp_ns: event.timestamp_unix_ns,
                    duration_ns: sc.duration_ns,
                    bytes: u64::try_from(sc.ret).unwrap_or(0),
                    data: &sc.data,
                    truncated: sc.truncated,
                };
                let data = DataIn {
                    dir,
                    transfer: &transfer,
                    plaintext: is_tls_plaintext(&sc.name),
                    arrival,
                };
                conn.push_data(idx, data, &source, now);
            }
            SyscallClass::Connect => {
                side.push_ref(source.to_ref());
                conn.add_hint(node, &view.local_id, Role::Client);
            }
            SyscallClass::Accept => {
                side.push_ref(source.to_ref());
                conn.add_hint(node, &view.local_id, Role::Server);
            }
            SyscallClass::Close => {
                side.push_ref(source.to_ref());
                conn.close_side(idx, now);
            }
            SyscallClass::Other => {}
        }
        conn.last_activity = now;
        self.active.insert(id);
        self.poll_one(id, now, out);
    }

    fn on_tcp_state(
        &mut self,
        node: &str,
        agent_id: &str,
        event: &Event,
        change: &TcpStateChange,
        now: u64,
        out: &mut Vec<Hop>,
    ) {
        let Some(view) = tcp_state_view(node, change) else {
            return;
        };
        let (old, new) = (
            normalize_state(&change.old_state),
            normalize_state(&change.new_state),
        );
        let hint = match (old.as_str(), new.as_str()) {
            ("SYN_SENT", "ESTABLISHED") => Some(Role::Client),
            ("SYN_RECV", "ESTABLISHED") => Some(Role::Server),
            _ => None,
        };
        let closing = new == "CLOSE";
        let mut id = match (self.by_key.get(&view.key), hint) {
            (Some(&id), _) => id,
            (None, Some(_)) => self.create(view.key.clone(), now, out),
            (None, None) => return,
        };
        if hint.is_some()
            && self
                .conns
                .get(&id)
                .is_some_and(|c| !c.sides.is_empty() && c.is_finished())
        {
            self.retire(id, now, out);
            id = self.create(view.key.clone(), now, out);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.push_ref(EventRef {
            node: node.to_owned(),
            agent_id: agent_id.to_owned(),
            seq: event.seq,
        });
        if let Some(role) = hint {
            conn.add_hint(node, &view.local_id, role);
        }
        if closing {
            conn.close_endpoint(node, &view.local_id, now);
        }
        conn.last_activity = now;
        self.active.insert(id);
        self.poll_one(id, now, out);
    }

    /// Drives the waits: exchanges completing by quiet, sides that never show
    /// up, closed connections lingering, idle ones. Call every ~50 ms.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Hop>) {
        let mut ids: Vec<u64> = self.active.iter().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.poll_one(id, now, out);
            let Some(conn) = self.conns.get(&id) else {
                self.active.remove(&id);
                continue;
            };
            match conn.finished_since {
                Some(since) if now.saturating_sub(since) >= self.cfg.closed_linger_ns => {
                    self.remove(id);
                    self.stats.connections_closed += 1;
                }
                Some(_) => {}
                None if !conn.has_pending() => {
                    self.active.remove(&id);
                }
                None => {}
            }
        }
        if now.saturating_sub(self.last_sweep) >= self.cfg.sweep_interval_ns {
            self.last_sweep = now;
            self.sweep_idle(now, out);
        }
    }

    /// Emits whatever is left in every connection and forgets them (shutdown).
    pub fn flush(&mut self, now: u64, out: &mut Vec<Hop>) {
        let mut ids: Vec<u64> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.retire(id, now, out);
        }
    }

    /// An agent connected at `now`: connections that stopped waiting for a
    /// missing side wait for it again (Connection::forget_absences), and a
    /// wait already under way cannot prove a side absent any more.
    pub fn agent_connected(&mut self, now: u64) {
        self.absence_proof.wait_begun_after = now;
        self.forget_absences();
    }

    /// The first event of an agent run, at `first_event_ns` (its node's clock).
    /// Exchanges before it cannot prove its side of a connection absent, however
    /// long they waited: the collector may get a backlog of older exchanges from
    /// its peers' agents after it connected (a collector that starts after the
    /// agents, or agents that start one after the other).
    pub fn agent_started(&mut self, first_event_ns: u64) {
        let after = first_event_ns.saturating_add(AGENT_CLOCK_MARGIN_NS);
        self.absence_proof.exchange_after = self.absence_proof.exchange_after.max(after);
        self.forget_absences();
    }

    fn forget_absences(&mut self) {
        for conn in self.conns.values_mut() {
            conn.forget_absences();
        }
    }

    /// An agent is gone: every connection it saw a side of can get no more of
    /// that side's events, so what they hold is emitted now, marked
    /// incomplete with `why`, rather than waiting for timeouts (or, for a
    /// quiet long-lived connection, for the idle sweep minutes later).
    pub fn retire_agent(&mut self, agent_id: &str, why: &str, now: u64, out: &mut Vec<Hop>) {
        let mut ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.sides.iter().any(|s| s.ident.agent_id == agent_id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let first = out.len();
        for id in ids {
            self.retire(id, now, out);
            self.stats.retired_agent_gone += 1;
        }
        for hop in &mut out[first..] {
            hop.incomplete = true;
            if hop.status_message.is_empty() {
                hop.status_message = why.to_string();
            }
        }
    }

    fn sweep_idle(&mut self, now: u64, out: &mut Vec<Hop>) {
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_activity) >= self.cfg.idle_timeout_ns)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.retire(id, now, out);
            self.stats.evicted_idle += 1;
        }
    }

    fn poll_one(&mut self, id: u64, now: u64, out: &mut Vec<Hop>) {
        let timing = self.timing();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let mut ready = Vec::new();
        conn.poll(now, &timing, &mut ready);
        let (items, streams) = conn.take_drops();
        self.stats.stream_items_dropped += items;
        self.stats.streams_evicted += streams;
        if conn.is_finished() {
            conn.finished_since.get_or_insert(now);
        } else {
            conn.finished_since = None;
        }
        for pair in ready {
            self.emit(pair, out);
        }
    }

    fn emit(&mut self, pair: PairReady, out: &mut Vec<Hop>) {
        self.stats.messages_dropped += [
            &pair.client.request,
            &pair.client.response,
            &pair.server.request,
            &pair.server.response,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.messages_dropped)
        .sum::<u64>();
        for mut hop in build_hops(pair) {
            hop.id = self.ids.next_id("h-");
            self.stats.hops_emitted += 1;
            out.push(hop);
        }
    }

    fn create(&mut self, key: ConnectionKey, now: u64, out: &mut Vec<Hop>) -> u64 {
        if self.conns.len() >= self.cfg.max_connections {
            self.evict_oldest(now, out);
        }
        self.next_conn += 1;
        let id = self.next_conn;
        self.by_key.insert(key.clone(), id);
        self.conns.insert(id, Connection::new(key, now));
        id
    }

    /// At the cap: retires the least recently active 1% (at least one), so
    /// the cost of finding them is shared by many new connections.
    fn evict_oldest(&mut self, now: u64, out: &mut Vec<Hop>) {
        let n = (self.cfg.max_connections / 100)
            .max(1)
            .min(self.conns.len());
        let mut by_age: Vec<(u64, u64)> = self
            .conns
            .iter()
            .map(|(id, c)| (c.last_activity, *id))
            .collect();
        if n < by_age.len() {
            by_age.select_nth_unstable(n);
            by_age.truncate(n);
        }
        by_age.sort_unstable();
        for (_, id) in by_age {
            self.retire(id, now, out);
            self.stats.evicted_cap += 1;
        }
    }

    /// Emits what is left of a connection and forgets it.
    fn retire(&mut self, id: u64, now: u64, out: &mut Vec<Hop>) {
        let timing = self.timing();
        let Some(mut conn) = self.remove(id) else {
            return;
        };
        let mut ready = Vec::new();
        conn.finalize(now, &timing, &mut ready);
        let (items, streams) = conn.take_drops();
        self.stats.stream_items_dropped += items;
        self.stats.streams_evicted += streams;
        for pair in ready {
            self.emit(pair, out);
        }
    }

    fn remove(&mut self, id: u64) -> Option<Connection> {
        self.active.remove(&id);
        let conn = self.conns.remove(&id)?;
        if self.by_key.get(&conn.key) == Some(&id) {
            self.by_key.remove(&conn.key);
        }
        Some(conn)
    }
}
