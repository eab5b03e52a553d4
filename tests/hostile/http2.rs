//! HTTP/2 abuse: stream limits, rapid reset, CONTINUATION floods, the
//! preface, flow-control windows.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_more_concurrent_streams_than_allowed_are_refused() {
    let t = Target::start(&[]).await;
    let (mut socket, mut frames) = raw_connection(&t.address).await;
    // 17 ChatStream requests on streams 1, 3, …, 33, none ended: the server
    // allows 16 at once (SETTINGS_MAX_CONCURRENT_STREAMS), so the 17th is
    // refused with RST_STREAM(REFUSED_STREAM) — safe for a client to retry.
    let block = raw::chat_stream_header_block();
    let mut bytes = Vec::new();
    for i in 0..17u32 {
        bytes.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    socket.write_all(&bytes).await.unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut refused = None;
    while answered.len() < 16 || refused.is_none() {
        let f = next_frame_where(&mut frames, &mut socket, |f| f.stream != 0).await;
        match f.kind {
            HEADERS => {
                answered.insert(f.stream);
            }
            RST_STREAM => refused = Some(f),
            _ => {}
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused.stream, 33, "{refused:?}");
    assert_eq!(refused.error_code(), Some(0x7), "REFUSED_STREAM");
    assert_eq!(answered.len(), 16);
    assert!(!answered.contains(&33));
    // The connection is fine: PING is answered.
    socket
        .write_all(&frame(PING, 0, 0, b"hostile!"))
        .await
        .unwrap();
    let pong = next_frame_where(&mut frames, &mut socket, |f| f.kind == PING).await;
    assert_eq!(pong.payload, b"hostile!");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_open_and_reset_ends_the_connection_with_enhance_your_calm() {
    let t = Target::start(&[]).await;
    let (socket, frames) = raw_connection(&t.address).await;
    // 2000 × (HEADERS opening a ChatStream, then RST_STREAM(CANCEL) of the
    // same stream), written as fast as the socket takes them: the "rapid
    // reset" attack (CVE-2023-44487).
    // Each stream costs the server work but never counts against the
    // concurrent-stream limit.
    let block = raw::chat_stream_header_block();
    let (goaway, _) = flood(socket, frames, move |i| {
        if i >= 2000 {
            return None;
        }
        let id = 2 * i as u32 + 1;
        let mut bytes = frame(HEADERS, END_HEADERS, id, &block);
        // RST_STREAM payload: error code CANCEL (0x8).
        bytes.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 0x8]));
        Some(bytes)
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0xb),
        "ENHANCE_YOUR_CALM: {goaway:?}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_ends_the_connection() {
    let t = Target::start(&[]).await;
    let (socket, frames) = raw_connection(&t.address).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end
    // the block (CVE-2024-27316 and friends): a server that buffered them
    // all would grow without bound. Each CONTINUATION carries one whole
    // header field, a literal without indexing:
    //   0x00 | name length 8 | "x-filler" | value length 100 | 100 × 'f'
    let mut field = vec![0x00, 8];
    field.extend_from_slice(b"x-filler");
    field.push(100);
    field.extend_from_slice(&[b'f'; 100]);
    let block = raw::chat_stream_header_block();
    let (goaway, sent) = flood(socket, frames, move |i| match i {
        0 => Some(frame(HEADERS, 0, 1, &block)),
        100_000.. => None,
        _ => Some(frame(CONTINUATION, 0, 1, &field)),
    })
    .await;
    assert!(sent < 100_000, "the server took {sent} CONTINUATION frames");
    let goaway = goaway.expect("no GOAWAY");
    // h2 counts CONTINUATION frames (ENHANCE_YOUR_CALM) and bytes of an
    // over-size block (COMPRESSION_ERROR); either ends it.
    let code = goaway.error_code();
    assert!(code == Some(0xb) || code == Some(0x9), "{goaway:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_no_preface_or_half_a_preface_is_closed_after_the_handshake_timeout() {
    let t = Target::start(&[]).await;
    // Connects and says nothing.
    let silent = TcpStream::connect(&t.address).await.unwrap();
    // Half the preface, then nothing.
    let mut stalled = TcpStream::connect(&t.address).await.unwrap();
    stalled
        .write_all(&raw::PREFACE_AND_SETTINGS[..12])
        .await
        .unwrap();
    // Something that is not a preface at all (an HTTP/1.1 request): closed
    // at once.
    let mut garbage = TcpStream::connect(&t.address).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (silent, stalled, garbage) = tokio::join!(
        until_closed(silent, Duration::from_secs(10)),
        until_closed(stalled, Duration::from_secs(10)),
        until_closed(garbage, Duration::from_secs(10)),
    );
    // The handshake timeout is 0.5 s: not closed before it…
    assert!(silent >= Duration::from_millis(450), "{silent:?}");
    assert!(stalled >= Duration::from_millis(450), "{stalled:?}");
    // …but closed (until_closed fails after 10 s), and garbage sooner.
    assert!(garbage < silent, "{garbage:?} vs {silent:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_window_update_abuse_is_a_connection_error() {
    let t = Target::start(&[]).await;
    // WINDOW_UPDATE on the connection (stream 0) with the largest increment,
    // 0x7fffffff: added to the 65,535 the window starts at, it passes the
    // 2^31 - 1 maximum, which RFC 9113 §6.9.1 makes a FLOW_CONTROL_ERROR
    // (0x3) for the whole connection.
    let (socket, frames) = raw_connection(&t.address).await;
    let (goaway, _) = flood(socket, frames, |i| {
        (i == 0).then(|| frame(WINDOW_UPDATE, 0, 0, &[0x7f, 0xff, 0xff, 0xff]))
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0x3),
        "FLOW_CONTROL_ERROR: {goaway:?}"
    );
    // An increment of 0 on the connection is a PROTOCOL_ERROR (0x1).
    let (socket, frames) = raw_connection(&t.address).await;
    let (goaway, _) = flood(socket, frames, |i| {
        (i == 0).then(|| frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]))
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(goaway.error_code(), Some(0x1), "PROTOCOL_ERROR: {goaway:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_a_reader_that_never_opens_its_window_is_disconnected() {
    let t = Target::start(&[]).await;
    // A member of the canary's room with a 1 KiB stream window that it
    // never returns: the canary's traffic fills it within a second, then
    // the server waits the slow-reader grace (0.5 s) and ends the call.
    let hello = encoded(&say("sloth", "hi"));
    let (response, _keep_open) =
        raw_chat_stream_with(&t.address, 1024, &[("chat-room", CANARY_ROOM)], hello).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // 1 KiB is ~30 canary messages (0.6 s), plus the 0.5 s grace. Wait
    // for the server to drop the member (its name leaves the room), polling
    // Who; if it never does, the drain below never ends either.
    common::wait_until("the stalled reader to leave the room", async || {
        !who(&t.address, CANARY_ROOM)
            .await
            .contains(&"sloth".to_owned())
    })
    .await;
    let (received, status) = drain_to_status(response.into_body()).await;
    assert!(
        received <= 1024,
        "got {received} bytes through a 1 KiB window"
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("did not read"), "{status}");
    t.finish().await;
}
