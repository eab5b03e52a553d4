//! `grpc.testing.TestService`, implemented the way the gRPC interop test
//! descriptions ask a server to behave.
//!
//! Besides answering with payloads of the requested sizes, an interop server
//! must:
//!
//! * echo the `x-grpc-test-echo-initial` request header in its response
//!   headers, and `x-grpc-test-echo-trailing-bin` in its trailers, byte for
//!   byte;
//! * answer with `response_status` when one is given (the
//!   `status_code_and_message` and `special_status_message` cases);
//! * compress a response when `response_compressed` / a response parameter's
//!   `compressed` asks for it, and refuse with `INVALID_ARGUMENT` a request
//!   that `expect_compressed` says should have been compressed but was not;
//! * sleep `interval_us` before each streamed response (the deadline and
//!   cancellation cases rely on the server being slow).

use std::time::Duration;

use crate::framing::{Code, Encoding, MetadataMap, Status};
use crate::pb::grpc_testing::{
    EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest, SimpleResponse,
    StreamingInputCallRequest, StreamingInputCallResponse, StreamingOutputCallRequest,
    StreamingOutputCallResponse, TestService,
};
use crate::rpc::{Request, Response, Streaming};
use crate::server::ResponseSink;

/// The request header echoed in the response headers.
pub const ECHO_INITIAL: &str = "x-grpc-test-echo-initial";
/// The request header echoed (as bytes) in the trailers.
pub const ECHO_TRAILING_BIN: &str = "x-grpc-test-echo-trailing-bin";

/// Largest payload the server agrees to build for one response (the interop
/// cases need at most a few hundred KiB).
const MAX_PAYLOAD: i32 = 16 * 1024 * 1024;

/// The interop test service.
#[derive(Debug, Default, Clone)]
pub struct InteropService;

/// A payload of `size` zero bytes.
fn payload(size: i32) -> Result<Payload, Status> {
    if !(0..=MAX_PAYLOAD).contains(&size) {
        return Err(Status::invalid_argument(format!(
            "response size {size} out of range 0..={MAX_PAYLOAD}"
        )));
    }
    // `size` was just checked to be non-negative.
    let len = usize::try_from(size).unwrap_or_default();
    Ok(Payload {
        r#type: 0,
        body: vec![0u8; len],
    })
}

/// The status asked for with `response_status`, if any.
fn echo_status(status: Option<&EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::new(Code::from_i32(s.code), s.message.clone())),
        _ => Ok(()),
    }
}

/// The echo headers of the interop cases: (initial, trailing).
fn echo_metadata(request: &MetadataMap) -> (MetadataMap, MetadataMap) {
    let mut initial = MetadataMap::new();
    let mut trailing = MetadataMap::new();
    if let Some(value) = request.get(ECHO_INITIAL) {
        if let Err(e) = initial.insert(ECHO_INITIAL, value) {
            tracing::debug!(error = ?e, "echo-initial not echoed");
        }
    }
    if let Some(value) = request.get_bin(ECHO_TRAILING_BIN) {
        if let Err(e) = trailing.insert_bin(ECHO_TRAILING_BIN, &value) {
            tracing::debug!(error = ?e, "echo-trailing-bin not echoed");
        }
    }
    (initial, trailing)
}

/// Refuses an uncompressed message that should have arrived compressed.
fn check_compressed(expected: bool, was_compressed: bool) -> Result<(), Status> {
    if expected && !was_compressed {
        return Err(Status::invalid_argument(
            "expected a compressed request message, got an uncompressed one",
        ));
    }
    Ok(())
}

/// Sends the responses described by `parameters`, pausing as asked.
async fn send_responses(
    sink: &mut ResponseSink<StreamingOutputCallResponse>,
    parameters: &[ResponseParameters],
) -> Result<(), Status> {
    for p in parameters {
        if p.interval_us > 0 {
            tokio::time::sleep(Duration::from_micros(p.interval_us.unsigned_abs().into())).await;
        }
        let response = StreamingOutputCallResponse {
            payload: Some(payload(p.size)?),
        };
        let compress = p.compressed.as_ref().is_some_and(|c| c.value);
        sink.send_with(&response, compress).await?;
    }
    Ok(())
}

impl TestService for InteropService {
    async fn empty_call(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        let mut response = Response::new(Empty {});
        *response.metadata_mut() = initial;
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        let was_compressed = request.message_compressed();
        let req = request.into_inner();
        check_compressed(
            req.expect_compressed.as_ref().is_some_and(|c| c.value),
            was_compressed,
        )?;
        if let Err(status) = echo_status(req.response_status.as_ref()) {
            return Err(status.with_metadata(trailing));
        }
        let mut response = Response::new(SimpleResponse {
            payload: Some(payload(req.response_size)?),
            ..Default::default()
        });
        if req.response_compressed.as_ref().is_some_and(|c| c.value) {
            response.set_compression(Encoding::Gzip);
        }
        *response.metadata_mut() = initial;
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn cacheable_unary_call(
        &self,
        request: Request<SimpleRequest>,
    ) -> Result<Response<SimpleResponse>, Status> {
        self.unary_call(request).await
    }

    async fn streaming_output_call(
        &self,
        request: Request<StreamingOutputCallRequest>,
        mut sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        sink.set_header_metadata(initial);
        sink.set_trailer_metadata(trailing);
        let req = request.into_inner();
        let wants_compression = req
            .response_parameters
            .iter()
            .any(|p| p.compressed.as_ref().is_some_and(|c| c.value));
        if wants_compression {
            sink.set_compression(Encoding::Gzip);
        }
        send_responses(&mut sink, &req.response_parameters).await?;
        echo_status(req.response_status.as_ref())
    }

    async fn streaming_input_call(
        &self,
        request: Request<Streaming<StreamingInputCallRequest>>,
    ) -> Result<Response<StreamingInputCallResponse>, Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        let (_, mut stream) = request.into_parts();
        let mut total: i64 = 0;
        while let Some(message) = stream.message().await? {
            check_compressed(
                message.expect_compressed.as_ref().is_some_and(|c| c.value),
                stream.last_message_compressed(),
            )?;
            let size = message.payload.map_or(0, |p| p.body.len());
            total = total.saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let aggregated_payload_size = i32::try_from(total)
            .map_err(|_| Status::out_of_range("aggregated payload size over 2 GiB"))?;
        let mut response = Response::new(StreamingInputCallResponse {
            aggregated_payload_size,
        });
        *response.metadata_mut() = initial;
        *response.trailers_mut() = trailing;
        Ok(response)
    }

    async fn full_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
        mut sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        sink.set_header_metadata(initial);
        sink.set_trailer_metadata(trailing);
        let (_, mut stream) = request.into_parts();
        while let Some(req) = stream.message().await? {
            echo_status(req.response_status.as_ref())?;
            if req
                .response_parameters
                .iter()
                .any(|p| p.compressed.as_ref().is_some_and(|c| c.value))
            {
                sink.set_compression(Encoding::Gzip);
            }
            send_responses(&mut sink, &req.response_parameters).await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        request: Request<Streaming<StreamingOutputCallRequest>>,
        mut sink: ResponseSink<StreamingOutputCallResponse>,
    ) -> Result<(), Status> {
        let (initial, trailing) = echo_metadata(request.metadata());
        sink.set_header_metadata(initial);
        sink.set_trailer_metadata(trailing);
        let (_, mut stream) = request.into_parts();
        let mut requests = Vec::new();
        while let Some(req) = stream.message().await? {
            requests.push(req);
        }
        for req in &requests {
            echo_status(req.response_status.as_ref())?;
            send_responses(&mut sink, &req.response_parameters).await?;
        }
        Ok(())
    }

    async fn unimplemented_call(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Empty>, Status> {
        Err(Status::unimplemented(
            "UnimplementedCall is not implemented, on purpose",
        ))
    }
}
