//! What the collector knows of the cluster's pods and nodes, by address and
//! container id, and the labels it puts on hops' ends.

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::api::core::v1::{Node, Pod};
use ktrail_proto::v1::{Hop, HopEnd};

/// One pod, as hops' ends are labelled with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
    /// The controlling owner, "Kind/name"; empty for a bare pod.
    pub owner: String,
}

impl PodMeta {
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| format!("{}/{}", o.kind, o.name))
            .unwrap_or_default();
        Some(Self {
            uid: meta.uid.clone()?,
            name: meta.name.clone()?,
            namespace: meta.namespace.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            owner,
        })
    }
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .collect();
    if let Some(ip) = &status.pod_ip {
        if !ips.contains(ip) {
            ips.push(ip.clone());
        }
    }
    ips
}

/// Container ids without the runtime prefix ("containerd://abc" → "abc"), as the
/// agent reads them from the cgroup path.
fn container_ids(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter_map(|c| c.container_id.as_deref())
    .map(|id| id.rsplit("://").next().unwrap_or(id).to_owned())
    .filter(|id| !id.is_empty())
    .collect()
}

#[derive(Debug, Default)]
struct Maps {
    pods: HashMap<String, (PodMeta, Vec<String>, Vec<String>)>,
    by_ip: HashMap<String, String>,
    by_container: HashMap<String, String>,
    node_by_ip: HashMap<String, String>,
}

impl Maps {
    fn remove_pod(&mut self, uid: &str) {
        if let Some((_, ips, containers)) = self.pods.remove(uid) {
            for ip in ips {
                // The IP may have gone to a newer pod already.
                if self.by_ip.get(&ip).is_some_and(|u| u == uid) {
                    self.by_ip.remove(&ip);
                }
            }
            for c in containers {
                self.by_container.remove(&c);
            }
        }
    }

    fn apply_pod(&mut self, pod: &Pod) {
        let Some(meta) = PodMeta::from_pod(pod) else {
            return;
        };
        self.remove_pod(&meta.uid);
        // A finished pod's IP is free for the next one.
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let ips = if host_network(pod) || finished {
            Vec::new()
        } else {
            pod_ips(pod)
        };
        let containers = container_ids(pod);
        for ip in &ips {
            self.by_ip.insert(ip.clone(), meta.uid.clone());
        }
        for c in &containers {
            self.by_container.insert(c.clone(), meta.uid.clone());
        }
        self.pods.insert(meta.uid.clone(), (meta, ips, containers));
    }
}

/// The pods and nodes the API server reported, kept current by the watches
/// (`super::watch`). Cheap to read from the hop task.
#[derive(Debug, Default)]
pub struct ClusterMetadata {
    maps: RwLock<Maps>,
}

impl ClusterMetadata {
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn apply_pod(&self, pod: &Pod) {
        self.write().apply_pod(pod);
    }

    pub fn delete_pod(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.write().remove_pod(uid);
        }
    }

    /// Replaces every pod (after a (re)list).
    pub fn replace_pods(&self, pods: &[Pod]) {
        let mut maps = self.write();
        maps.pods.clear();
        maps.by_ip.clear();
        maps.by_container.clear();
        for pod in pods {
            maps.apply_pod(pod);
        }
    }

    fn node_entries(node: &Node) -> Option<(String, Vec<String>)> {
        let name = node.metadata.name.clone()?;
        let ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                    .map(|a| a.address.clone())
                    .collect()
            })
            .unwrap_or_default();
        Some((name, ips))
    }

    pub fn apply_node(&self, node: &Node) {
        let Some((name, ips)) = Self::node_entries(node) else {
            return;
        };
        let mut maps = self.write();
        maps.node_by_ip.retain(|_, n| *n != name);
        for ip in ips {
            maps.node_by_ip.insert(ip, name.clone());
        }
    }

    pub fn delete_node(&self, node: &Node) {
        if let Some(name) = &node.metadata.name {
            self.write().node_by_ip.retain(|_, n| n != name);
        }
    }

    pub fn replace_nodes(&self, nodes: &[Node]) {
        self.write().node_by_ip.clear();
        for node in nodes {
            self.apply_node(node);
        }
    }

    pub fn pod_by_ip(&self, ip: &str) -> Option<PodMeta> {
        let maps = self.read();
        let uid = maps.by_ip.get(ip)?;
        maps.pods.get(uid).map(|(m, ..)| m.clone())
    }

    pub fn pod_by_container(&self, container_id: &str) -> Option<PodMeta> {
        let maps = self.read();
        let uid = maps.by_container.get(container_id)?;
        maps.pods.get(uid).map(|(m, ..)| m.clone())
    }

    pub fn node_by_ip(&self, ip: &str) -> Option<String> {
        self.read().node_by_ip.get(ip).cloned()
    }

    pub fn counts(&self) -> (usize, usize) {
        let maps = self.read();
        (maps.pods.len(), maps.node_by_ip.len())
    }

    fn label_end(&self, end: &mut HopEnd) {
        if end.addr.is_empty() {
            return;
        }
        if let Some(pod) = self.pod_by_ip(&end.addr) {
            end.pod = pod.name;
            end.namespace = pod.namespace;
            end.owner = pod.owner;
            end.k8s_node = pod.node;
        } else if let Some(node) = self.node_by_ip(&end.addr) {
            end.k8s_node = node;
        }
    }

    /// Puts pod, namespace, owner and node on both ends of `hop`, by address.
    pub fn label(&self, hop: &mut Hop) {
        for end in [hop.client.as_mut(), hop.server.as_mut()]
            .into_iter()
            .flatten()
        {
            self.label_end(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerStatus, NodeAddress, NodeStatus, PodIP, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(uid: &str, name: &str, ip: &str, host_network: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(name.into()),
                namespace: Some("default".into()),
                owner_references: Some(vec![OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: "web-7c5d".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("k8s-worker".into()),
                host_network: Some(host_network),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                container_statuses: Some(vec![ContainerStatus {
                    container_id: Some(format!("containerd://{uid}-c")),
                    ..ContainerStatus::default()
                }]),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    fn node(name: &str, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn end(addr: &str) -> Option<HopEnd> {
        Some(HopEnd {
            addr: addr.into(),
            ..HopEnd::default()
        })
    }

    #[test]
    fn hop_ends_get_pod_owner_and_node() {
        let m = ClusterMetadata::new();
        m.apply_pod(&pod("u1", "web-1", "10.244.1.5", false));
        m.replace_nodes(&[node("k8s-control", "192.168.56.10")]);
        let mut hop = Hop {
            client: end("192.168.56.10"),
            server: end("10.244.1.5"),
            ..Hop::default()
        };
        m.label(&mut hop);
        let server = hop.server.expect("server");
        assert_eq!(
            (
                server.pod.as_str(),
                server.namespace.as_str(),
                server.owner.as_str(),
                server.k8s_node.as_str()
            ),
            ("web-1", "default", "ReplicaSet/web-7c5d", "k8s-worker")
        );
        let client = hop.client.expect("client");
        assert_eq!(client.pod, "");
        assert_eq!(client.k8s_node, "k8s-control");
        assert_eq!(
            m.pod_by_container("u1-c").map(|p| p.name),
            Some("web-1".into())
        );
    }

    #[test]
    fn host_network_pods_do_not_claim_the_node_address() {
        let m = ClusterMetadata::new();
        m.apply_pod(&pod("u1", "kube-proxy-x", "192.168.56.20", true));
        assert_eq!(m.pod_by_ip("192.168.56.20"), None);
        assert!(m.pod_by_container("u1-c").is_some());
    }

    #[test]
    fn a_reused_ip_belongs_to_the_newer_pod_after_the_old_one_is_deleted() {
        let m = ClusterMetadata::new();
        let old = pod("u1", "old", "10.244.1.5", false);
        m.apply_pod(&old);
        m.apply_pod(&pod("u2", "new", "10.244.1.5", false));
        m.delete_pod(&old);
        assert_eq!(
            m.pod_by_ip("10.244.1.5").map(|p| p.name),
            Some("new".into())
        );
        m.replace_pods(&[]);
        assert_eq!(m.pod_by_ip("10.244.1.5"), None);
        assert_eq!(m.counts(), (0, 0));
    }
}
