//! Chat abuse: impersonation, oversized names and messages, control
//! characters, floods, join storms.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_impersonation_is_delivered_under_the_bound_name() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    let mut mallory = member(&t.address, "mallory").await;
    assert_eq!(next_said(&mut witness).await.user, "mallory");
    // Claims to be the canary, the server, the witness: delivered as mallory.
    for claimed in [CANARY_TX, "server", "witness", ""] {
        mallory
            .send(&say(claimed, &format!("as {claimed}")))
            .await
            .unwrap();
        let got = next_said(&mut witness).await;
        assert_eq!(got.user, "mallory", "{got:?}");
        assert_eq!(got.message, format!("as {claimed}"));
    }
    // Taking a name in use (any case), or a reserved one, ends the call.
    let mut copycat = member(&t.address, "WITNESS").await;
    assert_eq!(end_of(&mut copycat).await.code(), Code::AlreadyExists);
    for reserved in ["server", "System", "you"] {
        let mut fake = member(&t.address, reserved).await;
        assert_eq!(
            end_of(&mut fake).await.code(),
            Code::InvalidArgument,
            "{reserved}"
        );
    }
    // The Chat protocol binds the name at USER_JOINED, with the same rules.
    let mut events = chat_client(&t.address)
        .await
        .chat(in_room((), ROOM))
        .await
        .unwrap();
    events
        .send(&ClientEvent {
            event: Some(client_event::Event::UserEvent(UserEvent {
                r#type: UserEventType::UserJoined.into(),
                username: "Mallory".into(),
                timestamp: 0,
            })),
        })
        .await
        .unwrap();
    let status = loop {
        match timeout(WAIT, events.message()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => break Status::ok(),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_oversized_names_and_messages_are_refused() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    // 17 characters: over the 16 allowed.
    let mut long_name = member(&t.address, &"n".repeat(17)).await;
    let status = end_of(&mut long_name).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("too long"), "{status}");

    let mut talker = member(&t.address, "talker").await;
    assert_eq!(next_said(&mut witness).await.user, "talker");
    // 201 characters: refused with a notice to the sender only…
    talker.send(&say("talker", &"m".repeat(201))).await.unwrap();
    let notice = next_notice(&mut talker).await;
    assert_eq!(notice.user, "server");
    assert!(notice.message.contains("too long"), "{notice:?}");
    // …and the witness's next message is the one after it.
    talker.send(&say("talker", "short")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "short");

    // A message larger than the 64 KiB receive limit ends the call.
    talker
        .send(&say("talker", &"m".repeat(70_000)))
        .await
        .unwrap();
    let status = end_of(&mut talker).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_control_characters_and_terminal_escapes_are_refused() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    for name in ["evil\u{1b}[2J", "bell\u{7}", "c1\u{9b}31m", "nul\u{0}"] {
        let mut m = member(&t.address, name).await;
        assert_eq!(
            end_of(&mut m).await.code(),
            Code::InvalidArgument,
            "{name:?}"
        );
    }
    let mut talker = member(&t.address, "talker").await;
    assert_eq!(next_said(&mut witness).await.user, "talker");
    let escapes = [
        "\u{1b}[2J\u{1b}[H",         // clear the screen, cursor home
        "\u{1b}]52;c;aGFja2Vk\u{7}", // OSC 52: write the clipboard
        "\u{1b}]0;pwned\u{7}",       // OSC 0: set the window title
        "\u{9b}31mred",              // C1 CSI: colour without ESC
        "bell\u{7}here",             // any C0 control (TAB excepted: a space)
        "bidi\u{85}next line",       // C1 NEL
        "del\u{7f}",                 // DEL
    ];
    for text in escapes {
        talker.send(&say("talker", text)).await.unwrap();
        let notice = next_notice(&mut talker).await;
        assert_eq!(notice.user, "server", "{text:?}");
        assert!(notice.message.contains("control character"), "{notice:?}");
    }
    talker.send(&say("talker", "plain")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "plain");
    // TAB is whitespace (pasted tab-separated text): delivered as a space.
    talker.send(&say("talker", "name\tscore")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "name score");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_a_flood_beyond_the_rate_limit_is_refused_with_notices() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    let flooder = member(&t.address, "flooder").await;
    assert_eq!(next_said(&mut witness).await.user, "flooder");
    let started = Instant::now();
    let total = 1000u32;
    let (mut sink, mut answers) = flooder.split();
    let flood = tokio::spawn(async move {
        for n in 0..total {
            sink.send(&say("flooder", &format!("f{n}"))).await.unwrap();
        }
        sink.close().unwrap();
    });
    // Everything the flooder sent is accounted for: each message either
    // reached the witness or came back as a rate-limit notice.
    let mut notices = 0u32;
    while let Some(m) = timeout(WAIT, answers.message()).await.unwrap().unwrap() {
        if m.user == "witness" {
            continue; // its "hi", if it was published after the flooder joined
        }
        assert_eq!(m.user, "server");
        assert!(m.message.contains("rate limited"), "{m:?}");
        notices += 1;
    }
    flood.await.unwrap();
    let elapsed = started.elapsed();
    let mut marker = member(&t.address, "marker").await;
    let mut delivered = 0u32;
    loop {
        let m = next_said(&mut witness).await;
        if m.user == "marker" {
            break;
        }
        assert_eq!(m.user, "flooder");
        delivered += 1;
    }
    assert_eq!(
        delivered + notices,
        total,
        "{delivered} delivered, {notices} refused"
    );
    // Burst 100, 100 per second after it (one extra for rounding).
    let allowed = 100.0 + 100.0 * elapsed.as_secs_f64() + 1.0;
    assert!(
        f64::from(delivered) <= allowed,
        "{delivered} delivered in {elapsed:?}"
    );
    assert!(notices > 0);
    marker.close_send().unwrap();
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_join_storm_against_a_full_room() {
    // The canary's room holds 64: the two canary members and 62 more.
    let t = Target::start(&["--max-room-members", "64"]).await;
    for round in 0..2 {
        let mut admitted = Vec::new();
        let mut refused = 0;
        let mut joins = Vec::new();
        // 100 joins over 10 connections (10 streams each), all at once.
        for c in 0..10 {
            let client = chat_client(&t.address).await;
            for s in 0..10 {
                let client = client.clone();
                joins.push(tokio::spawn(async move {
                    let mut call = client.chat_stream(in_room((), CANARY_ROOM)).await.unwrap();
                    // A refused member's stream may already be closed.
                    let _ = call.send(&say(&format!("j{round}-{c}-{s}"), "hi")).await;
                    // An admitted member hears the canary within a moment;
                    // a refused one gets its status.
                    match timeout(WAIT, call.message()).await.unwrap() {
                        Ok(Some(_)) => Ok(call),
                        Ok(None) => panic!("stream ended without a status"),
                        Err(status) => Err(status),
                    }
                }));
            }
        }
        for join in joins {
            match join.await.unwrap() {
                Ok(call) => admitted.push(call),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                    assert!(status.message().contains("full"), "{status}");
                    refused += 1;
                }
            }
        }
        assert_eq!(admitted.len(), 62, "round {round}");
        assert_eq!(refused, 38, "round {round}");
        // All leave at once; the next round finds the places free again.
        drop(admitted);
        // Two names left: the canary's.
        common::wait_until("the members to leave", async || {
            who(&t.address, CANARY_ROOM).await.len() <= 2
        })
        .await;
    }
    t.finish().await;
}
