//! Layouts shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Every struct is `#[repr(C)]` with explicit padding so both sides agree byte for
//! byte; type tags are plain integers decoded with `TryFrom` on the user side.
#![no_std]

pub mod config;
pub mod event;
pub mod maps;
pub mod tracepoints;

pub use config::*;
pub use event::*;
