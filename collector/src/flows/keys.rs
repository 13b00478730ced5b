//! What a hop says about where it belongs: the objects, pods, containers and
//! processes it names, and which process started it.

use ktrail_proto::v1::{Hop, HopEnd, ObjectRef};

use super::processes::ProcessTable;

/// A process on a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessRef {
    pub node: String,
    pub pid: u32,
}

impl ProcessRef {
    pub fn of(end: &HopEnd) -> Option<Self> {
        (end.observed && end.pid != 0).then(|| Self {
            node: end.node.clone(),
            pid: end.pid,
        })
    }
}

/// Something a flow can be recognised by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A named Kubernetes object: (plural resource, namespace, name).
    Object {
        resource: String,
        namespace: String,
        name: String,
    },
    /// An object by namespace and name only: what an Event's name
    /// (`<object>.<hex>`) tells of its subject.
    NsName { namespace: String, name: String },
    /// A Kubernetes object uid.
    Uid(String),
    /// A containerd container or pod sandbox id.
    Container(String),
    /// A process whose work belongs to the flow (the user's client, a
    /// program started for it, and their descendants).
    Process(ProcessRef),
}

impl Key {
    /// Short text for `Hop.joined_by`.
    pub fn describe(&self) -> String {
        match self {
            Key::Object {
                resource,
                namespace,
                name,
            } if namespace.is_empty() => format!("object {resource}/{name}"),
            Key::Object {
                resource,
                namespace,
                name,
            } => format!("object {resource}/{namespace}/{name}"),
            Key::NsName { namespace, name } => format!("subject {namespace}/{name}"),
            Key::Uid(uid) => format!("uid {}", short(uid, 8)),
            Key::Container(id) => format!("container {}", short(id, 12)),
            Key::Process(p) => format!("process {}[{}]", p.node, p.pid),
        }
    }
}

fn short(s: &str, n: usize) -> &str {
    s.get(..n).unwrap_or(s)
}

/// Hop kinds where the server delivers to the client (the server starts it).
pub fn is_delivery(hop: &Hop) -> bool {
    hop.kind == "watch-event"
}

/// The process that started the hop: the client, or the server of a
/// delivery (a watch event is the API server's doing).
pub fn initiator(hop: &Hop) -> Option<ProcessRef> {
    let end = if is_delivery(hop) {
        hop.server.as_ref()
    } else {
        hop.client.as_ref()
    };
    end.and_then(ProcessRef::of)
}

/// The process the hop reached.
pub fn receiver(hop: &Hop) -> Option<ProcessRef> {
    let end = if is_delivery(hop) {
        hop.client.as_ref()
    } else {
        hop.server.as_ref()
    };
    end.and_then(ProcessRef::of)
}

/// A call that other work can happen inside of: a request with a duration.
pub fn is_call(hop: &Hop) -> bool {
    hop.kind == "request/response" && hop.duration_ns > 0
}

/// What a hop names, split by use.
#[derive(Clone, Debug, Default)]
pub struct HopKeys {
    /// Keys that find the hop's flow.
    pub lookup: Vec<Key>,
    /// Keys the flow learns once the hop has joined it (objects it creates,
    /// ids a response hands out, programs started).
    pub learn: Vec<Key>,
    pub initiator: Option<ProcessRef>,
    pub receiver: Option<ProcessRef>,
}

impl HopKeys {
    /// The hop names nothing of its own (no object, pod, container): only
    /// when it happened, and in which process, can place it (registry
    /// requests during a PullImage, containerd↔shim ttrpc, CNI plugins).
    pub fn anonymous(&self) -> bool {
        !self.lookup.iter().any(|k| !matches!(k, Key::Process(_)))
    }
}

/// Components whose processes serve everyone: never a flow's own process.
pub fn is_shared_component(comm: &str) -> bool {
    const SHARED: [&str; 9] = [
        "kube-apiserver",
        "kube-scheduler",
        "kube-controller",
        "kubelet",
        "kube-proxy",
        "etcd",
        "coredns",
        "registry",
        "ktrail",
    ];
    SHARED.iter().any(|s| comm.starts_with(s)) || comm == "containerd"
}

/// How many ancestors of a hop's process are looked at for lineage.
const MAX_ANCESTORS: usize = 8;

pub fn hop_keys(hop: &Hop, procs: &ProcessTable) -> HopKeys {
    let mut k = HopKeys {
        initiator: initiator(hop),
        receiver: receiver(hop),
        ..HopKeys::default()
    };
    objects(hop, &mut k);
    if let Some(cri) = &hop.cri {
        if !cri.pod_uid.is_empty() {
            k.both(Key::Uid(cri.pod_uid.clone()));
        }
        if !cri.pod_name.is_empty() {
            k.both(Key::Object {
                resource: "pods".into(),
                namespace: cri.pod_namespace.clone(),
                name: cri.pod_name.clone(),
            });
        }
        for id in [&cri.pod_sandbox_id, &cri.container_id] {
            if !id.is_empty() {
                k.both(Key::Container(id.clone()));
            }
        }
    }
    if hop.kind == "exec" {
        exec_keys(hop, procs, &mut k);
    }
    if let Some(p) = &k.initiator {
        for ancestor in procs.lineage(p, MAX_ANCESTORS) {
            k.lookup.push(Key::Process(ancestor));
        }
    }
    k
}

impl HopKeys {
    fn both(&mut self, key: Key) {
        if !self.lookup.contains(&key) {
            self.lookup.push(key.clone());
            self.learn.push(key);
        }
    }

    fn lookup_only(&mut self, key: Key) {
        if !self.lookup.contains(&key) {
            self.lookup.push(key);
        }
    }
}

/// The object's namespace, or, when its body omits it (a POST), the one
/// the request path names.
pub fn object_namespace(hop: &Hop, o: &ObjectRef) -> String {
    if !o.namespace.is_empty() {
        return o.namespace.clone();
    }
    hop.objects
        .iter()
        .find(|p| !p.resource.is_empty() && !p.namespace.is_empty())
        .map(|p| p.namespace.clone())
        .unwrap_or_default()
}

fn objects(hop: &Hop, k: &mut HopKeys) {
    for o in &hop.objects {
        let resource = if o.resource.is_empty() {
            resource_of_kind(&o.kind).to_string()
        } else {
            o.resource.clone()
        };
        let namespace = object_namespace(hop, o);
        if resource == "events" {
            event_keys(o, &namespace, k);
            continue;
        }
        if !o.name.is_empty() && !resource.is_empty() {
            k.both(Key::Object {
                resource,
                namespace,
                name: o.name.clone(),
            });
        }
        if !o.uid.is_empty() {
            k.both(Key::Uid(o.uid.clone()));
        }
        if !o.owner_uid.is_empty() {
            k.lookup_only(Key::Uid(o.owner_uid.clone()));
        }
    }
}

/// An Event joins the flow of its subject; it teaches nothing.
fn event_keys(o: &ObjectRef, namespace: &str, k: &mut HopKeys) {
    if !o.regarding_uid.is_empty() {
        k.lookup_only(Key::Uid(o.regarding_uid.clone()));
    }
    // Event names are `<subject>.<16 hex digits>`.
    if let Some((subject, suffix)) = o.name.rsplit_once('.') {
        if !subject.is_empty() && suffix.len() >= 8 && suffix.chars().all(|c| c.is_ascii_hexdigit())
        {
            k.lookup_only(Key::NsName {
                namespace: namespace.to_string(),
                name: subject.to_string(),
            });
        }
    }
}

/// A started program names its container: by its cgroup (a container's
/// processes), or on its command line (runc's last argument, the shim's
/// `-id`). It becomes one of the flow's processes.
fn exec_keys(hop: &Hop, procs: &ProcessTable, k: &mut HopKeys) {
    let Some(server) = hop.server.as_ref().and_then(ProcessRef::of) else {
        return;
    };
    if let Some(info) = procs.get(&server) {
        if !info.container_id.is_empty() {
            k.lookup_only(Key::Container(info.container_id.clone()));
        }
        for id in container_ids_in_cmdline(&info.cmdline) {
            k.lookup_only(Key::Container(id));
        }
    }
    let comm = hop.server.as_ref().map_or("", |s| s.comm.as_str());
    if !is_shared_component(comm) {
        k.learn.push(Key::Process(server));
    }
}

/// 64-hex-digit words of a command line (containerd ids), including `-id X`.
pub fn container_ids_in_cmdline(cmdline: &str) -> Vec<String> {
    cmdline
        .split(|c: char| c.is_whitespace() || c == '\0' || c == '/' || c == '=')
        .filter(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .fold(Vec::new(), |mut v, w| {
            if !v.contains(&w) {
                v.push(w);
            }
            v
        })
}

/// The plural resource of a kind, for the kinds flows follow.
pub fn resource_of_kind(kind: &str) -> &'static str {
    match kind {
        "Pod" | "Binding" => "pods",
        "ReplicaSet" => "replicasets",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "Job" => "jobs",
        "CronJob" => "cronjobs",
        "Service" => "services",
        "ConfigMap" => "configmaps",
        "Secret" => "secrets",
        "Namespace" => "namespaces",
        "Event" => "events",
        "EndpointSlice" => "endpointslices",
        "Endpoints" => "endpoints",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_come_from_runc_and_shim_command_lines() {
        let id = "68ab0c7ed570d50ed03f97b5dbed6d7baa1b0400a047614f9dab0afe8fc9a370";
        let runc = format!("runc --root /run/containerd/runc/k8s.io --log /run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/log.json create --bundle /run/containerd/io.containerd.runtime.v2.task/k8s.io/{id} {id}");
        assert_eq!(container_ids_in_cmdline(&runc), vec![id.to_string()]);
        let shim = format!("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id {id} -address /run/containerd/containerd.sock");
        assert_eq!(container_ids_in_cmdline(&shim), vec![id.to_string()]);
        assert!(container_ids_in_cmdline("nginx -g daemon off;").is_empty());
    }

    #[test]
    fn an_event_names_its_subject() {
        let hop = Hop {
            objects: vec![ObjectRef {
                resource: "events".into(),
                namespace: "default".into(),
                name: "mynginx.18ea81e634d469e0".into(),
                ..ObjectRef::default()
            }],
            ..Hop::default()
        };
        let k = hop_keys(&hop, &ProcessTable::default());
        assert_eq!(
            k.lookup,
            vec![Key::NsName {
                namespace: "default".into(),
                name: "mynginx".into()
            }]
        );
        assert!(k.learn.is_empty());
    }

    #[test]
    fn a_post_body_takes_the_namespace_of_its_path() {
        let hop = Hop {
            objects: vec![
                ObjectRef {
                    resource: "pods".into(),
                    namespace: "default".into(),
                    ..ObjectRef::default()
                },
                ObjectRef {
                    kind: "Pod".into(),
                    name: "x".into(),
                    ..ObjectRef::default()
                },
            ],
            ..Hop::default()
        };
        let k = hop_keys(&hop, &ProcessTable::default());
        assert_eq!(
            k.learn,
            vec![Key::Object {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "x".into()
            }]
        );
    }
}
