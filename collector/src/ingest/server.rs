//! The `Ingest` gRPC service as tonic serves it: what tonic-build generates for it
//! (`ktrail_proto::v1::ingest_server`), with [`IngestCodec`] instead of prost's codec.
//! Same path, same messages on the wire.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::BoxBody;
use tonic::codegen::{empty_body, http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::codec::{IngestCodec, Received};
use super::{AckStream, IngestService};

/// The method's path, as in the generated server.
const STREAM_PATH: &str = "/ktrail.v1.Ingest/Stream";

/// Serves `ktrail.v1.Ingest` with [`IngestService`].
#[derive(Debug, Clone)]
pub struct IngestServer {
    inner: Arc<IngestService>,
    max_decoding_message_size: usize,
}

impl IngestServer {
    pub fn new(inner: IngestService, max_decoding_message_size: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            max_decoding_message_size,
        }
    }
}

struct StreamMethod(Arc<IngestService>);

impl StreamingService<Received> for StreamMethod {
    type Response = ktrail_proto::v1::IngestAck;
    type ResponseStream = AckStream;
    type Future = BoxFuture<Response<AckStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Received>>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.stream(request).await })
    }
}

impl<B> Service<http::Request<B>> for IngestServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(empty_body());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let method = StreamMethod(self.inner.clone());
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(IngestCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

impl NamedService for IngestServer {
    const NAME: &'static str = "ktrail.v1.Ingest";
}
