//! Agents the collector knows: their status, held per agent behind an async
//! lock so accepting a batch and queueing its write happen as one step.

mod seq;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use ktrail_proto::v1::AgentStatus;
use tokio::sync::Mutex as AsyncMutex;

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

#[derive(Debug, Default)]
pub struct AgentRegistry {
    agents: Mutex<HashMap<String, AgentHandle>>,
}

impl AgentRegistry {
    /// From the statuses stored by an earlier run; none is connected yet.
    pub fn from_stored(statuses: Vec<AgentStatus>) -> Self {
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
        Self {
            agents: Mutex::new(agents),
        }
    }

    /// The agent's state, created when first seen.
    pub fn get_or_insert(&self, agent_id: &str, node: &str) -> AgentHandle {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        agents
            .entry(agent_id.to_owned())
            .or_insert_with(|| {
                Arc::new(AsyncMutex::new(AgentState {
                    status: AgentStatus {
                        node: node.to_owned(),
                        agent_id: agent_id.to_owned(),
                        ..AgentStatus::default()
                    },
                    ..AgentState::default()
                }))
            })
            .clone()
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
