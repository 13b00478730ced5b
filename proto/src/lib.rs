//! Generated gRPC types and services for ktrail.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("ktrail.v1");
}

pub use v1::*;
