//! `conformance-server`: `connectrpc.conformance.v1.ConformanceService` on
//! our own server (gRPC) and gateway (gRPC-Web), started the way the Connect
//! conformance runner asks.
//!
//! ```text
//!  runner ──stdin──▶ ServerCompatRequest {protocol, http_version, use_tls, limit, creds}
//!         ◀─stdout── ServerCompatResponse {host, port, pem_cert}
//!
//!  PROTOCOL_GRPC:      reference client ──h2c / h2+TLS──▶ server::Server
//!  PROTOCOL_GRPC_WEB:  reference client ──h1 / h2c / TLS──▶ web::Gateway ──in process──▶ server::Server
//! ```
//!
//! Every call is answered from its *response definition* (headers,
//! trailers, data, delay, error), and echoes what the server observed: the
//! request headers, the deadline, the requests packed in `Any`. When the
//! call fails and no payload can carry that echo, it travels in the error's
//! details — a `google.rpc.Status` in `grpc-status-details-bin`, the one
//! place gRPC has for typed error information.
//!
//! The service is written against the same generated trait any application
//! of ours would implement; nothing here reaches below the server layer.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;

use super::{append_headers, headers_from_metadata, pack};
use crate::framing::{Encoding, MetadataMap, Status};
use crate::pb::connectrpc_conformance_v1 as pb;
use crate::pb::connectrpc_conformance_v1::conformance_payload::RequestInfo;
use crate::pb::google_rpc;
use crate::rpc::{Request, Response, Streaming};
use crate::server::ResponseSink;

/// How long in-flight calls get once the runner sends SIGTERM. The runner
/// has collected every result by then; a long grace would only slow it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The conformance service. Stateless: every call carries its own script.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conformance;

/// What the server observed of a call, echoed back as `RequestInfo`.
fn request_info(
    metadata: &MetadataMap,
    timeout: Option<Duration>,
    requests: Vec<prost_types::Any>,
) -> RequestInfo {
    RequestInfo {
        request_headers: headers_from_metadata(metadata),
        timeout_ms: timeout.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
        requests,
        connect_get_info: None,
    }
}

/// The status for the suite's `Error`: its code and message, and its
/// details followed by `info` (if any), as a `google.rpc.Status` in the
/// binary details trailer.
fn error_status(error: &pb::Error, info: Option<&RequestInfo>) -> Status {
    let code = super::code_from_pb(error.code);
    let message = error.message.clone().unwrap_or_default();
    let mut details = error.details.clone();
    if let Some(info) = info {
        details.push(pack("ConformancePayload.RequestInfo", info));
    }
    let rich = google_rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::new(code, message).with_details(rich.encode_to_vec().into())
}

/// Sleeps for the definition's `response_delay_ms`.
async fn delay(ms: u32) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
}

/// The answer of a unary-shaped call (Unary, IdempotentUnary, ClientStream):
/// the payload to return, or the error with every piece of metadata.
///
/// An error before any message leaves nothing to send but the status, so
/// the response is trailers-only: the defined headers and trailers travel
/// together in its one HEADERS frame (PROTOCOL-HTTP2.md: "Trailers-Only is
/// permitted for calls that produce an immediate error"), which the suite
/// accepts as both.
async fn unary_answer(
    definition: Option<pb::UnaryResponseDefinition>,
    info: RequestInfo,
    compress: bool,
) -> Result<Response<pb::ConformancePayload>, Status> {
    let Some(definition) = definition else {
        return Ok(Response::new(pb::ConformancePayload {
            data: Vec::new(),
            request_info: Some(info),
        }));
    };
    delay(definition.response_delay_ms).await;
    use pb::unary_response_definition::Response as Defined;
    match &definition.response {
        Some(Defined::Error(error)) => {
            let mut status = error_status(error, Some(&info));
            append_headers(status.metadata_mut(), &definition.response_headers);
            append_headers(status.metadata_mut(), &definition.response_trailers);
            Err(status)
        }
        data => {
            let data = match data {
                Some(Defined::ResponseData(data)) => data.clone(),
                _ => Vec::new(),
            };
            let mut response = Response::new(pb::ConformancePayload {
                data,
                request_info: Some(info),
            });
            append_headers(response.metadata_mut(), &definition.response_headers);
            append_headers(response.trailers_mut(), &definition.response_trailers);
            if compress {
                response.set_compression(Encoding::Gzip);
            }
            Ok(response)
        }
    }
}

/// Sets a streaming response's defined headers and trailers.
fn set_stream_metadata<T: prost::Message>(
    sink: &mut ResponseSink<T>,
    definition: &pb::StreamResponseDefinition,
) {
    let mut headers = MetadataMap::new();
    append_headers(&mut headers, &definition.response_headers);
    sink.set_header_metadata(headers);
    let mut trailers = MetadataMap::new();
    append_headers(&mut trailers, &definition.response_trailers);
    sink.set_trailer_metadata(trailers);
}

/// Reads every request of a client stream, packed as `Any`; also returns
/// the first request and whether the client compressed its messages.
async fn read_all<M: prost::Message + Default + Clone>(
    stream: &mut Streaming<M>,
    name: &str,
) -> Result<(Option<M>, Vec<prost_types::Any>, bool), Status> {
    let mut first = None;
    let mut all = Vec::new();
    let mut compressed = false;
    while let Some(message) = stream.message().await? {
        compressed |= stream.last_message_compressed();
        all.push(pack(name, &message));
        if first.is_none() {
            first = Some(message);
        }
    }
    Ok((first, all, compressed))
}

impl pb::ConformanceService for Conformance {
    async fn unary(
        &self,
        request: Request<pb::UnaryRequest>,
    ) -> Result<Response<pb::UnaryResponse>, Status> {
        let info = request_info(
            request.metadata(),
            request.timeout(),
            vec![pack("UnaryRequest", request.get_ref())],
        );
        let compress = request.message_compressed();
        let definition = request.into_inner().response_definition;
        let answer = unary_answer(definition, info, compress).await?;
        Ok(answer.map(|payload| pb::UnaryResponse {
            payload: Some(payload),
        }))
    }

    async fn server_stream(
        &self,
        request: Request<pb::ServerStreamRequest>,
        mut sink: ResponseSink<pb::ServerStreamResponse>,
    ) -> Result<(), Status> {
        let mut info = Some(request_info(
            request.metadata(),
            request.timeout(),
            vec![pack("ServerStreamRequest", request.get_ref())],
        ));
        let compress = request.message_compressed();
        let Some(definition) = request.into_inner().response_definition else {
            return Ok(());
        };
        set_stream_metadata(&mut sink, &definition);
        if compress {
            sink.set_compression(Encoding::Gzip);
        }
        // Headers now, so the client sees the call accepted before the
        // first (possibly delayed) message.
        sink.flush_headers()?;
        for data in definition.response_data {
            delay(definition.response_delay_ms).await;
            sink.send(&pb::ServerStreamResponse {
                payload: Some(pb::ConformancePayload {
                    data,
                    request_info: info.take(),
                }),
            })
            .await?;
        }
        match &definition.error {
            Some(error) => Err(error_status(error, info.as_ref())),
            None => Ok(()),
        }
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<pb::ClientStreamRequest>>,
    ) -> Result<Response<pb::ClientStreamResponse>, Status> {
        let timeout = request.timeout();
        let (metadata, mut stream) = request.into_parts();
        let (first, requests, compress) = read_all(&mut stream, "ClientStreamRequest").await?;
        let info = request_info(&metadata, timeout, requests);
        let definition = first.and_then(|f| f.response_definition);
        let answer = unary_answer(definition, info, compress).await?;
        Ok(answer.map(|payload| pb::ClientStreamResponse {
            payload: Some(payload),
        }))
    }

    async fn bidi_stream(
        &self,
        request: Request<Streaming<pb::BidiStreamRequest>>,
        mut sink: ResponseSink<pb::BidiStreamResponse>,
    ) -> Result<(), Status> {
        let timeout = request.timeout();
        let (metadata, mut stream) = request.into_parts();
        let mut definition: Option<pb::StreamResponseDefinition> = None;
        let mut full_duplex = false;
        let mut first = true;
        let mut sent = 0usize;
        // Requests received since the last response (all of them, in half
        // duplex, where nothing is sent before the client is done).
        let mut requests = Vec::new();
        let respond = |data: Vec<u8>, info: Option<RequestInfo>| pb::BidiStreamResponse {
            payload: Some(pb::ConformancePayload {
                data,
                request_info: info,
            }),
        };
        while let Some(message) = stream.message().await? {
            requests.push(pack("BidiStreamRequest", &message));
            if std::mem::take(&mut first) {
                full_duplex = message.full_duplex;
                if stream.last_message_compressed() {
                    sink.set_compression(Encoding::Gzip);
                }
                definition = message.response_definition;
                if let Some(definition) = &definition {
                    set_stream_metadata(&mut sink, definition);
                    if full_duplex && !definition.response_data.is_empty() {
                        sink.flush_headers()?;
                    }
                }
            }
            if !full_duplex {
                continue;
            }
            let Some(data) = definition
                .as_ref()
                .and_then(|d| d.response_data.get(sent))
                .cloned()
            else {
                // Nothing left to answer with: stop reading, end the call.
                break;
            };
            // The first response echoes everything observed; later ones
            // only the requests that arrived since the previous response.
            let info = if sent == 0 {
                request_info(&metadata, timeout, std::mem::take(&mut requests))
            } else {
                RequestInfo {
                    requests: std::mem::take(&mut requests),
                    ..RequestInfo::default()
                }
            };
            delay(definition.as_ref().map_or(0, |d| d.response_delay_ms)).await;
            sink.send(&respond(data, Some(info))).await?;
            sent += 1;
        }
        let Some(definition) = definition else {
            return Ok(());
        };
        if !full_duplex && !definition.response_data.is_empty() {
            sink.flush_headers()?;
        }
        for data in definition.response_data.iter().skip(sent).cloned() {
            let info = (sent == 0).then(|| request_info(&metadata, timeout, requests.clone()));
            delay(definition.response_delay_ms).await;
            sink.send(&respond(data, info)).await?;
            sent += 1;
        }
        match &definition.error {
            Some(error) => {
                let info = (sent == 0).then(|| request_info(&metadata, timeout, requests));
                Err(error_status(error, info.as_ref()))
            }
            None => Ok(()),
        }
    }

    async fn unimplemented(
        &self,
        _request: Request<pb::UnimplementedRequest>,
    ) -> Result<Response<pb::UnimplementedResponse>, Status> {
        // The suite wants the framework's own answer to a method nobody
        // implemented: the status our router gives an unknown method.
        Err(Status::unimplemented(
            "connectrpc.conformance.v1.ConformanceService/Unimplemented is not implemented",
        ))
    }

    async fn idempotent_unary(
        &self,
        request: Request<pb::IdempotentUnaryRequest>,
    ) -> Result<Response<pb::IdempotentUnaryResponse>, Status> {
        let info = request_info(
            request.metadata(),
            request.timeout(),
            vec![pack("IdempotentUnaryRequest", request.get_ref())],
        );
        let compress = request.message_compressed();
        let definition = request.into_inner().response_definition;
        let answer = unary_answer(definition, info, compress).await?;
        Ok(answer.map(|payload| pb::IdempotentUnaryResponse {
            payload: Some(payload),
        }))
    }
}

/// Why the server could not start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// A started conformance server: where it listens, and the certificate it
/// presents.
#[derive(Debug)]
pub struct Started {
    /// The address the runner's clients should dial.
    pub addr: SocketAddr,
    /// The PEM certificate served, empty without TLS.
    pub pem_cert: Vec<u8>,
}

/// Starts serving as `request` asks, in tasks of the current runtime, until
/// `shutdown` completes.
pub async fn start(
    request: &pb::ServerCompatRequest,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Started, StartError> {
    let mut builder = crate::server::Server::builder();
    builder
        .shutdown_grace(SHUTDOWN_GRACE)
        .add_service(pb::ConformanceServiceServer::new(Conformance));
    if request.message_receive_limit > 0 {
        builder.max_recv_message_size(request.message_receive_limit as usize);
    }
    if !request.client_tls_cert.is_empty() {
        // Our configs say `supports_tls_client_certs: false`, so the runner
        // never asks; a request that does gets a clear refusal rather than
        // a server that silently lets every client in.
        return Err("TLS client certificates are not supported".into());
    }
    let tls = if request.use_tls {
        let creds = request
            .server_creds
            .as_ref()
            .ok_or("use_tls without server_creds")?;
        Some((
            crate::tls::server_config_from_pem(&creds.cert, &creds.key)?,
            creds.cert.clone(),
        ))
    } else {
        None
    };
    let public = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = public.local_addr()?;
    let pem_cert = tls.as_ref().map(|(_, pem)| pem.clone()).unwrap_or_default();
    let web = request.protocol == pb::Protocol::GrpcWeb as i32;
    if web {
        // gRPC-Web: the gateway faces the client and serves each call with
        // the native server's services, in process.
        let server = builder.build();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut gateway = crate::web::Gateway::builder(server);
        gateway.shutdown_grace(SHUTDOWN_GRACE);
        if let Some((config, _)) = &tls {
            gateway.tls(Arc::clone(config));
        }
        let gateway = gateway.build();
        tokio::spawn(async move {
            let mut stop_rx = stop_rx;
            let stopped = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            if let Err(e) = gateway.serve(public, stopped).await {
                tracing::error!(error = %e, "conformance: gateway failed");
            }
        });
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    } else {
        if let Some((config, _)) = &tls {
            builder.tls(Arc::clone(config));
        }
        let server = builder.build();
        tokio::spawn(async move {
            if let Err(e) = server.serve(public, shutdown).await {
                tracing::error!(error = %e, "conformance: server failed");
            }
        });
    }
    Ok(Started { addr, pem_cert })
}

/// The whole program: one request from `input`, one response to `output`,
/// then serve until SIGTERM or Ctrl-C.
pub async fn run(
    input: &mut (impl tokio::io::AsyncRead + Unpin),
    output: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<(), StartError> {
    let request: pb::ServerCompatRequest = super::read_message(input)
        .await?
        .ok_or("stdin closed before a ServerCompatRequest arrived")?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        crate::server::shutdown_signal().await;
        let _ = done_tx.send(());
    };
    let started = start(&request, shutdown).await?;
    let response = pb::ServerCompatResponse {
        host: started.addr.ip().to_string(),
        port: u32::from(started.addr.port()),
        pem_cert: started.pem_cert,
    };
    super::write_message(output, &response).await?;
    let _ = done_rx.await;
    // Let the servers finish their grace period.
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    Ok(())
}
