//! What real HTTP/2 peers do that the server must serve, seen on the wire.
//!
//! Each test plays one peer's habit with hand-written frames or the bare
//! `h2` client, against the interop `TestService` on 127.0.0.1:0:
//!
//! * grpc-java's OkHttp transport sizes its own HPACK *decoder* by the
//!   SETTINGS_HEADER_TABLE_SIZE we advertise (0), so no response of ours may
//!   refer to a dynamic-table entry — on any call of a connection.
//! * A client may index its request headers although we advertised 0: `h2`
//!   decodes them anyway (what `docs/hardening.md` says we hold).
//! * A client may cut a request into DATA frames of a few bytes (grpc's own
//!   HTTP/2 tests do): within flow control, that is served.

mod common;

use common::raw::{
    ACK, DATA, END_HEADERS, END_STREAM, FrameReader, HEADERS, PREFACE_AND_SETTINGS, SETTINGS,
    frame, header_block, push_header,
};
use grpc_chat::interop::server::InteropService;
use grpc_chat::pb::grpc_testing::{EchoStatus, Payload, SimpleRequest, TestServiceServer};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The interop `TestService` on a free port, serving until the test ends.
async fn start() -> String {
    common::in_process::start(TestServiceServer::new(InteropService))
        .await
        .detach()
}

/// SETTINGS_HEADER_TABLE_SIZE's identifier (RFC 9113 §6.5.2).
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;

/// A raw connection: preface and empty SETTINGS sent, the server's SETTINGS
/// read and acknowledged. Returns the HEADER_TABLE_SIZE it advertised
/// (4096, HTTP/2's default, when it did not say).
async fn handshake(address: &str) -> (TcpStream, FrameReader, usize) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    let mut reader = FrameReader::new();
    let mut table_size = 4096;
    loop {
        let settings = reader.next(&mut socket).await.expect("server's SETTINGS");
        if settings.kind != SETTINGS || settings.flags & ACK != 0 {
            continue;
        }
        // Each setting: identifier (16) | value (32).
        for entry in settings.payload.chunks_exact(6) {
            if u16::from_be_bytes([entry[0], entry[1]]) == SETTINGS_HEADER_TABLE_SIZE {
                table_size = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]) as usize;
            }
        }
        break;
    }
    socket
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    (socket, reader, table_size)
}

/// `message` as one uncompressed gRPC message: flag 0 | length | bytes.
fn grpc_message(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Sends one call on `stream` (headers, one message, END_STREAM) and
/// decodes every header block of its answer with `decoder`, the client's
/// one HPACK decoder for the connection. Returns the decoded header blocks
/// in order (response headers, then trailers; one block if trailers-only).
async fn call(
    socket: &mut TcpStream,
    reader: &mut FrameReader,
    decoder: &mut loona_hpack::Decoder<'_>,
    stream: u32,
    block: &[u8],
    body: &[u8],
) -> Vec<Vec<(String, String)>> {
    socket
        .write_all(&frame(HEADERS, END_HEADERS, stream, block))
        .await
        .unwrap();
    socket
        .write_all(&frame(DATA, END_STREAM, stream, body))
        .await
        .unwrap();
    let mut blocks = Vec::new();
    loop {
        let got = reader.next(socket).await.expect("the answer");
        if got.stream != stream {
            continue;
        }
        if got.kind == HEADERS {
            assert_ne!(got.flags & END_HEADERS, 0, "small blocks fit one frame");
            let headers = decoder.decode(&got.payload).unwrap_or_else(|e| {
                panic!(
                    "stream {stream}: a decoder sized by our HEADER_TABLE_SIZE setting \
                     cannot read the block {:02x?}: {e:?}",
                    got.payload
                )
            });
            blocks.push(
                headers
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect(),
            );
        }
        if got.flags & END_STREAM != 0 {
            return blocks;
        }
    }
}

fn value<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// grpc-java's OkHttp transport applies the HEADER_TABLE_SIZE *we*
/// advertise to its own decoder (it should size it by its own setting). A
/// decoder made that way must read every answer of a connection: before the
/// fix, the second call's response headers referred to the dynamic-table
/// entries the first call's had added, and OkHttp failed with "Header index
/// too large" on every connection's second call.
#[tokio::test]
async fn a_client_that_sizes_its_decoder_by_our_setting_reads_every_answer() {
    let address = start().await;
    let (mut socket, mut reader, advertised) = handshake(&address).await;
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_table_size(advertised);

    let mut empty_call = header_block(Some("/grpc.testing.TestService/EmptyCall"));
    push_header(&mut empty_call, "te", "trailers");
    let mut unary = header_block(Some("/grpc.testing.TestService/UnaryCall"));
    push_header(&mut unary, "te", "trailers");
    push_header(&mut unary, "x-grpc-test-echo-initial", "first");
    let mut unknown = header_block(Some("/grpc.testing.TestService/NoSuchMethod"));
    push_header(&mut unknown, "te", "trailers");
    let empty: &[u8] = &[0, 0, 0, 0, 0];
    let failing = grpc_message(&SimpleRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: "as asked".into(),
        }),
        ..Default::default()
    });

    // Stream by stream: the same call again, metadata echoed, trailers-only
    // UNIMPLEMENTED, a status with a message, and the first call once more.
    let calls: [(&[u8], &[u8], &str); 6] = [
        (&empty_call, empty, "0"),
        (&empty_call, empty, "0"),
        (&unary, empty, "0"),
        (&unknown, empty, "12"),
        (&unary, &failing, "2"),
        (&empty_call, empty, "0"),
    ];
    for (i, (block, body, status)) in calls.into_iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let blocks = call(&mut socket, &mut reader, &mut decoder, stream, block, body).await;
        let first = blocks.first().expect("response headers");
        assert_eq!(value(first, ":status"), Some("200"), "stream {stream}");
        assert_eq!(
            value(first, "content-type"),
            Some("application/grpc"),
            "stream {stream}"
        );
        let last = blocks.last().expect("trailers");
        assert_eq!(value(last, "grpc-status"), Some(status), "stream {stream}");
    }
}

/// We advertise HEADER_TABLE_SIZE 0, but `h2` does not enforce it: a
/// client that indexes a request header anyway, and refers to it on its
/// next request, is decoded (the server holds that entry). This pins what
/// `docs/hardening.md` says the setting does and does not guarantee.
#[tokio::test]
async fn a_client_that_indexes_its_headers_anyway_is_still_decoded() {
    let address = start().await;
    let (mut socket, mut reader, advertised) = handshake(&address).await;
    assert_eq!(advertised, 0, "the server asks clients to keep no table");
    let mut decoder = loona_hpack::Decoder::new();

    // First request: `x-grpc-test-echo-initial: kept` as a "literal header
    // field with incremental indexing — new name" (0x40, then name and
    // value), which adds it to the table as entry 62, the first dynamic one.
    let mut first = header_block(Some("/grpc.testing.TestService/UnaryCall"));
    push_header(&mut first, "te", "trailers");
    first.push(0x40);
    for text in [&b"x-grpc-test-echo-initial"[..], b"kept"] {
        first.push(text.len() as u8);
        first.extend_from_slice(text);
    }
    let empty: &[u8] = &[0, 0, 0, 0, 0];
    let blocks = call(&mut socket, &mut reader, &mut decoder, 1, &first, empty).await;
    assert_eq!(value(&blocks[0], "x-grpc-test-echo-initial"), Some("kept"));

    // Second request: the same header as "indexed header field" 62
    // (0x80 | 62 = 0xbe): one byte, meaningful only if the server kept it.
    let mut second = header_block(Some("/grpc.testing.TestService/UnaryCall"));
    push_header(&mut second, "te", "trailers");
    second.push(0xbe);
    let blocks = call(&mut socket, &mut reader, &mut decoder, 3, &second, empty).await;
    assert_eq!(value(&blocks[0], "x-grpc-test-echo-initial"), Some("kept"));
    assert_eq!(value(blocks.last().unwrap(), "grpc-status"), Some("0"));
}

/// A unary request with `payload` bytes of payload, cut into DATA frames
/// of `chunk` bytes and written as one burst of hand-written frames (as a
/// peer in another process would: all of it can be in our socket before
/// the call's task first runs). Returns the answer's `grpc-status`.
async fn large_unary_in_frames_of(address: &str, chunk: usize, payload: usize) -> String {
    let (mut socket, mut reader, _) = handshake(address).await;
    let mut block = header_block(Some("/grpc.testing.TestService/UnaryCall"));
    push_header(&mut block, "te", "trailers");
    let body = grpc_message(&SimpleRequest {
        response_size: 10,
        payload: Some(Payload {
            body: vec![0; payload],
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut burst = frame(HEADERS, END_HEADERS, 1, &block);
    let pieces = body.chunks(chunk).count();
    for (i, piece) in body.chunks(chunk).enumerate() {
        let flags = if i + 1 == pieces { END_STREAM } else { 0 };
        burst.extend(frame(DATA, flags, 1, piece));
    }
    let (mut read_half, mut write_half) = socket.split();
    let (written, answer) = tokio::join!(write_half.write_all(&burst), async {
        let mut decoder = loona_hpack::Decoder::new();
        let mut status = String::from("none");
        while let Some(got) = reader.next(&mut read_half).await {
            if got.kind == common::raw::GOAWAY {
                return format!("GOAWAY {:?}", got.error_code());
            }
            if got.stream != 1 {
                continue;
            }
            if got.kind == HEADERS {
                for (name, value) in decoder.decode(&got.payload).unwrap() {
                    if name == b"grpc-status" {
                        status = String::from_utf8_lossy(&value).into_owned();
                    }
                }
            }
            if got.flags & END_STREAM != 0 {
                break;
            }
        }
        status
    });
    written.unwrap();
    answer
}

/// grpc's HTTP/2 tests send a message as 5-byte DATA frames; other peers
/// use 20. Every frame is within flow control, and the call reads them as
/// they come, so the server must serve it (before the fix, `h2` read the
/// whole burst ahead of the call and its default DATA-frame budget closed
/// the connection with GOAWAY ENHANCE_YOUR_CALM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_five_and_twenty_byte_data_frames_is_served() {
    let address = start().await;
    assert_eq!(large_unary_in_frames_of(&address, 5, 271_828).await, "0");
    assert_eq!(large_unary_in_frames_of(&address, 20, 271_828).await, "0");
}

/// The smallest frames there are: one byte each, 64 KiB of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_one_byte_data_frames_is_served() {
    let address = start().await;
    assert_eq!(large_unary_in_frames_of(&address, 1, 64 * 1024).await, "0");
}

/// A service whose one method never reads its request: the case in which
/// small DATA frames pile up in `h2` until the budget says stop.
struct NeverReads;

impl grpc_chat::server::Service for NeverReads {
    fn name(&self) -> &'static str {
        "test.NeverReads"
    }

    fn call(
        &self,
        _method: &str,
        call: grpc_chat::server::ServerCall,
    ) -> grpc_chat::server::Dispatch {
        grpc_chat::server::bidi_streaming::<(), (), _, _>(call, |_request, _sink| async {
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

/// The flood the DATA-frame budget is for: one-byte DATA frames, each
/// within flow control, to calls that never read them, interleaved over
/// two streams (so no two in a row can be joined into one, as the server
/// does with a run on one stream). Each would be held (about 200 bytes
/// apiece) until the window's 2 MiB of them, 400 MB; the budget (twice the
/// window) stops the connection at about 16,000 frames with GOAWAY
/// ENHANCE_YOUR_CALM, and the server serves the next connection.
#[tokio::test]
async fn one_byte_frames_to_calls_that_never_read_end_with_enhance_your_calm() {
    let address = common::in_process::start_with(NeverReads, |b| {
        b.add_service(TestServiceServer::new(InteropService));
    })
    .await
    .detach();

    let (mut socket, mut reader, _) = handshake(&address).await;
    let mut block = header_block(Some("/test.NeverReads/Hold"));
    push_header(&mut block, "te", "trailers");
    for stream in [1, 3] {
        socket
            .write_all(&frame(HEADERS, END_HEADERS, stream, &block))
            .await
            .unwrap();
    }
    // 20,000 one-byte frames, streams 1 and 3 in turn (200 kB on the wire,
    // 10,000 bytes of each stream's window).
    let pair = [frame(DATA, 0, 1, b"x"), frame(DATA, 0, 3, b"x")].concat();
    let flood: Vec<u8> = pair
        .iter()
        .copied()
        .cycle()
        .take(pair.len() * 10_000)
        .collect();
    // The server may close while we are still writing.
    let _ = socket.write_all(&flood).await;
    let goaway = loop {
        match reader.next(&mut socket).await {
            Some(f) if f.kind == common::raw::GOAWAY => break f,
            Some(_) => continue,
            None => panic!("closed without GOAWAY"),
        }
    };
    // ENHANCE_YOUR_CALM is 0xb (RFC 9113 §7).
    assert_eq!(goaway.error_code(), Some(0xb), "{goaway:?}");

    // Everyone else is still served.
    assert_eq!(
        large_unary_in_frames_of(&address, 16 * 1024, 1000).await,
        "0"
    );
}

/// A run of one-byte frames on one stream, to a call that never reads: the
/// server joins each read's run into one frame on its way to `h2`, so what
/// is held is the bytes, and the connection stays up (the flood above needs
/// interleaved streams to get past the joining).
#[tokio::test]
async fn a_run_of_one_byte_frames_on_one_stream_is_joined_not_refused() {
    let address = common::in_process::start_with(NeverReads, |b| {
        b.add_service(TestServiceServer::new(InteropService));
    })
    .await
    .detach();

    let (mut socket, mut reader, _) = handshake(&address).await;
    let mut block = header_block(Some("/test.NeverReads/Hold"));
    push_header(&mut block, "te", "trailers");
    socket
        .write_all(&frame(HEADERS, END_HEADERS, 1, &block))
        .await
        .unwrap();
    let one = frame(DATA, 0, 1, b"x");
    let run: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    socket.write_all(&run).await.unwrap();
    // A PING after the run: its ACK shows the server read all of it and
    // kept the connection.
    socket
        .write_all(&frame(common::raw::PING, 0, 0, b"run done"))
        .await
        .unwrap();
    loop {
        let got = reader.next(&mut socket).await.expect("connection kept");
        assert_ne!(got.kind, common::raw::GOAWAY, "{got:?}");
        if got.kind == common::raw::PING && got.payload == b"run done" {
            break;
        }
    }
}
