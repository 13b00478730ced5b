//! Hop assembly: pairing both ends of each connection, across nodes, into
//! request/response hops as events stream in.
//!
//! [`HopAssembler`] is pure logic (no clock, no I/O); [`task`] runs it in the
//! collector, fed by ingest and ticked every 50 ms.

mod assembler;
mod build;
mod classify;
mod connection;
mod decode;
mod emitted;
mod endpoint;
mod exchange;
mod ids;
pub use ids::IdGen;
mod roles;
mod run;
mod side;
pub(crate) mod stream;
mod summary;
pub mod task;
mod view_cache;

#[cfg(test)]
mod tests;

pub use assembler::{AssemblerStats, HopAssembler};
pub use classify::{classify, is_relevant, SyscallClass};
pub use endpoint::{normalize_addr, socket_view, ConnectionKey, Endpoint, LocalId, SocketView};
pub use run::CAPTURE_CAP;
pub use summary::summarize;

const MS: u64 = 1_000_000;

/// Timing and bounds of hop assembly (nanoseconds of collector clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopConfig {
    /// A response is over after this long without more of it.
    pub quiet_ns: u64,
    /// A request is given up on (emitted without response) after this long.
    pub no_response_ns: u64,
    /// A complete exchange waits this long for the other side to show up.
    pub missing_side_wait_ns: u64,
    /// A closed connection is kept this long for late events of its peer.
    pub closed_linger_ns: u64,
    /// Connections without events for this long are evicted.
    pub idle_timeout_ns: u64,
    /// How often idle connections are looked for.
    pub sweep_interval_ns: u64,
    /// Hard cap on connections held; the least recently active go first.
    pub max_connections: usize,
}

impl Default for HopConfig {
    fn default() -> Self {
        Self {
            quiet_ns: 100 * MS,
            no_response_ns: 10_000 * MS,
            missing_side_wait_ns: 500 * MS,
            closed_linger_ns: 2_000 * MS,
            idle_timeout_ns: 300_000 * MS,
            sweep_interval_ns: 1_000 * MS,
            max_connections: 100_000,
        }
    }
}
