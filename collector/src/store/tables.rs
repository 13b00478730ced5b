//! redb tables and the records stored in them (prost-encoded).

use ktrail_proto::v1::Event;
use redb::TableDefinition;

/// `(agent_id, seq)` → [`StoredEvent`].
pub const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// `agent_id` → `AgentStatus`.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// `(start_unix_ns, hop_id)` → `Hop`.
pub const HOPS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("hops");

/// An event with the node it was seen on (the key holds agent and seq).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(message, optional, tag = "2")]
    pub event: Option<Event>,
}
