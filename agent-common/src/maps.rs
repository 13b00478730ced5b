//! Map names, so the agent looks maps up by the same names the kernel side declares.

pub const EVENTS: &str = "EVENTS";
pub const TRACKED: &str = "TRACKED";
pub const TARGETS: &str = "TARGETS";
pub const CONFIG: &str = "CONFIG";
pub const DROPS: &str = "DROPS";
pub const INFLIGHT: &str = "INFLIGHT";
pub const SCRATCH: &str = "SCRATCH";
pub const SOCK_OWNERS: &str = "SOCK_OWNERS";
pub const GO_TLS_CALLS: &str = "GO_TLS_CALLS";
pub const MAX_GO_TLS_CALLS: u32 = 16_384;

/// Capacity of the ring buffer shared by all CPUs (bytes, a power of two).
pub const RING_BYTES: u32 = 16 * 1024 * 1024;
pub const MAX_TRACKED: u32 = 65_536;
pub const MAX_INFLIGHT: u32 = 16_384;
pub const MAX_SOCK_OWNERS: u32 = 65_536;
/// Slots of the `TARGETS` array: process name patterns matched at exec.
pub const MAX_TARGETS: u32 = 32;

/// Indexes of the per-CPU `DROPS` counters.
pub const DROP_RINGBUF_FULL: u32 = 0;
pub const DROP_INFLIGHT_FULL: u32 = 1;
pub const DROP_TRACKED_FULL: u32 = 2;
pub const DROP_READ_FAILED: u32 = 3;
pub const DROP_SLOTS: u32 = 4;
