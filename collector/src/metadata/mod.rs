//! Pod and node metadata from the API server: watches (a list, then a watch
//! stream; relisted by kube-runtime after a 410 Gone or a broken stream) keep
//! [`ClusterMetadata`] current, and the hop task labels each hop's ends with pod,
//! namespace, owner and node by address.

mod map;

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use map::{ClusterMetadata, PodMeta};

/// Where the collector finds the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataSource {
    /// The pod's service account (KUBERNETES_SERVICE_HOST and
    /// /var/run/secrets/kubernetes.io/serviceaccount).
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("no in-cluster Kubernetes configuration (is the collector running in a pod with a service account?): {0}")]
    InCluster(#[source] kube::config::InClusterError),
    #[error("cannot read kubeconfig {path}: {error}")]
    Kubeconfig {
        path: PathBuf,
        error: kube::config::KubeconfigError,
    },
    #[error("cannot make a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client for `source`; fails on a missing or unreadable configuration (the
/// API server itself is reached only by the watches).
pub async fn client(source: &MetadataSource) -> Result<Client, MetadataError> {
    let config = match source {
        MetadataSource::InCluster => kube::Config::incluster().map_err(MetadataError::InCluster)?,
        MetadataSource::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|error| {
                MetadataError::Kubeconfig {
                    path: path.clone(),
                    error,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|error| MetadataError::Kubeconfig {
                    path: path.clone(),
                    error,
                })?
        }
    };
    Client::try_from(config).map_err(MetadataError::Client)
}

/// Watches pods and nodes into `map` until `shutdown`. Errors (API server
/// away, RBAC) are logged and retried with backoff; hops are labelled with what
/// is known meanwhile.
pub fn spawn(
    client: Client,
    map: Arc<ClusterMetadata>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let pods = follow::<Pod>(
            Api::all(client.clone()),
            "pods",
            map.clone(),
            |m, p| m.apply_pod(p),
            |m, p| m.delete_pod(p),
            |m, all| m.replace_pods(all),
        );
        let nodes = follow::<Node>(
            Api::all(client),
            "nodes",
            map,
            |m, n| m.apply_node(n),
            |m, n| m.delete_node(n),
            |m, all| m.replace_nodes(all),
        );
        tokio::select! {
            _ = pods => {}
            _ = nodes => {}
            _ = shutdown.changed() => {}
        }
    })
}

async fn follow<K>(
    api: Api<K>,
    what: &'static str,
    map: Arc<ClusterMetadata>,
    apply: fn(&ClusterMetadata, &K),
    delete: fn(&ClusterMetadata, &K),
    replace: fn(&ClusterMetadata, &[K]),
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Vec<K> = Vec::new();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(obj)) => listing.push(obj),
            Ok(Event::InitDone) => {
                replace(&map, &listing);
                let (pods, node_ips) = map.counts();
                info!(
                    what,
                    listed = listing.len(),
                    pods,
                    node_ips,
                    "Kubernetes metadata listed; watching"
                );
                listing.clear();
                failing = false;
            }
            Ok(Event::Apply(obj)) => apply(&map, &obj),
            Ok(Event::Delete(obj)) => delete(&map, &obj),
            Err(e) => {
                // Logged once per outage; the watcher retries with backoff.
                if !failing {
                    warn!(what, error = %e, "watching the API server failed; retrying");
                }
                failing = true;
            }
        }
    }
}
