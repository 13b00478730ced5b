//! Errors of the collector library.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Opening, reading or writing the redb store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {error}")]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("data directory {path} exists but is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("store {path} is already open in another process (is another ktrail-collector using this --data-dir?)")]
    InUse { path: PathBuf },
    #[error("cannot open store {path}: {error}")]
    Open {
        path: PathBuf,
        error: Box<redb::DatabaseError>,
    },
    /// A transaction, table, I/O or commit failure (boxed: redb's errors are large).
    #[error("store: {0}")]
    Redb(Box<redb::Error>),
    #[error("corrupt record in table {table}: {error}")]
    Decode {
        table: &'static str,
        error: prost::DecodeError,
    },
    #[error("store task failed: {0}")]
    Task(String),
}

/// Starting or running the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("Kubernetes metadata: {0}")]
    Metadata(#[from] crate::metadata::MetadataError),
    // Transparent: its message names the flag and file, and a "TLS: {0}"
    // wrapper printed its cause twice in the error chain.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    #[error("OTLP export: {0}")]
    Export(#[from] crate::export::ExportError),
    #[error("background task {task} failed: {reason}")]
    Task { task: &'static str, reason: String },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Redb(Box::new(e.into()))
            }
        }
    )*};
}

from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
