//! The hasher of the maps looked up once or more per event (sockets' views,
//! connections, hops waiting for their flow). std's SipHash was 3.6 % of a
//! saturated collector's samples on these keys (a few short strings and
//! integers); foldhash hashes them in a fraction of that. Its seed is random per
//! map and process, so colliding keys cannot be computed in advance; what SipHash
//! adds against an attacker who learns the seed from timings is not worth that much of
//! the ingest path, whose keys come from the cluster's own agents.

/// `HashMap` with the fast hasher (build one with `FastMap::default()`).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// `HashSet` with the fast hasher.
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
