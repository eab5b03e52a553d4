//! The standard gRPC interop test cases, as a client.
//!
//! Each case is named and shaped after the gRPC interop test descriptions, so
//! that running it against another implementation's interop server
//! (grpc-go's, for one) checks that both sides agree on the wire. A case
//! returns `Ok(())` or a description of what went wrong.

use std::time::Duration;

use crate::client::Channel;
use crate::framing::{Code, Encoding, Status};
use crate::pb::grpc_testing::{
    BoolValue, EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest, TestServiceClient,
    UnimplementedServiceClient,
};
use crate::rpc::Request;

use super::server::{ECHO_INITIAL, ECHO_TRAILING_BIN};

/// The standard cases every gRPC implementation runs, in the usual order.
pub const STANDARD_CASES: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
];

/// The compression cases: they need a server that checks what it is sent
/// (grpc-go's interop server does not), so they run against our own
/// compression peers.
///
/// The `_noprobe` variants (named as grpc-java names them) skip the opening
/// probe: an uncompressed request that says `expect_compressed`, which a
/// server that checks must refuse with INVALID_ARGUMENT. They still send the
/// compressed and uncompressed requests, so they can run against a server
/// that decompresses but does not check (grpc-java's `TestServiceServer`).
pub const COMPRESSION_CASES: &[&str] = &[
    "client_compressed_unary",
    "client_compressed_unary_noprobe",
    "server_compressed_unary",
    "client_compressed_streaming",
    "client_compressed_streaming_noprobe",
    "server_compressed_streaming",
];

/// Every case this client implements: [`STANDARD_CASES`], then
/// [`COMPRESSION_CASES`].
pub fn test_cases() -> impl Iterator<Item = &'static str> {
    STANDARD_CASES.iter().chain(COMPRESSION_CASES).copied()
}

/// What a failed case reports.
pub type CaseResult = Result<(), String>;

/// Runs the case called `name` over `channel`.
pub async fn run_case(channel: &Channel, name: &str) -> CaseResult {
    let client = TestServiceClient::new(channel.clone());
    match name {
        "empty_unary" => empty_unary(&client).await,
        "large_unary" => large_unary(&client).await,
        "client_streaming" => client_streaming(&client).await,
        "server_streaming" => server_streaming(&client).await,
        "ping_pong" => ping_pong(&client).await,
        "empty_stream" => empty_stream(&client).await,
        "custom_metadata" => custom_metadata(&client).await,
        "status_code_and_message" => status_code_and_message(&client).await,
        "special_status_message" => special_status_message(&client).await,
        "unimplemented_method" => unimplemented_method(&client).await,
        "unimplemented_service" => unimplemented_service(channel).await,
        "cancel_after_begin" => cancel_after_begin(&client).await,
        "cancel_after_first_response" => cancel_after_first_response(&client).await,
        "timeout_on_sleeping_server" => timeout_on_sleeping_server(&client).await,
        "client_compressed_unary" => client_compressed_unary(&client, Probe::First).await,
        "client_compressed_unary_noprobe" => client_compressed_unary(&client, Probe::Skip).await,
        "server_compressed_unary" => server_compressed_unary(&client).await,
        "client_compressed_streaming" => client_compressed_streaming(&client, Probe::First).await,
        "client_compressed_streaming_noprobe" => {
            client_compressed_streaming(&client, Probe::Skip).await
        }
        "server_compressed_streaming" => server_compressed_streaming(&client).await,
        other => Err(format!("unknown test case {other:?}")),
    }
}

fn zeros(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; size],
    })
}

fn body_len(payload: Option<&Payload>) -> usize {
    payload.map_or(0, |p| p.body.len())
}

fn check(condition: bool, what: impl FnOnce() -> String) -> CaseResult {
    if condition { Ok(()) } else { Err(what()) }
}

fn rpc_failed(what: &str) -> impl FnOnce(Status) -> String + '_ {
    move |s| format!("{what} failed: {s}")
}

fn expect_code<T>(result: Result<T, Status>, code: Code, what: &str) -> Result<Status, String> {
    match result {
        // The value is not printed: interop payloads are hundreds of KiB.
        Ok(_) => Err(format!("{what}: expected {code:?}, got a success")),
        Err(s) if s.code() == code => Ok(s),
        Err(s) => Err(format!("{what}: expected {code:?}, got {s}")),
    }
}

fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn large_request() -> SimpleRequest {
    SimpleRequest {
        response_size: 314_159,
        payload: zeros(271_828),
        ..Default::default()
    }
}

async fn empty_unary(client: &TestServiceClient) -> CaseResult {
    let response = client
        .empty_call(Empty {})
        .await
        .map_err(rpc_failed("EmptyCall"))?;
    check(*response.get_ref() == Empty {}, || {
        "non-empty response".into()
    })
}

async fn large_unary(client: &TestServiceClient) -> CaseResult {
    let response = client
        .unary_call(large_request())
        .await
        .map_err(rpc_failed("UnaryCall"))?;
    let len = body_len(response.get_ref().payload.as_ref());
    check(len == 314_159, || {
        format!("response payload {len} bytes, want 314159")
    })
}

async fn client_streaming(client: &TestServiceClient) -> CaseResult {
    let mut call = client
        .streaming_input_call(Request::new(()))
        .await
        .map_err(rpc_failed("StreamingInputCall"))?;
    for size in [27_182, 8, 1_828, 45_904] {
        call.send(&StreamingInputCallRequest {
            payload: zeros(size),
            ..Default::default()
        })
        .await
        .map_err(rpc_failed("send"))?;
    }
    let response = call
        .finish()
        .await
        .map_err(rpc_failed("StreamingInputCall"))?;
    let total = response.get_ref().aggregated_payload_size;
    check(total == 74_922, || {
        format!("aggregated size {total}, want 74922")
    })
}

fn output_request(sizes: &[i32]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn server_streaming(client: &TestServiceClient) -> CaseResult {
    let sizes = [31_415, 9, 2_653, 58_979];
    let response = client
        .streaming_output_call(output_request(&sizes))
        .await
        .map_err(rpc_failed("StreamingOutputCall"))?;
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.map_err(rpc_failed("receive"))? {
        got.push(body_len(message.payload.as_ref()));
    }
    check(got == sizes.map(|s| s as usize), || {
        format!("response sizes {got:?}, want {sizes:?}")
    })
}

async fn ping_pong(client: &TestServiceClient) -> CaseResult {
    let mut call = client
        .full_duplex_call(Request::new(()))
        .await
        .map_err(rpc_failed("FullDuplexCall"))?;
    for (response_size, payload_size) in
        [(31_415, 27_182), (9, 8), (2_653, 1_828), (58_979, 45_904)]
    {
        let mut request = output_request(&[response_size]);
        request.payload = zeros(payload_size);
        call.send(&request).await.map_err(rpc_failed("send"))?;
        let response = call
            .message()
            .await
            .map_err(rpc_failed("receive"))?
            .ok_or("the server ended the stream early")?;
        let len = body_len(response.payload.as_ref());
        check(len == response_size as usize, || {
            format!("response {len} bytes, want {response_size}")
        })?;
    }
    call.close_send().map_err(rpc_failed("close"))?;
    let end = call.message().await.map_err(rpc_failed("final status"))?;
    check(end.is_none(), || "unexpected extra response".into())
}

async fn empty_stream(client: &TestServiceClient) -> CaseResult {
    let mut call = client
        .full_duplex_call(Request::new(()))
        .await
        .map_err(rpc_failed("FullDuplexCall"))?;
    call.close_send().map_err(rpc_failed("close"))?;
    let end = call.message().await.map_err(rpc_failed("receive"))?;
    check(end.is_none(), || "expected no response".into())
}

const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];

fn with_echo_metadata<T>(message: T) -> Result<Request<T>, String> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(ECHO_INITIAL, INITIAL_VALUE)
        .map_err(|e| format!("{e:?}"))?;
    request
        .metadata_mut()
        .insert_bin(ECHO_TRAILING_BIN, TRAILING_VALUE)
        .map_err(|e| format!("{e:?}"))?;
    Ok(request)
}

fn check_echo(
    initial: &crate::framing::MetadataMap,
    trailing: Option<&crate::framing::MetadataMap>,
) -> CaseResult {
    let got = initial.get(ECHO_INITIAL);
    check(got == Some(INITIAL_VALUE), || {
        format!("initial metadata {ECHO_INITIAL} = {got:?}, want {INITIAL_VALUE:?}")
    })?;
    let got = trailing.and_then(|t| t.get_bin(ECHO_TRAILING_BIN));
    check(got.as_deref() == Some(TRAILING_VALUE), || {
        format!("trailing metadata {ECHO_TRAILING_BIN} = {got:?}, want {TRAILING_VALUE:?}")
    })
}

async fn custom_metadata(client: &TestServiceClient) -> CaseResult {
    let response = client
        .unary_call(with_echo_metadata(large_request())?)
        .await
        .map_err(rpc_failed("UnaryCall"))?;
    check_echo(response.metadata(), Some(response.trailers()))?;

    let mut call = client
        .full_duplex_call(with_echo_metadata(())?)
        .await
        .map_err(rpc_failed("FullDuplexCall"))?;
    let mut request = output_request(&[314_159]);
    request.payload = zeros(271_828);
    call.send(&request).await.map_err(rpc_failed("send"))?;
    call.close_send().map_err(rpc_failed("close"))?;
    let initial = call.headers().await.map_err(rpc_failed("headers"))?.clone();
    let first = call.message().await.map_err(rpc_failed("receive"))?;
    let len = body_len(first.as_ref().and_then(|m| m.payload.as_ref()));
    check(len == 314_159, || {
        format!("response {len} bytes, want 314159")
    })?;
    let end = call.message().await.map_err(rpc_failed("final status"))?;
    check(end.is_none(), || "unexpected extra response".into())?;
    check_echo(&initial, call.trailers())
}

async fn status_with_message(client: &TestServiceClient, message: &str) -> CaseResult {
    let echo = Some(EchoStatus {
        code: 2,
        message: message.to_owned(),
    });
    let request = SimpleRequest {
        response_status: echo.clone(),
        ..Default::default()
    };
    let status = expect_code(client.unary_call(request).await, Code::Unknown, "UnaryCall")?;
    check(status.message() == message, || {
        format!(
            "UnaryCall status message {:?}, want {message:?}",
            status.message()
        )
    })?;

    let mut call = client
        .full_duplex_call(Request::new(()))
        .await
        .map_err(rpc_failed("FullDuplexCall"))?;
    call.send(&StreamingOutputCallRequest {
        response_status: echo,
        ..Default::default()
    })
    .await
    .map_err(rpc_failed("send"))?;
    call.close_send().map_err(rpc_failed("close"))?;
    let status = expect_code(call.message().await, Code::Unknown, "FullDuplexCall")?;
    check(status.message() == message, || {
        format!(
            "FullDuplexCall status message {:?}, want {message:?}",
            status.message()
        )
    })
}

async fn status_code_and_message(client: &TestServiceClient) -> CaseResult {
    status_with_message(client, "test status message").await
}

async fn special_status_message(client: &TestServiceClient) -> CaseResult {
    let message = "\t\ntest with whitespace\r\nand Unicode BMP \u{263A} and non-BMP \u{1F608}\t\n";
    let request = SimpleRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: message.to_owned(),
        }),
        ..Default::default()
    };
    let status = expect_code(client.unary_call(request).await, Code::Unknown, "UnaryCall")?;
    check(status.message() == message, || {
        format!("status message {:?}, want {message:?}", status.message())
    })
}

async fn unimplemented_method(client: &TestServiceClient) -> CaseResult {
    expect_code(
        client.unimplemented_call(Empty {}).await,
        Code::Unimplemented,
        "UnimplementedCall",
    )
    .map(drop)
}

async fn unimplemented_service(channel: &Channel) -> CaseResult {
    let client = UnimplementedServiceClient::new(channel.clone());
    expect_code(
        client.unimplemented_call(Empty {}).await,
        Code::Unimplemented,
        "UnimplementedService/UnimplementedCall",
    )
    .map(drop)
}

async fn cancel_after_begin(client: &TestServiceClient) -> CaseResult {
    let call = client
        .streaming_input_call(Request::new(()))
        .await
        .map_err(rpc_failed("StreamingInputCall"))?;
    // Cancelling sends RST_STREAM(CANCEL); the call's outcome is CANCELLED
    // on this side whatever the server does.
    call.cancel();
    Ok(())
}

async fn cancel_after_first_response(client: &TestServiceClient) -> CaseResult {
    let mut call = client
        .full_duplex_call(Request::new(()))
        .await
        .map_err(rpc_failed("FullDuplexCall"))?;
    let mut request = output_request(&[31_415]);
    request.payload = zeros(27_182);
    call.send(&request).await.map_err(rpc_failed("send"))?;
    let first = call.message().await.map_err(rpc_failed("receive"))?;
    let len = body_len(first.as_ref().and_then(|m| m.payload.as_ref()));
    check(len == 31_415, || {
        format!("response {len} bytes, want 31415")
    })?;
    let (mut sink, mut responses) = call.split();
    sink.cancel();
    // After the reset the stream must end with an error, never a clean end.
    match responses.message().await {
        Err(_) => Ok(()),
        Ok(_) => Err("the stream went on after cancel".into()),
    }
}

async fn timeout_on_sleeping_server(client: &TestServiceClient) -> CaseResult {
    let mut request = Request::new(());
    request.set_timeout(Duration::from_millis(1));
    let mut call = match client.full_duplex_call(request).await {
        Ok(call) => call,
        Err(s) if s.code() == Code::DeadlineExceeded => return Ok(()),
        Err(s) => return Err(format!("FullDuplexCall failed: {s}")),
    };
    // No response parameters: the server has nothing to send and waits for
    // more requests, so only the deadline can end the call.
    let message = StreamingOutputCallRequest {
        payload: zeros(27_182),
        ..Default::default()
    };
    // The send may already fail: the deadline is 1 ms.
    let _ = call.send(&message).await;
    expect_code(
        call.message().await,
        Code::DeadlineExceeded,
        "FullDuplexCall",
    )
    .map(drop)
}

/// Whether a client-compression case opens with its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Send the uncompressed `expect_compressed` request first and require
    /// INVALID_ARGUMENT.
    First,
    /// Go straight to the compressed request (the `_noprobe` cases).
    Skip,
}

async fn client_compressed_unary(client: &TestServiceClient, probe_first: Probe) -> CaseResult {
    let probe = SimpleRequest {
        expect_compressed: bool_value(true),
        ..large_request()
    };
    // Probe: the server must refuse an uncompressed message that claims to
    // need compression, or the positive check below would prove nothing.
    if probe_first == Probe::First {
        expect_code(
            client.unary_call(probe.clone()).await,
            Code::InvalidArgument,
            "probe",
        )?;
    }

    let mut compressed = Request::new(probe);
    compressed.set_compression(Encoding::Gzip);
    let response = client
        .unary_call(compressed)
        .await
        .map_err(rpc_failed("compressed UnaryCall"))?;
    let len = body_len(response.get_ref().payload.as_ref());
    check(len == 314_159, || {
        format!("response {len} bytes, want 314159")
    })?;

    let plain = SimpleRequest {
        expect_compressed: bool_value(false),
        ..large_request()
    };
    let response = client
        .unary_call(plain)
        .await
        .map_err(rpc_failed("uncompressed UnaryCall"))?;
    let len = body_len(response.get_ref().payload.as_ref());
    check(len == 314_159, || {
        format!("response {len} bytes, want 314159")
    })
}

async fn server_compressed_unary(client: &TestServiceClient) -> CaseResult {
    for compressed in [true, false] {
        let request = SimpleRequest {
            response_compressed: bool_value(compressed),
            ..large_request()
        };
        let response = client
            .unary_call(request)
            .await
            .map_err(rpc_failed("UnaryCall"))?;
        let len = body_len(response.get_ref().payload.as_ref());
        check(len == 314_159, || {
            format!("response (compressed={compressed}) {len} bytes, want 314159")
        })?;
    }
    Ok(())
}

async fn client_compressed_streaming(client: &TestServiceClient, probe_first: Probe) -> CaseResult {
    let first = StreamingInputCallRequest {
        payload: zeros(27_182),
        expect_compressed: bool_value(true),
    };
    // Probe, as for unary.
    if probe_first == Probe::First {
        let mut call = client
            .streaming_input_call(Request::new(()))
            .await
            .map_err(rpc_failed("StreamingInputCall"))?;
        // The server may reset before reading the whole message; the status decides.
        let _ = call.send(&first).await;
        expect_code(call.finish().await, Code::InvalidArgument, "probe")?;
    }

    let mut request = Request::new(());
    request.set_compression(Encoding::Gzip);
    let mut call = client
        .streaming_input_call(request)
        .await
        .map_err(rpc_failed("StreamingInputCall"))?;
    call.send_with(&first, true)
        .await
        .map_err(rpc_failed("send"))?;
    call.send_with(
        &StreamingInputCallRequest {
            payload: zeros(45_904),
            expect_compressed: bool_value(false),
        },
        false,
    )
    .await
    .map_err(rpc_failed("send"))?;
    let response = call
        .finish()
        .await
        .map_err(rpc_failed("StreamingInputCall"))?;
    let total = response.get_ref().aggregated_payload_size;
    check(total == 73_086, || {
        format!("aggregated size {total}, want 73086")
    })
}

async fn server_compressed_streaming(client: &TestServiceClient) -> CaseResult {
    let request = StreamingOutputCallRequest {
        response_parameters: vec![
            ResponseParameters {
                size: 31_415,
                compressed: bool_value(true),
                ..Default::default()
            },
            ResponseParameters {
                size: 92_653,
                compressed: bool_value(false),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let response = client
        .streaming_output_call(request)
        .await
        .map_err(rpc_failed("StreamingOutputCall"))?;
    let mut stream = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.map_err(rpc_failed("receive"))? {
        got.push(body_len(message.payload.as_ref()));
    }
    check(got == [31_415, 92_653], || {
        format!("response sizes {got:?}, want [31415, 92653]")
    })
}
