//! Agents the collector knows: their status, held per agent behind an async
//! lock so accepting a batch and queueing its write happen as one step.

mod seq;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ktrail_proto::v1::AgentStatus;
use tokio::sync::Mutex as AsyncMutex;
use tracing::warn;

pub use seq::{apply_seq, classify_seq, SeqVerdict};

/// One agent's live state.
#[derive(Debug, Default)]
pub struct AgentState {
    pub status: AgentStatus,
    /// Gaps seen since the collector started (not in the proto yet).
    pub gaps: u64,
    /// The ingest stream currently feeding this agent.
    pub conn_id: Option<u64>,
}

pub type AgentHandle = Arc<AsyncMutex<AgentState>>;

/// Agents held in memory at most (an agent id is per agent process, so restarts
/// add ids). Beyond it the disconnected agent seen least recently is forgotten.
pub const MAX_AGENTS: usize = 10_000;

/// Every agent held is connected: a new one is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} agents are connected, the most this collector holds")]
pub struct RegistryFull(pub usize);

#[derive(Debug)]
pub struct AgentRegistry {
    agents: Mutex<HashMap<String, AgentHandle>>,
    cap: usize,
    evicted: AtomicU64,
}

impl Default for AgentRegistry {
    fn default() -> Self {
        Self::with_cap(MAX_AGENTS)
    }
}

impl AgentRegistry {
    /// An empty registry holding at most `cap` agents.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            agents: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            evicted: AtomicU64::new(0),
        }
    }

    /// From the statuses stored by an earlier run; none is connected yet. Beyond
    /// [`MAX_AGENTS`] the least recently seen are left out (counted, logged).
    pub fn from_stored(mut statuses: Vec<AgentStatus>) -> Self {
        let registry = Self::default();
        let skipped = statuses.len().saturating_sub(registry.cap);
        if skipped > 0 {
            statuses.sort_by_key(|s| std::cmp::Reverse(s.last_seen_unix_ns));
            statuses.truncate(registry.cap);
            registry.evicted.store(skipped as u64, Ordering::Relaxed);
            warn!(
                skipped,
                cap = registry.cap,
                "more stored agents than the registry holds: the least recently seen are left out"
            );
        }
        let agents = statuses
            .into_iter()
            .map(|mut status| {
                status.connected = false;
                let id = status.agent_id.clone();
                let state = AgentState {
                    status,
                    ..AgentState::default()
                };
                (id, Arc::new(AsyncMutex::new(state)))
            })
            .collect();
        *registry
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = agents;
        registry
    }

    /// The agent's state, created when first seen. At the cap, the disconnected
    /// agent seen least recently is forgotten first (its status stays in the store;
    /// should it come back, it starts as a new agent); if every agent held is
    /// connected, the new one is refused.
    pub fn get_or_insert(&self, agent_id: &str, node: &str) -> Result<AgentHandle, RegistryFull> {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = agents.get(agent_id) {
            return Ok(handle.clone());
        }
        if agents.len() >= self.cap {
            // Busy (locked) agents are in use, so connected: not candidates.
            let victim = agents
                .iter()
                .filter_map(|(id, handle)| {
                    let state = handle.try_lock().ok()?;
                    state
                        .conn_id
                        .is_none()
                        .then(|| (state.status.last_seen_unix_ns, id.clone()))
                })
                .min();
            let Some((last_seen_unix_ns, victim)) = victim else {
                return Err(RegistryFull(agents.len()));
            };
            agents.remove(&victim);
            let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                agent_id = %victim,
                last_seen_unix_ns,
                evicted_total = evicted,
                cap = self.cap,
                "agent registry full: the least recently seen disconnected agent was forgotten"
            );
        }
        let handle = Arc::new(AsyncMutex::new(AgentState {
            status: AgentStatus {
                node: node.to_owned(),
                agent_id: agent_id.to_owned(),
                ..AgentStatus::default()
            },
            ..AgentState::default()
        }));
        agents.insert(agent_id.to_owned(), handle.clone());
        Ok(handle)
    }

    /// Agents forgotten at the cap since the collector started.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every agent's status, ordered by node then agent id.
    pub async fn snapshot(&self) -> Vec<AgentStatus> {
        let handles: Vec<AgentHandle> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.lock().await.status.clone());
        }
        out.sort_by(|a, b| (&a.node, &a.agent_id).cmp(&(&b.node, &b.agent_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_least_recently_seen_disconnected_agent_goes() {
        let registry = AgentRegistry::with_cap(2);
        let a = registry.get_or_insert("a", "n").expect("a");
        let b = registry.get_or_insert("b", "n").expect("b");
        a.lock().await.status.last_seen_unix_ns = 20;
        b.lock().await.status.last_seen_unix_ns = 10;
        registry.get_or_insert("c", "n").expect("c, b forgotten");
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.evicted(), 1);
        let ids: Vec<String> = registry
            .snapshot()
            .await
            .into_iter()
            .map(|s| s.agent_id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
        // Every agent held connected: a new one is refused, nothing is forgotten.
        for id in ["a", "c"] {
            let handle = registry.get_or_insert(id, "n").expect("held");
            handle.lock().await.conn_id = Some(1);
        }
        assert!(registry.get_or_insert("d", "n").is_err());
        assert_eq!(registry.evicted(), 1);
        // A known agent is found whatever the count.
        assert!(Arc::ptr_eq(
            &registry.get_or_insert("a", "n").expect("a"),
            &a
        ));
    }
}
