//! Finding `crypto/tls.(*Conn).Write` and `(*Conn).Read` in stripped Go binaries, so
//! uprobes can read TLS plaintext.
//!
//! Released Kubernetes, etcd and containerd binaries are stripped of ELF symbols but
//! keep Go's own function table (`.gopclntab`), which is what `pclntab.rs` reads. Go's
//! stacks move, so return probes (uretprobes) are unsafe on Go; `returns.rs` finds each
//! function's `RET` instructions instead, to probe them directly.

pub mod attach;
pub mod binary;
pub mod buildinfo;
pub mod pclntab;
pub mod returns;
