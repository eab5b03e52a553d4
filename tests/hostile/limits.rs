//! Limits: each offence logged once per offender; connection, queue and
//! message-size limits.

use super::*;

/// Log lines (JSON) whose `fields.message` contains `needle`.
fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.starts_with('{') && l.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_logged_once_per_offender() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    // Two members, each sending 20 over-long messages and then a flood past
    // the rate limit.
    for name in ["offender1", "offender2"] {
        let mut offender = member(&t.address, name).await;
        // (The witness first gets what the previous offender got through.)
        while next_said(&mut witness).await.user != name {}
        for _ in 0..20 {
            offender.send(&say(name, &"x".repeat(300))).await.unwrap();
        }
        for n in 0..300 {
            offender.send(&say(name, &format!("{n}"))).await.unwrap();
        }
        offender.close_send().unwrap();
        // Its stream ends once everything it sent was handled.
        assert_eq!(end_of(&mut offender).await.code(), Code::Ok);
    }
    // One connection sending 30 requests with the wrong content-type, and
    // 30 truncated messages.
    let mut client = raw::connect(&t.address).await;
    for i in 0..60 {
        let content_type = if i < 30 {
            "text/plain"
        } else {
            "application/grpc"
        };
        let request = http::Request::post(format!("http://{}{CHAT_STREAM}", t.address))
            .header("content-type", content_type)
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        // (The server may have refused the request already.)
        let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), true);
        let _ = read_answer(timeout(WAIT, response).await.unwrap().unwrap()).await;
    }
    // A connection that floods RST_STREAMs: thousands of frames, one GOAWAY,
    // one line.
    let (socket, frames) = raw_connection(&t.address).await;
    let block = raw::chat_stream_header_block();
    let (goaway, _) = flood(socket, frames, move |i| {
        let id = 2 * u32::try_from(i).ok()? + 1;
        let mut bytes = frame(HEADERS, END_HEADERS, id, &block);
        bytes.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 0x8]));
        (i < 2000).then_some(bytes)
    })
    .await;
    assert!(goaway.is_some());

    // The server logs when h2 hands it the error, which may be just after
    // the peer saw the connection close: wait for the line.
    common::wait_until("the protocol violation logged", async || {
        !log_lines(&t.log(), "HTTP/2 protocol violation").is_empty()
    })
    .await;
    let log = t.log();
    let violations = log_lines(&log, "HTTP/2 protocol violation");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    let refused = log_lines(&log, "message refused");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    let limited = log_lines(&log, "rate limit reached");
    assert_eq!(limited.len(), 2, "{limited:#?}");
    let requests = log_lines(&log, "request refused");
    let calls = log_lines(&log, "call refused")
        .into_iter()
        .chain(log_lines(&log, "call failed"))
        .filter(|l| l.contains("further failures"))
        .count();
    // The raw connection's 60 offences: one line (the first refusal, 415).
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        calls, 0,
        "the raw connection's later offences went to debug"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_excess_connections_get_goaway_and_one_log_line() {
    // The canary holds two connections; room for three more.
    let t = Target::start(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_connection(&t.address).await);
    }
    // Ten more: each is told GOAWAY(NO_ERROR, last stream 0) and closed.
    for _ in 0..10 {
        let (mut socket, mut frames) = raw_connection(&t.address).await;
        let goaway = goaway_then_close(&mut frames, &mut socket)
            .await
            .expect("no GOAWAY for a connection over the limit");
        assert_eq!(goaway.error_code(), Some(0x0), "NO_ERROR: {goaway:?}");
        assert_eq!(&goaway.payload[..4], &[0, 0, 0, 0], "last stream 0");
    }
    // Through our client, the same is UNAVAILABLE.
    let refused = match Channel::connect(t.address.clone()).await {
        Err(status) => status,
        Ok(channel) => ChatServiceClient::new(channel)
            .who(Request::new(Default::default()))
            .await
            .expect_err("a call over the connection limit succeeded"),
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    // One held connection goes; the next one is served.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut socket, mut frames) = raw_connection(&t.address).await;
        // A connection still over the limit may be closed before the PING
        // is written (a broken pipe): that is "not served yet" too.
        let answer = match socket.write_all(&frame(PING, 0, 0, b"welcome?")).await {
            Err(_) => None,
            Ok(()) => loop {
                match frames.next(&mut socket).await {
                    Some(f) if f.kind == PING || f.kind == GOAWAY => break Some(f.kind),
                    Some(_) => continue,
                    None => break None,
                }
            },
        };
        if answer == Some(PING) {
            held.push((socket, frames));
            break;
        }
        // The server had not noticed the closed connection yet.
        assert!(Instant::now() < deadline, "no connection served again");
        canary_ticks(1).await;
    }
    let log = t.log();
    assert_eq!(
        log_lines(&log, "connection limit reached").len(),
        1,
        "{log}"
    );
    let below = log_lines(&log, "below the connection limit again");
    assert_eq!(below.len(), 1, "{log}");
    drop(held);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_a_member_too_far_behind_is_disconnected_and_logged_once() {
    // A long grace, so the queue limit (2 KiB) is what ends it.
    let t = Target::start(&["--slow-grace-secs", "60", "--max-queue-bytes", "2048"]).await;
    let hello = encoded(&say("laggard", "hi"));
    let (response, _keep_open) =
        raw_chat_stream_with(&t.address, 1024, &[("chat-room", CANARY_ROOM)], hello).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    // The canary's ~2 KB/s fill the 1 KiB window, then the 2 KiB queue.
    let deadline = Instant::now() + Duration::from_secs(15);
    while who(&t.address, CANARY_ROOM)
        .await
        .contains(&"laggard".to_owned())
    {
        assert!(Instant::now() < deadline, "the laggard is still a member");
        canary_ticks(5).await;
    }
    let (_, status) = drain_to_status(response.into_body()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("too far behind"), "{status}");
    let log = t.log();
    assert_eq!(log_lines(&log, "member too far behind").len(), 1, "{log}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_the_send_message_size_applies_to_replies() {
    let t = Target::start(&["--max-send-message-size", "16"]).await;
    // Who of the canary's room names both canary members: ~30 bytes, over
    // the 16 allowed. The reply is refused, not sent.
    let request = grpc_chat::pb::chat::WhoRequest {
        room: CANARY_ROOM.into(),
    };
    let answer = call(
        &t.address,
        Method::POST,
        WHO,
        GRPC,
        &grpc_message(&prost::Message::encode_to_vec(&request)),
    )
    .await;
    assert_status(&answer, Code::ResourceExhausted, "Who over the send limit");
    assert!(answer.body.is_empty(), "{:?}", answer.body);
    t.finish().await;
}
