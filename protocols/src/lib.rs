//! ktrail-protocols: decoders for what the agent captures on sockets and TLS
//! plaintext — HTTP/1.1, HTTP/2 with HPACK, gRPC, Kubernetes objects (JSON
//! and protobuf), etcd v3 and CRI — turning byte chunks into [`Message`]s.
//!
//! Pure Rust, no I/O. On any input the decoders never panic and their memory
//! stays bounded: every length read from the input is checked, and every
//! buffer, table and list has a hard cap. Credentials are redacted in the
//! output by default; the output says what was redacted, never the value.
//!
//! ```
//! use ktrail_protocols::{ConnectionDecoder, Direction};
//!
//! let mut conn = ConnectionDecoder::new();
//! let req = b"GET /api/v1/namespaces/default/pods/x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc\r\n\r\n";
//! let msgs = conn.feed(Direction::ClientToServer, req, req.len() as u64, 1);
//! assert_eq!(msgs[0].summary(), "GET /api/v1/namespaces/default/pods/x");
//! assert_eq!(msgs[0].redacted, vec!["header authorization".to_string()]);
//! let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
//! let msgs = conn.feed(Direction::ServerToClient, resp, resp.len() as u64, 2);
//! assert_eq!(msgs[0].summary(), "GET /api/v1/namespaces/default/pods/x → 404");
//! ```

mod assemble;
pub mod capture;
pub mod conn;
pub mod cri;
pub mod etcd;
pub mod grpc;
pub mod h2;
pub mod hpack;
pub mod http1;
mod huffman;
pub mod infer;
pub mod json;
pub mod k8s;
pub mod message;
pub mod pb;
pub mod raw_redact;
pub mod redact;
pub mod resource;
pub mod ttrpc;
mod util;

pub use assemble::Config;
pub use conn::ConnectionDecoder;
pub use message::{
    CriOp, Direction, EtcdCompare, EtcdEvent, EtcdKeyOp, EtcdOp, Header, HeaderValue, Message,
    ObjectRef, Part, Protocol,
};
pub use resource::{parse_api_path, parse_etcd_key, ResourceRef};
