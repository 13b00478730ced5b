//! Field numbers from ktrail.proto for the code that reads or writes a message's
//! records by hand instead of through prost's structs: the agent's batch encoder
//! (agent/src/wire.rs) and the collector's batch decoder (collector/src/ingest/codec.rs).
//! Both check their bytes against prost's own encoding in their tests, so a change in
//! the .proto that is not made here fails there.

/// `Event.seq`.
pub const EVENT_SEQ: u32 = 1;
/// `EventBatch.events`.
pub const BATCH_EVENTS: u32 = 1;
/// `EventBatch.processes`.
pub const BATCH_PROCESSES: u32 = 2;
/// `AgentMessage.batch` (in the `body` oneof).
pub const MESSAGE_BATCH: u32 = 2;
