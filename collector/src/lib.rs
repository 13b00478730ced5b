//! ktrail collector: receives agents' event streams (`Ingest`), stores them
//! (redb), pairs both ends of each connection into hops as events arrive, and
//! serves hops, events and agent status live (`Query`).
//!
//! Start one with [`Collector::start`]; the pure hop logic is in [`hops`].

pub mod agents;
pub mod clock;
pub mod error;
pub mod export;
pub mod fast_hash;
pub mod flows;
pub mod hops;
pub mod ingest;
pub mod live;
pub mod metadata;
pub mod node_clocks;
pub mod query;
pub mod replay;
pub mod scheduling;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod web;

pub use error::{CollectorError, StoreError};
pub use hops::{HopAssembler, HopConfig};
pub use server::{Collector, CollectorConfig};
pub use store::Store;
