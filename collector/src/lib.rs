//! ktrail collector library.
pub mod hops;
