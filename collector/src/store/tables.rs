//! redb tables and the records stored in them (prost-encoded).

use ktrail_proto::v1::{Event, EventBatch, Hop};
use redb::TableDefinition;

/// `(agent_id, seq of its first event)` → one batch of accepted events as received
/// from the agent ([`StoredBatch`], framed by [`super::batch`]). One row per batch,
/// not per event: a B-tree insert and one value per ~100 events.
pub const EVENT_BATCHES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("event_batches");
/// The per-event rows of stores written before [`EVENT_BATCHES`]: `(agent_id, seq)`
/// → [`StoredEvent`]. Read, never written.
pub const LEGACY_EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events");
/// `(batch number, in commit order)` → the [`EVENT_BATCHES`] key, its stored size,
/// event count and commit time (Unix ns): the oldest batches first, for retention.
pub const BATCH_AGE: TableDefinition<u64, (&str, u64, u64, u64, u64)> =
    TableDefinition::new("batch_age");
/// `agent_id` → `AgentStatus`.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// `(start_unix_ns, hop_id_key(hop id))` → `(hop group, index in it)`. Fixed-width
/// on purpose: redb inserts into a leaf of variable-width entries by rewriting every
/// entry's offset, and with the id itself in the key that was 11 % of the collector's
/// CPU (one entry per hop).
pub const HOP_INDEX: TableDefinition<(u64, u64), (u64, u32)> = TableDefinition::new("hop_index_v2");
/// `(start_unix_ns, hop_id)` → `(hop group, index in it)`: [`HOP_INDEX`] as stores
/// written before it held it; moved into it when such a store is opened.
pub const LEGACY_HOP_INDEX: TableDefinition<(u64, &str), (u64, u32)> =
    TableDefinition::new("hop_index");

/// A hop id's key in [`HOP_INDEX`]: 64-bit FNV-1a, a fixed function (the keys are
/// stored). Two hops collide only with the same start nanosecond and the same hash.
pub fn hop_id_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
/// `hop group` (one per commit) → the hops of a commit, a [`StoredHops`] framed like
/// an event batch ([`super::batch`]): compressed together, not one by one.
pub const HOP_GROUPS: TableDefinition<u64, &[u8]> = TableDefinition::new("hop_groups");
/// `(start_unix_ns, hop_id)` → `Hop`, as stores before [`HOP_INDEX`] held them. Read,
/// never written.
pub const LEGACY_HOPS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("hops");

/// An event with the node it was seen on (the key holds agent and seq).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredEvent {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(message, optional, tag = "2")]
    pub event: Option<Event>,
}

/// The accepted events of one received batch, with the node they were seen on:
/// in `events`, or, when every event of the batch was accepted, as the agent sent
/// them, in `batch` (its bytes stored as received; [`super::batch::decode`] moves
/// them into `events`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBatch {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<Event>,
    #[prost(message, optional, tag = "3")]
    pub batch: Option<EventBatch>,
}

/// Counters kept beside the tables, updated in the same transactions.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Bytes of all rows in [`EVENT_BATCHES`] and [`HOP_GROUPS`].
pub const META_EVENT_BYTES: &str = "event_bytes";
pub const META_HOP_BYTES: &str = "hop_bytes";
/// The next [`BATCH_AGE`] and [`HOP_GROUPS`] keys.
pub const META_NEXT_BATCH: &str = "next_batch";
pub const META_NEXT_HOP_GROUP: &str = "next_hop_group";
/// Batches, events and hops deleted by retention, ever.
pub const META_EVICTED_BATCHES: &str = "evicted_batches";
pub const META_EVICTED_EVENTS: &str = "evicted_events";
pub const META_EVICTED_HOPS: &str = "evicted_hops";
/// The rows' budget under a cap on the file ([`super::retention::DiskCap`]), as
/// lowered when the file neared the cap.
pub const META_ROW_BUDGET: &str = "row_budget";

/// The hops of one commit (field 1 repeated, so the prost encodings of single hops
/// are concatenated into it without decoding them).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredHops {
    #[prost(message, repeated, tag = "1")]
    pub hops: Vec<Hop>,
}

/// `flow_id` → `Flow`, its latest version.
pub const FLOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("flows");
