//! One flow while it runs: its hops, what it is about, and whether the
//! operation has settled, failed or gone idle.

use std::collections::{BTreeSet, HashMap};

use ktrail_proto::v1::{Flow, FlowFailure, Hop, ObjectRef};

use super::keys::{is_call, object_namespace, resource_of_kind, Key};
use super::parent::{best_parent, Member};
use super::StitchConfig;

pub const RUNNING: &str = "running";
pub const SETTLED: &str = "settled";
pub const FAILED: &str = "failed";
pub const IDLE: &str = "idle";

/// Warning Event reasons after which the operation will not get further
/// by itself (the kubelet and scheduler retry, but the user must act).
/// Other warnings — FailedMount above all, which the kubelet posts while a
/// pod's configmap or token volume is not synced yet and which clears by
/// itself — fail a flow only if it then makes no progress (goes idle).
const TERMINAL_REASONS: [&str; 8] = [
    "Failed",
    "FailedScheduling",
    "FailedCreatePodSandBox",
    "FailedAttachVolume",
    "InspectFailed",
    "ErrImageNeverPull",
    "FailedCreate",
    "BackOff",
];

/// Workload kinds whose pods arrive later (through their controllers).
const WORKLOADS: [&str; 6] = [
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
];

#[derive(Debug)]
pub struct OpenFlow {
    pub flow: Flow,
    pub members: Vec<Member>,
    /// Index of each member by hop id.
    by_id: HashMap<String, usize>,
    /// Keys registered for this flow (to unregister when it closes).
    pub keys: Vec<Key>,
    /// A call's end, extended by the stream-end that finished it later.
    call_end: HashMap<String, u64>,
    pods: HashMap<(String, String), bool>,
    workloads: bool,
    root_method: String,
    root_status: u32,
    root_done: bool,
    deleted: bool,
    failure_terminal: bool,
    /// Event time of the latest hop end.
    last_activity: u64,
    /// Collector time the latest hop joined.
    last_joined: u64,
    /// Collector time it settled or failed: it closes a linger after that,
    /// however much its objects go on doing (status syncs, retries).
    finished_at: Option<u64>,
}

impl OpenFlow {
    pub fn new(id: String, root: &Hop, now: u64) -> Self {
        let flow = Flow {
            id,
            title: title(root),
            state: RUNNING.into(),
            start_unix_ns: root.start_unix_ns,
            root_hop_id: root.id.clone(),
            ..Flow::default()
        };
        Self {
            flow,
            members: Vec::new(),
            by_id: HashMap::new(),
            keys: Vec::new(),
            call_end: HashMap::new(),
            pods: HashMap::new(),
            workloads: false,
            root_method: root.method.clone(),
            root_status: 0,
            root_done: false,
            deleted: false,
            failure_terminal: false,
            last_activity: 0,
            last_joined: now,
            finished_at: None,
        }
    }

    /// A mutating request of the root's client becomes the root: `kubectl
    /// run` asks GET /version before its POST.
    pub fn promote_root(&mut self, hop: &Hop) {
        let read_only = |m: &str| matches!(m, "GET" | "HEAD" | "");
        let names_object = |h: &Hop| h.objects.iter().any(|o| !o.name.is_empty());
        let root_named = self
            .members
            .iter()
            .find(|m| m.hop.id == self.flow.root_hop_id)
            .is_some_and(|m| names_object(&m.hop));
        // A better title: the first request with a method, then the first
        // that names an object (`kubectl wait` asks /version first), and a
        // mutating request over any read.
        let better = (self.root_method.is_empty() && !hop.method.is_empty())
            || (read_only(&self.root_method)
                && read_only(&hop.method)
                && !hop.method.is_empty()
                && !root_named
                && names_object(hop))
            || (read_only(&self.root_method) && !read_only(&hop.method));
        if better {
            self.flow.root_hop_id = hop.id.clone();
            self.flow.title = title(hop);
            self.root_method = hop.method.clone();
        }
    }

    /// Adds a hop (or replaces an earlier version of it); returns the hops
    /// whose parent changed, this one included, with `flow_id` set.
    pub fn join(&mut self, mut member: Member, cfg: &StitchConfig, now: u64) -> Vec<Hop> {
        member.hop.flow_id = self.flow.id.clone();
        self.observe(&member.hop);
        self.last_joined = now;
        let mut changed = Vec::new();
        if self.members.len() >= cfg.max_hops_per_flow {
            // Counted but not kept: too big to parent hop by hop.
            self.flow.hop_count += 1;
            changed.push(member.hop);
            return changed;
        }
        let is_new = !self.by_id.contains_key(&member.hop.id);
        let found = best_parent(self.candidates(), &member);
        let (parent, score) = found.unwrap_or_default();
        member.hop.parent_id = parent;
        member.parent_score = score;
        // Hops that started after this one may have found a better cause.
        let mut better = Vec::new();
        for (i, other) in self.members.iter().enumerate() {
            let end = self.call_end(&member);
            let s = super::parent::score(&member, other, end);
            if s > other.parent_score {
                better.push((i, s));
            }
        }
        for (i, s) in better {
            let m = &mut self.members[i];
            m.hop.parent_id = member.hop.id.clone();
            m.parent_score = s;
            changed.push(m.hop.clone());
        }
        changed.push(member.hop.clone());
        if is_new {
            self.flow.hop_count += 1;
            self.by_id.insert(member.hop.id.clone(), self.members.len());
            self.members.push(member);
        } else if let Some(&i) = self.by_id.get(&member.hop.id) {
            self.members[i] = member;
        }
        changed
    }

    fn call_end(&self, m: &Member) -> u64 {
        self.call_end
            .get(&m.hop.id)
            .copied()
            .unwrap_or_else(|| m.end())
    }

    fn candidates(&self) -> impl Iterator<Item = (&Member, u64)> {
        self.members.iter().map(|m| (m, self.call_end(m)))
    }

    /// A stream-end finished the call `hop_id` at `end`: work inside it up to
    /// then is contained in it.
    pub fn extend_call(&mut self, hop_id: &str, end: u64) {
        let e = self.call_end.entry(hop_id.to_string()).or_insert(0);
        *e = (*e).max(end);
    }

    /// The call with this stream (`stream_key`) among the members.
    pub fn call_of_stream(&self, same_stream: impl Fn(&Hop) -> bool) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.hop.kind == "request/response" && same_stream(&m.hop))
    }

    /// Members that are calls served by `receiver` covering `t`.
    pub fn covers(&self, m: &Member, t: u64) -> bool {
        let call = is_call(&m.hop) || self.call_end.contains_key(&m.hop.id);
        call && m.start() <= t && t <= self.call_end(m)
    }

    fn observe(&mut self, hop: &Hop) {
        let end = hop.start_unix_ns.saturating_add(hop.duration_ns);
        self.last_activity = self.last_activity.max(end);
        self.flow.end_unix_ns = self.flow.end_unix_ns.max(end);
        self.flow.start_unix_ns = self.flow.start_unix_ns.min(hop.start_unix_ns);
        let mut nodes: BTreeSet<String> = self.flow.nodes.iter().cloned().collect();
        for end in [&hop.client, &hop.server].into_iter().flatten() {
            if end.observed && !end.node.is_empty() {
                nodes.insert(end.node.clone());
            }
        }
        self.flow.nodes = nodes.into_iter().collect();
        if hop.id == self.flow.root_hop_id {
            self.root_status = hop.status_code;
        }
        if super::stitcher::is_root(hop) && hop.status_code != 0 {
            self.root_done = true;
        }
        // An object's etcd delete is its end, as its DELETED watch event is: that event
        // may reach the stitcher before the DELETE's own hop and join the operation before.
        if hop
            .etcd
            .as_ref()
            .is_some_and(|e| e.op.starts_with("Txn delete_range") && e.txn_result == "succeeded")
        {
            self.deleted = true;
        }
        for o in &hop.objects {
            let resource = if o.resource.is_empty() {
                resource_of_kind(&o.kind)
            } else {
                o.resource.as_str()
            };
            if WORKLOADS.contains(&resource) && !o.name.is_empty() {
                let key = Key::Object {
                    resource: resource.to_string(),
                    namespace: object_namespace(hop, o),
                    name: o.name.clone(),
                };
                self.workloads |= self.keys.contains(&key);
            }
            if o.watch_event_type == "DELETED" {
                self.deleted = true;
            }
            if o.kind == "Pod" && !o.name.is_empty() {
                let ns = object_namespace(hop, o);
                let key = Key::Object {
                    resource: "pods".into(),
                    namespace: ns.clone(),
                    name: o.name.clone(),
                };
                if !self.keys.contains(&key) {
                    continue;
                }
                let running = matches!(o.phase.as_str(), "Running" | "Succeeded");
                let e = self.pods.entry((ns, o.name.clone())).or_insert(false);
                *e |= running;
            }
            self.note_object(hop, o, resource);
            // The component that reported it: the client of the Event's
            // POST (its etcd write and its deliveries name other processes).
            let reported = hop.kind == "request/response"
                && hop.path.contains("/events")
                && matches!(hop.method.as_str(), "POST" | "PUT" | "PATCH");
            // A terminal warning replaces one that was not.
            let replaces = self.flow.failure.is_none() || !self.failure_terminal;
            if o.event_type == "Warning" && reported && replaces {
                self.failure_terminal = TERMINAL_REASONS.contains(&o.reason.as_str());
                self.flow.failure = Some(FlowFailure {
                    hop_id: hop.id.clone(),
                    node: hop
                        .client
                        .as_ref()
                        .map(|c| c.node.clone())
                        .unwrap_or_default(),
                    component: hop
                        .client
                        .as_ref()
                        .map(|c| c.comm.clone())
                        .unwrap_or_default(),
                    message: format!("{}: {}", o.reason, o.message),
                });
            }
        }
        if hop.has_grpc_status && hop.grpc_status != 0 && hop.cri.is_some() {
            // A CRI call failed: the runtime could not do what the kubelet asked.
            let server = hop.server.clone().unwrap_or_default();
            let method = hop
                .cri
                .as_ref()
                .map(|c| c.method.clone())
                .unwrap_or_default();
            self.failure_terminal = true;
            self.flow.failure = Some(FlowFailure {
                hop_id: hop.id.clone(),
                node: server.node,
                component: server.comm,
                message: format!("{method}: {}", hop.status_message),
            });
        }
    }

    /// Keeps the named objects the flow is about (bounded).
    fn note_object(&mut self, hop: &Hop, o: &ObjectRef, resource: &str) {
        const MAX_OBJECTS: usize = 32;
        if o.name.is_empty() || resource.is_empty() || resource == "events" {
            return;
        }
        let namespace = object_namespace(hop, o);
        let key = Key::Object {
            resource: resource.to_string(),
            namespace: namespace.clone(),
            name: o.name.clone(),
        };
        if !self.keys.contains(&key) {
            return;
        }
        let full = self.flow.objects.len() >= MAX_OBJECTS;
        let have = self
            .flow
            .objects
            .iter_mut()
            .find(|x| x.resource == resource && x.namespace == namespace && x.name == o.name);
        match have {
            Some(x) => {
                for (dst, src) in [
                    (&mut x.uid, &o.uid),
                    (&mut x.kind, &o.kind),
                    (&mut x.node_name, &o.node_name),
                    (&mut x.phase, &o.phase),
                ] {
                    if !src.is_empty() {
                        dst.clone_from(src);
                    }
                }
            }
            None if !full => {
                self.flow.objects.push(ObjectRef {
                    resource: resource.to_string(),
                    namespace,
                    name: o.name.clone(),
                    uid: o.uid.clone(),
                    kind: o.kind.clone(),
                    node_name: o.node_name.clone(),
                    phase: o.phase.clone(),
                    ..ObjectRef::default()
                });
            }
            None => {}
        }
    }

    /// Moves the state on; true when it changed.
    pub fn evaluate(&mut self, now: u64, cfg: &StitchConfig) -> bool {
        let before = (self.flow.state.clone(), self.flow.state_reason.clone());
        let quiet = now.saturating_sub(self.last_joined);
        if self.flow.state == RUNNING {
            if self.root_status >= 400 {
                self.flow.state = FAILED.into();
                self.flow.state_reason = format!("the request was refused: {}", self.root_status);
            } else if self.failure_terminal {
                self.flow.state = FAILED.into();
                self.flow.state_reason = self
                    .flow
                    .failure
                    .as_ref()
                    .map(|f| format!("{} failed", f.component))
                    .unwrap_or_default();
            } else if self.root_method == "DELETE" {
                // A deletion is over when the object is gone, not when its pod runs.
                if self.deleted {
                    self.flow.state = SETTLED.into();
                    self.flow.state_reason = "deleted".into();
                } else if quiet >= cfg.idle_ns {
                    self.flow.state = IDLE.into();
                    self.flow.state_reason =
                        format!("no hop for {} s", cfg.idle_ns / 1_000_000_000);
                }
            } else if !self.pods.is_empty() && self.pods.values().all(|r| *r) {
                // A warning that did not stop the pods was not the outcome
                // (its Event is still among the flow's hops).
                self.flow.failure = None;
                self.flow.state = SETTLED.into();
                self.flow.state_reason = match self.pods.len() {
                    1 => {
                        let (ns, name) = self.pods.keys().next().cloned().unwrap_or_default();
                        format!("pod {ns}/{name} Running")
                    }
                    n => format!("{n} pods Running"),
                };
            } else if self.pods.is_empty()
                && !self.workloads
                && self.root_done
                && quiet >= cfg.quiet_ns
            {
                self.flow.state = SETTLED.into();
                self.flow.state_reason = "done".into();
            } else if quiet >= cfg.idle_ns {
                match &self.flow.failure {
                    // Stuck after a warning: that warning is why.
                    Some(f) => {
                        self.flow.state = FAILED.into();
                        self.flow.state_reason = format!("{} failed", f.component);
                    }
                    None => {
                        self.flow.state = IDLE.into();
                        self.flow.state_reason =
                            format!("no hop for {} s", cfg.idle_ns / 1_000_000_000);
                    }
                }
            }
        }
        if self.finished_at.is_none() && matches!(self.flow.state.as_str(), SETTLED | FAILED) {
            self.finished_at = Some(now);
        }
        (self.flow.state.clone(), self.flow.state_reason.clone()) != before
    }

    /// Settled and failed flows take late hops for a linger, then close.
    pub fn closes(&self, now: u64, cfg: &StitchConfig) -> bool {
        match (self.flow.state.as_str(), self.finished_at) {
            (IDLE, _) => true,
            (SETTLED | FAILED, Some(at)) => now.saturating_sub(at) >= cfg.linger_ns,
            _ => false,
        }
    }
}

/// "kubectl POST pods default/x", from the root request.
pub fn title(root: &Hop) -> String {
    let client = root.client.as_ref().map_or("?", |c| c.comm.as_str());
    let object = root.objects.iter().find(|o| !o.name.is_empty()).map(|o| {
        let resource = if o.resource.is_empty() {
            resource_of_kind(&o.kind).to_string()
        } else {
            o.resource.clone()
        };
        let namespace = object_namespace(root, o);
        match (resource.is_empty(), namespace.is_empty()) {
            (true, _) => o.name.clone(),
            (false, true) => format!("{resource} {}", o.name),
            (false, false) => format!("{resource} {namespace}/{}", o.name),
        }
    });
    match (root.method.is_empty(), object) {
        (false, Some(obj)) => format!("{client} {} {obj}", root.method),
        (false, None) => format!("{client} {} {}", root.method, root.path),
        (true, _) if !root.summary.is_empty() => format!("{client} {}", root.summary),
        (true, _) => format!("{client} request"),
    }
}
