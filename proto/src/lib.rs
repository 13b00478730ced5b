//! Generated gRPC types and services for ktrail.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("ktrail.v1");
}

pub use v1::*;

pub mod client_tls;
pub mod field;

impl v1::Socket {
    /// A connected IPv4/IPv6 socket as an agent reports it: local and remote
    /// (address, port), no inodes.
    pub fn inet(local: (&str, u32), remote: (&str, u32)) -> Self {
        Self {
            kind: v1::FdKind::Socket as i32,
            family: "inet".into(),
            local_addr: local.0.into(),
            local_port: local.1,
            remote_addr: remote.0.into(),
            remote_port: remote.1,
            ..Self::default()
        }
    }
}
