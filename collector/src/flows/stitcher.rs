//! The stitcher: places each hop, as it is emitted, in the flow of the user
//! operation that caused it, or keeps it pending until it can be placed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ktrail_proto::v1::{Event, Flow, Hop};

use super::gaps::{self, LossWindow, RecentLoss};
use super::keys::{hop_keys, is_call, is_shared_component, HopKeys, Key, ProcessRef};
use super::open_flow::OpenFlow;
use super::parent::Member;
use super::pending::Pending;
use super::processes::ProcessTable;
use super::StitchConfig;
use crate::hops::IdGen;

/// How a hop found its flow.
#[derive(Clone, Debug)]
enum Via {
    Root,
    Key(Key),
    /// The end of a stream whose call is in the flow.
    Stream(String),
    /// Anonymous work inside this call of the flow.
    Within(String),
}

impl Via {
    fn describe(&self) -> String {
        match self {
            Via::Root => "root".into(),
            Via::Key(k) => k.describe(),
            Via::Stream(id) => format!("stream of {id}"),
            Via::Within(id) => format!("within {id}"),
        }
    }

    fn key(&self) -> Option<Key> {
        match self {
            Via::Key(k) => Some(k.clone()),
            _ => None,
        }
    }
}

/// What the stitcher tells the rest of the collector.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A hop, new or again with its flow (or its parent) now known. Shared with
    /// the pending hops when no flow claimed it yet (not copied, request and
    /// response bytes and all).
    Hop(Arc<Hop>),
    /// A flow started or its state changed.
    Flow(Box<Flow>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StitchStats {
    pub flows_started: u64,
    pub flows_closed: u64,
    /// Open flows closed early at the open-flow cap.
    pub flows_evicted: u64,
    pub hops_joined: u64,
    pub pending: usize,
    /// Hops no flow claimed within the pending time.
    pub pending_expired: u64,
    /// Hops dropped from pending at its cap before their time.
    pub pending_evicted: u64,
    pub processes_evicted: u64,
}

#[derive(Debug)]
pub struct FlowStitcher {
    cfg: StitchConfig,
    ids: IdGen,
    procs: ProcessTable,
    flows: HashMap<String, OpenFlow>,
    /// Open flows in start order, for the cap.
    order: VecDeque<String>,
    index: HashMap<Key, String>,
    /// Calls of open flows by the process serving them: (flow, hop).
    calls: HashMap<ProcessRef, Vec<(String, String)>>,
    pending: Pending,
    /// Loss reported recently, for flows stitched after it was.
    recent_loss: RecentLoss,
    /// An agent's stream ended and it may yet come back: no flow closes
    /// until it does or is declared gone, so that flows open when it left
    /// still get its late events or the gap.
    hold_close: bool,
    stats: StitchStats,
}

impl FlowStitcher {
    pub fn new(cfg: StitchConfig, id_seed: u64) -> Self {
        Self {
            ids: IdGen::new(id_seed),
            procs: ProcessTable::new(cfg.max_processes),
            flows: HashMap::new(),
            order: VecDeque::new(),
            index: HashMap::new(),
            calls: HashMap::new(),
            pending: Pending::new(cfg.max_pending, cfg.pending_ttl_ns),
            recent_loss: RecentLoss::default(),
            hold_close: false,
            stats: StitchStats::default(),
            cfg,
        }
    }

    pub fn stats(&self) -> StitchStats {
        StitchStats {
            pending: self.pending.len(),
            pending_expired: self.pending.expired,
            pending_evicted: self.pending.evicted,
            processes_evicted: self.procs.evicted,
            ..self.stats
        }
    }

    /// Open flows, for status and tests.
    pub fn open_flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.values().map(|f| &f.flow)
    }

    /// A process event (exec, fork, exit) from `node`'s agent.
    pub fn on_process_event(
        &mut self,
        node: &str,
        agent_id: &str,
        event: &Event,
        now: u64,
        out: &mut Vec<Update>,
    ) {
        if let Some(hop) = self.procs.on_event(node, agent_id, event, &mut self.ids) {
            self.on_hop(hop, now, out);
        }
    }

    pub fn on_hop(&mut self, hop: Hop, now: u64, out: &mut Vec<Update>) {
        let keys = hop_keys(&hop, &self.procs);
        let mut work = VecDeque::from([(hop, keys, true)]);
        let mut touched = BTreeSet::new();
        while let Some((hop, keys, first)) = work.pop_front() {
            let placed = self
                .find(&hop, &keys)
                .or_else(|| is_root(&hop).then(|| (self.start_flow(&hop, now, out), Via::Root)));
            let Some((flow_id, via)) = placed else {
                let hop = Arc::new(hop);
                if first {
                    out.push(Update::Hop(hop.clone()));
                }
                self.pending.add(hop, keys, now);
                continue;
            };
            touched.insert(flow_id.clone());
            self.join(&flow_id, hop, keys, via, now, out, &mut work);
        }
        // Every touched flow goes out again: its hop count, end and nodes
        // changed even when its state did not.
        for id in touched {
            if let Some(f) = self.flows.get_mut(&id) {
                f.evaluate(now, &self.cfg);
                out.push(Update::Flow(Box::new(f.flow.clone())));
            }
        }
    }

    /// A node's agent reported events lost, or is gone: every flow open
    /// then may miss hops, and says so.
    pub fn on_loss(&mut self, w: LossWindow, now: u64, out: &mut Vec<Update>) {
        for f in self.flows.values_mut() {
            if gaps::apply(&mut f.flow, &w) {
                out.push(Update::Flow(Box::new(f.flow.clone())));
            }
        }
        self.recent_loss.record(w, now);
    }

    /// Whether an agent is between its stream's end and being declared gone.
    pub fn hold_closing(&mut self, hold: bool) {
        self.hold_close = hold;
    }

    /// An agent of `node` connected: flows starting from now see it again.
    pub fn on_node_back(&mut self, node: &str) {
        self.recent_loss.node_back(node);
    }

    /// Time passes: states move on, flows close, pending hops expire.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Update>) {
        self.pending.expire(now);
        let mut closing = Vec::new();
        for (id, f) in &mut self.flows {
            if f.evaluate(now, &self.cfg) {
                out.push(Update::Flow(Box::new(f.flow.clone())));
            }
            if !self.hold_close && f.closes(now, &self.cfg) {
                closing.push(id.clone());
            }
        }
        for id in closing {
            self.close(&id, out);
            self.stats.flows_closed += 1;
        }
    }

    fn find(&self, hop: &Hop, keys: &HopKeys) -> Option<(String, Via)> {
        let root_like = is_root(hop);
        // Object keys first: a watch event belongs to its object's flow
        // before the flow of whoever watches.
        let ordered = keys
            .lookup
            .iter()
            .filter(|k| !root_like && !matches!(k, Key::Process(_)))
            .chain(keys.lookup.iter().filter(|k| matches!(k, Key::Process(_))));
        for k in ordered {
            if let Some(id) = self.index.get(k) {
                let id = self.owner_at(k, id, hop.start_unix_ns).unwrap_or(id);
                return Some((id.clone(), Via::Key(k.clone())));
            }
        }
        if root_like {
            return None;
        }
        if hop.stream_id != 0 && matches!(hop.kind.as_str(), "stream-end" | "stream-message") {
            for (id, f) in &self.flows {
                if let Some(call) = f.call_of_stream(|h| same_stream(h, hop)) {
                    return Some((id.clone(), Via::Stream(call.hop.id.clone())));
                }
            }
        }
        // Only work a call caused can be inside it: not the next message
        // of a long-lived stream that happens to pass meanwhile.
        if keys.anonymous() && is_containable(hop) {
            let initiator = keys.initiator.as_ref()?;
            for (flow_id, hop_id) in self.calls.get(initiator).into_iter().flatten() {
                let Some(f) = self.flows.get(flow_id) else {
                    continue;
                };
                let within = f
                    .members
                    .iter()
                    .find(|m| &m.hop.id == hop_id)
                    .filter(|m| f.covers(m, hop.start_unix_ns));
                if let Some(m) = within {
                    return Some((flow_id.clone(), Via::Within(m.hop.id.clone())));
                }
            }
        }
        None
    }

    /// The newest flow naming a key owns it, but a hop that started before that flow
    /// did is not its doing: it goes to the newest open flow with the key that had
    /// started by then. (`kubectl create`, `patch`, `delete` of one object in quick
    /// succession: each write's etcd hops arrive after the next operation began.)
    fn owner_at(&self, key: &Key, newest: &str, start_ns: u64) -> Option<&String> {
        let newest = self.flows.get(newest)?;
        if newest.flow.start_unix_ns <= start_ns {
            return None;
        }
        self.flows
            .iter()
            .filter(|(_, f)| f.flow.start_unix_ns <= start_ns && f.keys.contains(key))
            .max_by_key(|(_, f)| f.flow.start_unix_ns)
            .map(|(id, _)| id)
    }

    fn start_flow(&mut self, root: &Hop, now: u64, out: &mut Vec<Update>) -> String {
        while self.flows.len() >= self.cfg.max_open_flows {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.flows.contains_key(&old) {
                self.close(&old, out);
                self.stats.flows_evicted += 1;
            }
        }
        let id = self.ids.next_id("f-");
        let mut flow = OpenFlow::new(id.clone(), root, now);
        for w in self.recent_loss.for_new_flow(root.start_unix_ns) {
            gaps::add_gap(&mut flow.flow, w);
        }
        out.push(Update::Flow(Box::new(flow.flow.clone())));
        self.flows.insert(id.clone(), flow);
        self.order.push_back(id.clone());
        self.stats.flows_started += 1;
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        flow_id: &str,
        mut hop: Hop,
        keys: HopKeys,
        via: Via,
        now: u64,
        out: &mut Vec<Update>,
        work: &mut VecDeque<(Hop, HopKeys, bool)>,
    ) {
        hop.joined_by = via.describe();
        let mut learn: Vec<Key> = Vec::new();
        if is_root(&hop) {
            if let Some(client) = &keys.initiator {
                learn.push(Key::Process(client.clone()));
            }
            if !matches!(hop.method.as_str(), "GET" | "HEAD" | "") {
                learn.extend(keys.learn.iter().cloned());
            }
            if let Some(f) = self.flows.get_mut(flow_id) {
                f.promote_root(&hop);
            }
        } else {
            learn.extend(keys.learn.iter().cloned());
        }
        for k in learn {
            self.learn(flow_id, k, work);
        }
        if hop.kind == "stream-end" {
            self.finish_stream(flow_id, &hop, work);
        }
        let call = is_call(&hop).then(|| keys.receiver.clone()).flatten();
        let (start, end) = (hop.start_unix_ns, hop.start_unix_ns + hop.duration_ns);
        let hop_id = hop.id.clone();
        let Some(f) = self.flows.get_mut(flow_id) else {
            return;
        };
        let member = Member {
            hop,
            keys,
            joined_by: via.key(),
            parent_score: 0,
        };
        for changed in f.join(member, &self.cfg, now) {
            out.push(Update::Hop(Arc::new(changed)));
        }
        self.stats.hops_joined += 1;
        if let Some(receiver) = call {
            self.calls
                .entry(receiver.clone())
                .or_default()
                .push((flow_id.to_string(), hop_id));
            self.take_contained(&receiver, start, end, work);
        }
    }

    fn learn(&mut self, flow_id: &str, key: Key, work: &mut VecDeque<(Hop, HopKeys, bool)>) {
        let Some(f) = self.flows.get_mut(flow_id) else {
            return;
        };
        if f.keys.contains(&key) {
            return;
        }
        if let Key::Process(p) = &key {
            let comm = self.procs.get(p).map(|i| i.comm.as_str()).unwrap_or("");
            if is_shared_component(comm) {
                return;
            }
        }
        f.keys.push(key.clone());
        // The newest flow naming a key owns it (`kubectl delete` after `run`).
        self.index.insert(key.clone(), flow_id.to_string());
        for (hop, keys) in self.pending.take(&key, |_, _| true) {
            work.push_back((hop, keys, false));
        }
        // Events name their subject by namespace and name only.
        if let Key::Object {
            namespace, name, ..
        } = key
        {
            self.learn(flow_id, Key::NsName { namespace, name }, work);
        }
    }

    /// A stream-end finished a call: what its server did until then is
    /// inside it.
    fn finish_stream(
        &mut self,
        flow_id: &str,
        end_hop: &Hop,
        work: &mut VecDeque<(Hop, HopKeys, bool)>,
    ) {
        let Some(f) = self.flows.get_mut(flow_id) else {
            return;
        };
        let Some(call) = f.call_of_stream(|h| same_stream(h, end_hop)) else {
            return;
        };
        let (call_id, start, receiver) = (
            call.hop.id.clone(),
            call.start(),
            call.keys.receiver.clone(),
        );
        let end = end_hop.start_unix_ns.saturating_add(end_hop.duration_ns);
        f.extend_call(&call_id, end);
        if let Some(r) = receiver {
            self.calls
                .entry(r.clone())
                .or_default()
                .push((flow_id.to_string(), call_id));
            self.take_contained(&r, start, end, work);
        }
    }

    fn take_contained(
        &mut self,
        receiver: &ProcessRef,
        start: u64,
        end: u64,
        work: &mut VecDeque<(Hop, HopKeys, bool)>,
    ) {
        let key = Key::Process(receiver.clone());
        let taken = self.pending.take(&key, |h, k| {
            k.anonymous()
                && is_containable(h)
                && k.initiator.as_ref() == Some(receiver)
                && (start..=end).contains(&h.start_unix_ns)
        });
        for (hop, keys) in taken {
            work.push_back((hop, keys, false));
        }
    }

    /// Forgets an open flow, sending its last version.
    fn close(&mut self, id: &str, out: &mut Vec<Update>) {
        let Some(mut f) = self.flows.remove(id) else {
            return;
        };
        f.flow.closed = true;
        out.push(Update::Flow(Box::new(f.flow.clone())));
        for k in &f.keys {
            if self.index.get(k).is_some_and(|owner| owner == id) {
                self.index.remove(k);
            }
        }
        self.calls.retain(|_, v| {
            v.retain(|(fid, _)| fid != id);
            !v.is_empty()
        });
        self.order.retain(|x| x != id);
    }
}

/// A request of a user's client (kubectl, curl, a script: anything that is
/// not a cluster component) to the API server starts a flow.
pub fn is_root(hop: &Hop) -> bool {
    let (Some(client), Some(server)) = (&hop.client, &hop.server) else {
        return false;
    };
    hop.kind == "request/response"
        && client.observed
        && !is_shared_component(&client.comm)
        && !client.comm.starts_with("containerd")
        && !client.comm.starts_with("runc")
        && server.comm.starts_with("kube-apiserver")
}

/// Hops that can happen inside a call of their process.
fn is_containable(hop: &Hop) -> bool {
    matches!(
        hop.kind.as_str(),
        "request/response" | "connection" | "exec"
    )
}

/// The same stream of the same connection's two processes.
fn same_stream(a: &Hop, b: &Hop) -> bool {
    let end = |e: &Option<ktrail_proto::v1::HopEnd>| {
        e.as_ref()
            .map(|e| (e.node.clone(), e.pid, e.addr.clone(), e.port))
    };
    a.stream_id == b.stream_id
        && end(&a.client) == end(&b.client)
        && end(&a.server) == end(&b.server)
}
