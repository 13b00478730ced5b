//! The subcommands.

pub mod status;
pub mod trace;
pub mod watch;
