//! `conformance-client`: makes the calls the Connect conformance runner
//! describes, with our own [`Channel`], and reports what it saw.
//!
//! ```text
//!  runner ──stdin──▶ ClientCompatRequest  (test name, server address, TLS cert,
//!                                          method, stream type, headers, requests,
//!                                          timeout, delays, when to cancel)
//!         ◀─stdout── ClientCompatResponse (headers, payloads, error, trailers,
//!                                          requests left unsent)
//! ```
//!
//! Calls run concurrently, up to [`MAX_CONCURRENT_CALLS`] at once (the
//! runner's cases sleep a lot: delays, timeouts); each result is written
//! whole, under a lock, as its call ends, in whatever order that is — the
//! runner matches them by test name.
//!
//! Every shape of call is driven through the two halves of a streaming call
//! ([`RequestSink`], [`ResponseStream`]): that is what lets the program
//! cancel at the moments the suite names (before half-close, some time
//! after it, after N responses) while still reading the outcome, and see the
//! response headers of a call that then fails. Unary and server-streaming
//! calls are the same on the wire — one request, then half-close.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::io::AsyncWrite;
use tokio::sync::Mutex;

use super::{append_headers, headers_from_metadata, type_name};
use crate::client::{Channel, RequestSink, ResponseStream};
use crate::framing::{Encoding, Status};
use crate::pb::connectrpc_conformance_v1 as pb;
use crate::pb::connectrpc_conformance_v1::client_compat_request::cancel::CancelTiming;
use crate::pb::google_rpc;
use crate::rpc::Request;

/// The one service the suite's clients call.
const SERVICE: &str = "connectrpc.conformance.v1.ConformanceService";

/// How long a call may take to connect: the runner's servers are local.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls in flight at once. The runner sends every case at once; most of
/// them sleep (delays, deadlines), so running them together is what makes
/// the suite fast — but each also dials its own connection, and hundreds of
/// TLS handshakes at once can keep a two-core machine busy long enough to
/// make a "cancel 5 ms after half-close" fire after a 200 ms server delay.
pub const MAX_CONCURRENT_CALLS: usize = 24;

/// The outcome of one call, as the runner wants it.
type Outcome = Result<pb::ClientResponseResult, String>;

/// The whole program: reads requests from `input` until EOF, runs each
/// call in its own task, writes each result to `output` when done, and
/// returns when every call has ended.
pub async fn run<W>(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
    output: W,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let output = Arc::new(Mutex::new(output));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CALLS));
    let mut calls = tokio::task::JoinSet::new();
    while let Some(request) = super::read_message::<pb::ClientCompatRequest>(input).await? {
        let output = Arc::clone(&output);
        let slots = Arc::clone(&slots);
        calls.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _slot = slots.acquire_owned().await;
            let test_name = request.test_name.clone();
            let result = match call(request).await {
                Ok(response) => pb::client_compat_response::Result::Response(response),
                Err(message) => {
                    pb::client_compat_response::Result::Error(pb::ClientErrorResult { message })
                }
            };
            let response = pb::ClientCompatResponse {
                test_name,
                result: Some(result),
            };
            let mut output = output.lock().await;
            super::write_message(&mut *output, &response).await
        });
    }
    while let Some(done) = calls.join_next().await {
        done.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// The suite's `Error` for a status: code, message, and the typed details
/// of a `google.rpc.Status` in `grpc-status-details-bin` (if any, and if
/// it decodes).
fn error_from_status(status: &Status) -> pb::Error {
    let details = if status.details().is_empty() {
        Vec::new()
    } else {
        google_rpc::Status::decode(status.details().clone())
            .map(|rich| rich.details)
            .unwrap_or_default()
    };
    pb::Error {
        code: status.code() as i32,
        message: (!status.message().is_empty()).then(|| status.message().to_owned()),
        details,
    }
}

/// Unpacks the requests of a call, checking their type.
fn requests<M: prost::Message + Default>(
    request: &pb::ClientCompatRequest,
    name: &str,
) -> Result<Vec<M>, String> {
    request
        .request_messages
        .iter()
        .map(|any| {
            let found = type_name(any);
            if found != format!("connectrpc.conformance.v1.{name}") {
                return Err(format!("request message is a {found}, expected {name}"));
            }
            M::decode(any.value.as_slice()).map_err(|e| format!("bad {name}: {e}"))
        })
        .collect()
}

/// A channel to the server the request names, as it asks (TLS, limits).
fn channel(request: &pb::ClientCompatRequest) -> Result<Channel, String> {
    if request.protocol != pb::Protocol::Grpc as i32 {
        return Err(format!(
            "protocol {:?} is not supported: this client speaks gRPC",
            pb::Protocol::try_from(request.protocol).unwrap_or(pb::Protocol::Unspecified)
        ));
    }
    if request.codec != pb::Codec::Proto as i32 {
        return Err("only the proto codec is supported".to_owned());
    }
    let address = if request.host.contains(':') {
        format!("[{}]:{}", request.host, request.port)
    } else {
        format!("{}:{}", request.host, request.port)
    };
    let mut builder = Channel::builder(address);
    builder.connect_timeout(CONNECT_TIMEOUT);
    if request.message_receive_limit > 0 {
        builder.max_recv_message_size(request.message_receive_limit as usize);
    }
    if !request.server_tls_cert.is_empty() {
        if request.client_tls_creds.is_some() {
            return Err("TLS client certificates are not supported".to_owned());
        }
        let config = crate::tls::client_config_from_pem(&request.server_tls_cert)
            .map_err(|e| format!("server certificate: {e}"))?;
        builder.tls(config);
    }
    Ok(builder.connect_lazy())
}

/// Makes one call.
async fn call(request: pb::ClientCompatRequest) -> Outcome {
    let service = request.service.as_deref().unwrap_or(SERVICE);
    if service != SERVICE {
        return Err(format!("unknown service {service}"));
    }
    let method = request.method.clone().unwrap_or_default();
    let channel = channel(&request)?;
    let stream_type = pb::StreamType::try_from(request.stream_type).unwrap_or_default();
    match method.as_str() {
        "Unary" => {
            let messages = requests::<pb::UnaryRequest>(&request, "UnaryRequest")?;
            drive(
                &channel,
                &request,
                &method,
                messages,
                Shape::Unary,
                |r: pb::UnaryResponse| r.payload,
            )
            .await
        }
        "IdempotentUnary" => {
            let messages =
                requests::<pb::IdempotentUnaryRequest>(&request, "IdempotentUnaryRequest")?;
            drive(
                &channel,
                &request,
                &method,
                messages,
                Shape::Unary,
                |r: pb::IdempotentUnaryResponse| r.payload,
            )
            .await
        }
        "Unimplemented" => {
            let messages = requests::<pb::UnimplementedRequest>(&request, "UnimplementedRequest")?;
            drive(
                &channel,
                &request,
                &method,
                messages,
                Shape::Unary,
                |_: pb::UnimplementedResponse| None,
            )
            .await
        }
        "ServerStream" => {
            let messages = requests::<pb::ServerStreamRequest>(&request, "ServerStreamRequest")?;
            drive(
                &channel,
                &request,
                &method,
                messages,
                Shape::Unary,
                |r: pb::ServerStreamResponse| r.payload,
            )
            .await
        }
        "ClientStream" => {
            let messages = requests::<pb::ClientStreamRequest>(&request, "ClientStreamRequest")?;
            drive(
                &channel,
                &request,
                &method,
                messages,
                Shape::ClientStream,
                |r: pb::ClientStreamResponse| r.payload,
            )
            .await
        }
        "BidiStream" => {
            let messages = requests::<pb::BidiStreamRequest>(&request, "BidiStreamRequest")?;
            let shape = if stream_type == pb::StreamType::FullDuplexBidiStream {
                Shape::FullDuplex
            } else {
                Shape::ClientStream
            };
            drive(
                &channel,
                &request,
                &method,
                messages,
                shape,
                |r: pb::BidiStreamResponse| r.payload,
            )
            .await
        }
        other => Err(format!("unknown method {other}")),
    }
}

/// How requests and responses interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One request, sent at once, then half-close (unary, server stream).
    Unary,
    /// Every request (each after the request delay), then half-close, then
    /// the responses (client stream, half-duplex bidi).
    ClientStream,
    /// One response read after each request sent (full-duplex bidi).
    FullDuplex,
}

/// What has been observed of a call so far.
struct Observed {
    result: pb::ClientResponseResult,
    /// Cancel once this many responses arrived.
    cancel_after: Option<usize>,
    cancelled: bool,
    /// The method returns exactly one response (unary, client stream).
    single: bool,
}

impl Observed {
    /// Records the call's failure (and the trailers its status carries).
    fn fail(&mut self, status: &Status) {
        self.result.error = Some(error_from_status(status));
        self.result.response_trailers = headers_from_metadata(status.metadata());
    }
}

/// Runs one call of any shape and records everything observed.
async fn drive<In, Out>(
    channel: &Channel,
    request: &pb::ClientCompatRequest,
    method: &str,
    messages: Vec<In>,
    shape: Shape,
    payload: impl Fn(Out) -> Option<pb::ConformancePayload>,
) -> Outcome
where
    In: prost::Message + 'static,
    Out: prost::Message + Default + 'static,
{
    let path = format!("/{SERVICE}/{method}");
    let mut opening = Request::new(());
    let skipped = append_headers(opening.metadata_mut(), &request.request_headers);
    if !skipped.is_empty() {
        return Err(skipped.join("; "));
    }
    if let Some(ms) = request.timeout_ms {
        opening.set_timeout(Duration::from_millis(u64::from(ms)));
    }
    if request.compression == pb::Compression::Gzip as i32 {
        opening.set_compression(Encoding::Gzip);
    }
    let timing = request.cancel.as_ref().and_then(|c| c.cancel_timing);
    let mut observed = Observed {
        result: pb::ClientResponseResult::default(),
        cancel_after: match &timing {
            Some(CancelTiming::AfterNumResponses(n)) => Some(*n as usize),
            _ => None,
        },
        cancelled: false,
        single: matches!(
            method,
            "Unary" | "IdempotentUnary" | "Unimplemented" | "ClientStream"
        ),
    };
    let call = match channel.bidi_streaming::<In, Out>(&path, opening).await {
        Ok(call) => call,
        Err(status) => {
            observed.fail(&status);
            return Ok(observed.result);
        }
    };
    let (mut tx, mut rx) = call.split();
    let request_delay = Duration::from_millis(u64::from(request.request_delay_ms));
    let total = messages.len();

    // The request side. In full duplex a response is read after each send.
    let mut ended = false;
    for (i, message) in messages.iter().enumerate() {
        if shape != Shape::Unary && !request_delay.is_zero() {
            tokio::time::sleep(request_delay).await;
        }
        if let Err(status) = tx.send(message).await {
            observed.result.num_unsent_requests = i32::try_from(total - i).unwrap_or(i32::MAX);
            // The send failed because the call ended: the response side
            // has the status worth reporting, if it has one.
            read_rest(&mut rx, &mut tx, &mut observed, &payload).await;
            if observed.result.error.is_none() {
                observed.fail(&status);
            }
            return Ok(observed.result);
        }
        if shape == Shape::FullDuplex && !ended {
            ended = read_one(&mut rx, &mut tx, &mut observed, &payload).await;
            if ended && observed.result.error.is_some() {
                observed.result.num_unsent_requests =
                    i32::try_from(total - i - 1).unwrap_or(i32::MAX);
                return Ok(observed.result);
            }
        }
    }
    if matches!(timing, Some(CancelTiming::BeforeCloseSend(_))) {
        cancel(&mut tx, &mut observed);
    }
    if let Err(status) = tx.close() {
        observed.fail(&status);
        return Ok(observed.result);
    }
    if let Some(CancelTiming::AfterCloseSendMs(ms)) = timing {
        // Reading goes on while the timer runs: the cancellation must reach
        // a call in progress, and its effect be seen by the reader. (The
        // reader is never dropped half-way: it would lose its place.)
        let wait = Duration::from_millis(u64::from(ms));
        let cancel_later = async {
            tokio::time::sleep(wait).await;
            tx.cancel();
        };
        let mut no_cancel = NoCancel;
        {
            let reading = read_rest(&mut rx, &mut no_cancel, &mut observed, &payload);
            tokio::pin!(reading);
            tokio::select! {
                () = &mut reading => {}
                () = cancel_later => reading.await,
            }
        }
        return Ok(observed.result);
    }
    if !ended {
        read_rest(&mut rx, &mut tx, &mut observed, &payload).await;
    }
    Ok(observed.result)
}

/// Where [`cancel`] can reach the request half, if it still can.
trait CancelHandle {
    fn cancel_call(&mut self);
}

impl<In: prost::Message> CancelHandle for RequestSink<In> {
    fn cancel_call(&mut self) {
        self.cancel();
    }
}

/// No request half at hand (the caller cancels it instead).
struct NoCancel;

impl CancelHandle for NoCancel {
    fn cancel_call(&mut self) {}
}

fn cancel(tx: &mut impl CancelHandle, observed: &mut Observed) {
    if !observed.cancelled {
        observed.cancelled = true;
        tx.cancel_call();
    }
}

/// Reads the response headers if not yet recorded. Returns `false` (with the
/// failure recorded) if the call failed before them.
async fn headers<Out: prost::Message + Default>(
    rx: &mut ResponseStream<Out>,
    observed: &mut Observed,
) -> bool {
    match rx.headers().await {
        Ok(headers) => {
            if observed.result.response_headers.is_empty() {
                observed.result.response_headers = headers_from_metadata(headers);
            }
            true
        }
        Err(status) => {
            observed.fail(&status);
            false
        }
    }
}

/// Reads one response message. Returns whether the call has ended (cleanly
/// or not; the outcome is recorded).
async fn read_one<Out: prost::Message + Default>(
    rx: &mut ResponseStream<Out>,
    tx: &mut impl CancelHandle,
    observed: &mut Observed,
    payload: &impl Fn(Out) -> Option<pb::ConformancePayload>,
) -> bool {
    if !headers(rx, observed).await {
        return true;
    }
    match rx.message().await {
        Ok(Some(message)) => {
            observed
                .result
                .payloads
                .push(payload(message).unwrap_or_default());
            if observed.cancel_after == Some(observed.result.payloads.len()) {
                cancel(tx, observed);
            }
            false
        }
        Ok(None) => {
            observed.result.response_trailers =
                rx.trailers().map(headers_from_metadata).unwrap_or_default();
            true
        }
        Err(status) => {
            observed.fail(&status);
            true
        }
    }
}

/// Reads responses to the end of the call.
async fn read_rest<Out: prost::Message + Default>(
    rx: &mut ResponseStream<Out>,
    tx: &mut impl CancelHandle,
    observed: &mut Observed,
    payload: &impl Fn(Out) -> Option<pb::ConformancePayload>,
) {
    if observed.cancel_after == Some(0) {
        cancel(tx, observed);
    }
    if !observed.single {
        while !read_one(rx, tx, observed, payload).await {}
        return;
    }
    // A method with exactly one response: the client layer checks the
    // count, as it does for its own unary calls.
    if !headers(rx, observed).await {
        return;
    }
    match rx.single().await {
        Ok(message) => {
            observed
                .result
                .payloads
                .push(payload(message).unwrap_or_default());
            observed.result.response_trailers =
                rx.trailers().map(headers_from_metadata).unwrap_or_default();
        }
        Err(status) => observed.fail(&status),
    }
}
