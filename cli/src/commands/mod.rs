//! The subcommands.

pub mod flows;
pub mod show;
pub mod status;
pub mod trace;
pub mod watch;
