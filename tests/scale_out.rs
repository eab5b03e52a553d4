//! Several `chat-server` processes on one real `redis-server` are one chat
//! in every respect: a name is held on every server, presence spans them,
//! a server only receives the rooms it has members in, a dead server's
//! names come free, and a name taken twice while Redis was away is settled
//! when it is back.
//!
//! | test | what it shows |
//! |---|---|
//! | `a_name_is_held_on_every_server` | the same name (any case, `Chat` or `ChatStream`) refused on a second server; free there once its holder left |
//! | `presence_spans_servers` | `Who` (all names, and this server's), the welcome line and `HealthCheck` count every server's members |
//! | `a_server_receives_only_rooms_it_has_members_in` | per-room subscriptions: subscribed on a room's first local member, unsubscribed after its last, nothing lost at the start |
//! | `a_dead_servers_names_come_free_after_the_lease` | SIGKILL a server: its members' names are held until their lease runs out, then free |
//! | `a_name_let_go_while_redis_was_away_is_free_when_it_is_back` | a member leaving while its server cannot reach Redis: the name is released once Redis is back, not a lease later |
//! | `a_name_taken_twice_during_an_outage_is_settled_when_redis_returns` | both servers let `ann` in while Redis is down; once it is back exactly one keeps the name, the other is told why |
//! | `a_lost_subscription_is_repaired` | Redis drops one server's subscription while another's members talk: it subscribes again and delivers what it missed from the stream, each message once |
//! | `a_shard_master_killed_mid_chat_loses_nothing` | 3 masters with a replica each: the master of the room's shard killed while members talk; its replica takes over, every member that stayed has every message once, a member cut off before resumes with exactly what he missed, and a member joining after gets all of them from history |
//! | `a_redis_cluster_spreads_rooms_over_shards` | two servers on a 3-master Redis Cluster: every room's chat, names and presence work across servers, and the rooms' keys are spread over the shards |

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::member::{Member, chat_request};
use common::redis::{Proxy, RedisServer};
use common::redis_cluster::RedisCluster;
use common::{Server, WAIT, chat_server, wait_until};
use grpc_chat::Code;
use grpc_chat::client::Channel;
use grpc_chat::pb::chat::{
    ChatServiceClient, HealthCheckRequest, HealthCheckResponse, UserEventType, WhoRequest,
    WhoResponse, server_event,
};
use grpc_chat::rpc::Request;

/// A server on `redis` with the given name lease.
fn server(redis: &RedisServer, lease_secs: &str) -> Server {
    chat_server(&[
        "--rate-limit",
        "0",
        "--redis",
        &redis.url(),
        "--name-lease-secs",
        lease_secs,
    ])
}

async fn channel(server: &Server) -> Channel {
    Channel::connect(format!("127.0.0.1:{}", server.port))
        .await
        .expect("connect")
}

async fn who(channel: &Channel, room: &str) -> WhoResponse {
    ChatServiceClient::new(channel.clone())
        .who(Request::new(WhoRequest { room: room.into() }))
        .await
        .expect("Who")
        .into_inner()
}

async fn health(channel: &Channel) -> HealthCheckResponse {
    ChatServiceClient::new(channel.clone())
        .health_check(Request::new(HealthCheckRequest {}))
        .await
        .expect("HealthCheck")
        .into_inner()
}

/// `name` joining `room` through `channel`: the member, or the status.
async fn try_join(channel: &Channel, room: &str, name: &str) -> Result<Member, grpc_chat::Status> {
    Member::try_join(channel, chat_request(room, None), name).await
}

/// The notice text of the next system event with `needle`, reading on.
async fn notice_with(member: &mut Member, needle: &str) -> String {
    loop {
        match member.next().await {
            Ok(Some(server_event::Event::SystemEvent(e))) if e.message.contains(needle) => {
                return e.message;
            }
            Ok(Some(_)) => continue,
            other => panic!("{}: no notice with {needle:?}: {other:?}", member.name),
        }
    }
}

/// Subscribers of a room's channel, as Redis counts them.
fn subscribers(redis: &RedisServer, room: &str) -> u64 {
    let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("chat:{{{room}}}:events"))
        .query(&mut redis.connection())
        .expect("PUBSUB NUMSUB");
    counts.first().map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_held_on_every_server() {
    let redis = RedisServer::start();
    let a = server(&redis, "15");
    let b = server(&redis, "15");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    let ann = try_join(&on_a, "names", "ann").await.expect("ann on A");

    for asked in ["ann", "ANN"] {
        let refused = try_join(&on_b, "names", asked).await.err();
        let status = refused.unwrap_or_else(|| panic!("{asked} on B got in"));
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("in use"), "{status:?}");
    }
    // ChatStream: named by its first message, refused the same way.
    let client = ChatServiceClient::new(on_b.clone());
    let mut request = Request::new(());
    request.metadata_mut().insert("chat-room", "names").unwrap();
    let mut stream = client.chat_stream(request).await.expect("ChatStream");
    stream
        .send(&common::chat_stream::say("Ann", "I am ann on B"))
        .await
        .expect("send");
    let ended = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an answer");
    assert_eq!(
        ended.err().map(|s| s.code()),
        Some(Code::AlreadyExists),
        "the ChatStream impostor"
    );
    // Another room is another namespace.
    let _elsewhere = try_join(&on_b, "other-room", "ann")
        .await
        .expect("ann in another room");

    // Once ann leaves A, the name is free on B.
    drop(ann);
    wait_until("ann free on B", async || {
        try_join(&on_b, "names", "ann").await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_servers() {
    let redis = RedisServer::start();
    // A short lease: the census is reported every third of it.
    let a = server(&redis, "1.5");
    let b = server(&redis, "1.5");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    let _ann = try_join(&on_a, "lounge", "ann").await.expect("ann on A");
    let _cat = try_join(&on_a, "lounge", "cat").await.expect("cat on A");

    let mut bob = Member::try_join(&on_b, chat_request("lounge", None), "bob")
        .await
        .expect("bob on B");
    let welcome = notice_with(&mut bob, "welcome").await;
    assert!(
        welcome.contains("ann") && welcome.contains("cat"),
        "bob on B is told who is on A: {welcome}"
    );

    let seen_from_b = who(&on_b, "lounge").await;
    assert_eq!(seen_from_b.users, ["ann", "bob", "cat"]);
    assert_eq!(seen_from_b.local_users, ["bob"]);
    let seen_from_a = who(&on_a, "lounge").await;
    assert_eq!(seen_from_a.users, ["ann", "bob", "cat"]);
    assert_eq!(seen_from_a.local_users, ["ann", "cat"]);

    wait_until("HealthCheck counting both servers", async || {
        let h = health(&on_b).await;
        h.servers == 2 && h.cluster_clients == 3 && h.active_clients == 1
    })
    .await;

    // Leaving is seen from the other server too.
    drop(_cat);
    wait_until("cat gone from B's Who", async || {
        who(&on_b, "lounge").await.users == ["ann", "bob"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_receives_only_rooms_it_has_members_in() {
    let redis = RedisServer::start();
    let a = server(&redis, "15");
    let b = server(&redis, "15");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    assert_eq!(subscribers(&redis, "busy"), 0);

    let mut ann = try_join(&on_a, "busy", "ann").await.expect("ann on A");
    assert_eq!(subscribers(&redis, "busy"), 1, "A only");
    for i in 0..20 {
        ann.say(&format!("before bob {i}")).await.unwrap();
    }

    // bob's server subscribes as he joins; what ann says around that moment
    // reaches him once, from history or live.
    let talk = async {
        for i in 0..50 {
            ann.say(&format!("around bob {i}")).await.unwrap();
        }
        ann
    };
    // bob's call is read from its first event: what history replays to
    // him counts as much as what arrives live.
    let join = async {
        Member::open(&on_b, chat_request("busy", None), "bob")
            .await
            .expect("bob on B")
    };
    let (mut ann, mut bob) = tokio::join!(talk, join);
    let mut texts = Vec::new();
    let mut said_done = false;
    let deadline = Instant::now() + WAIT;
    while texts.last().map(String::as_str) != Some("done") {
        assert!(Instant::now() < deadline, "bob's messages: {texts:?}");
        match bob.next().await {
            Ok(Some(server_event::Event::SystemEvent(e))) if e.end_of_history => {
                // In the room now, subscribed on B.
                assert_eq!(subscribers(&redis, "busy"), 2, "A and B");
                ann.say("done").await.unwrap();
                said_done = true;
            }
            Ok(Some(server_event::Event::ChatMessage(m))) => texts.push(m.message),
            Ok(Some(_)) => {}
            other => panic!("bob's call ended: {other:?}"),
        }
    }
    assert!(said_done);
    let around: Vec<&String> = texts.iter().filter(|t| t.starts_with("around")).collect();
    let want: Vec<String> = (0..50).map(|i| format!("around bob {i}")).collect();
    let around: Vec<String> = around.into_iter().cloned().collect();
    // History replays the newest 50 before live traffic: with 50 said
    // around the join, every one of them is there, once, in order.
    assert_eq!(
        around, want,
        "no gap or duplicate at the subscription's start"
    );

    // The last member on B leaves: B lets the room go.
    drop(bob);
    wait_until("B unsubscribed", async || subscribers(&redis, "busy") == 1).await;
    ann.wait_user_event("bob", UserEventType::UserLeft, WAIT)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_servers_names_come_free_after_the_lease() {
    let redis = RedisServer::start();
    let mut a = server(&redis, "4");
    let b = server(&redis, "4");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    let _ann = try_join(&on_a, "crash", "ann").await.expect("ann on A");

    let killed = Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    a.wait_exit(Duration::from_secs(10)).expect("A gone");
    let died = Instant::now();

    // The lease outlives its server for a while: nobody can take the name
    // at once (a server that only lost its network may still have ann).
    let status = try_join(&on_b, "crash", "ann").await.err();
    assert_eq!(status.map(|s| s.code()), Some(Code::AlreadyExists));
    // Then it runs out.
    wait_until("ann free after A's lease ran out", async || {
        try_join(&on_b, "crash", "ann").await.is_ok()
    })
    .await;
    assert!(
        died.elapsed() < Duration::from_secs(4) + WAIT,
        "freed within the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_twice_during_an_outage_is_settled_when_redis_returns() {
    let mut redis = RedisServer::start();
    let a = server(&redis, "1.5");
    let b = server(&redis, "1.5");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);

    redis.kill();
    for on in [&on_a, &on_b] {
        wait_until("DEGRADED", async || {
            health(on).await.status.starts_with("DEGRADED")
        })
        .await;
    }
    // Each server alone: both let an ann in.
    let ann_a = try_join(&on_a, "split", "ann").await.expect("ann on A");
    let ann_b = try_join(&on_b, "split", "ann").await.expect("ann on B");

    redis.restart();
    // Exactly one of them keeps the name; the other's call ends, saying why.
    let mut members = [ann_a, ann_b];
    let deadline = Instant::now() + WAIT;
    let loser = loop {
        assert!(Instant::now() < deadline, "nobody lost the name");
        let mut ended = None;
        for (i, m) in members.iter_mut().enumerate() {
            if let Ok(Err(status)) =
                tokio::time::timeout(Duration::from_millis(200), m.call.message()).await
            {
                ended = Some((i, status));
            }
        }
        if let Some(found) = ended {
            break found;
        }
    };
    let (index, status) = loser;
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("another server"),
        "the loser is told why: {status:?}"
    );
    let winner = &mut members[1 - index];
    winner.say("still here").await.expect("the winner stays");
    for on in [&on_a, &on_b] {
        wait_until("one ann", async || who(on, "split").await.users == ["ann"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_spreads_rooms_over_shards() {
    let cluster = RedisCluster::start(3);
    // One seed, said to be a cluster node: the other masters are found
    // from it. (The failover test below gives every node as a seed.)
    let seed = cluster.urls()[0].clone();
    let a = chat_server(&["--rate-limit", "0", "--redis", &seed, "--redis-cluster"]);
    let b = chat_server(&["--rate-limit", "0", "--redis", &seed, "--redis-cluster"]);
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    for on in [&on_a, &on_b] {
        wait_until("SERVING on the cluster", async || {
            health(on).await.status == "SERVING"
        })
        .await;
    }
    let rooms = ["kitchen", "garden", "attic", "cellar", "porch", "study"];
    for room in rooms {
        let mut ann = try_join(&on_a, room, "ann").await.expect("ann on A");
        let mut bob = try_join(&on_b, room, "bob").await.expect("bob on B");
        let status = try_join(&on_b, room, "Ann").await.err();
        assert_eq!(
            status.map(|s| s.code()),
            Some(Code::AlreadyExists),
            "{room}: ann's name is held on B too"
        );
        assert_eq!(who(&on_b, room).await.users, ["ann", "bob"], "{room}");
        let text = format!("hello from A in {room}");
        ann.say(&text).await.unwrap();
        loop {
            match bob.next().await {
                Ok(Some(server_event::Event::ChatMessage(m))) if m.message == text => break,
                Ok(Some(_)) => {}
                other => panic!("{room}: bob's call ended: {other:?}"),
            }
        }
    }
    let owners: std::collections::HashSet<u16> = rooms
        .iter()
        .filter_map(|room| cluster.owner_of(&format!("chat:{{{room}}}:log")))
        .collect();
    assert_eq!(
        owners.len(),
        3,
        "the rooms' histories are on every shard: {owners:?}"
    );
}

/// Chat messages `member` receives until it has every text of `want`,
/// counting each text: returns the counts (a text seen twice shows 2).
async fn collect_texts(
    member: &mut Member,
    want: &[String],
) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + WAIT;
    while !want.iter().all(|t| seen.contains_key(t)) {
        assert!(
            Instant::now() < deadline,
            "{}: missing {:?}",
            member.name,
            want.iter()
                .filter(|t| !seen.contains_key(*t))
                .collect::<Vec<_>>()
        );
        match tokio::time::timeout(Duration::from_millis(500), member.call.message()).await {
            Ok(Ok(Some(event))) => {
                if let Some(server_event::Event::ChatMessage(m)) = event.event {
                    *seen.entry(m.message).or_insert(0) += 1;
                }
            }
            Ok(other) => panic!("{}: call ended: {other:?}", member.name),
            Err(_) => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_master_killed_mid_chat_loses_nothing() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let seeds = cluster.urls().join(",");
    let a = chat_server(&["--rate-limit", "0", "--redis", &seeds]);
    let b = chat_server(&["--rate-limit", "0", "--redis", &seeds]);
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    for on in [&on_a, &on_b] {
        wait_until("SERVING on the cluster", async || {
            health(on).await.status == "SERVING"
        })
        .await;
    }
    let room = "failover";
    let mut ann = try_join(&on_a, room, "ann").await.expect("ann on A");
    let mut bob = try_join(&on_b, room, "bob").await.expect("bob on B");
    let text = |i: usize| format!("f{i}");
    let all: Vec<String> = (1..=30).map(text).collect();

    for i in 1..=10 {
        ann.say(&text(i)).await.unwrap();
    }
    let before = collect_texts(&mut bob, &all[..10]).await;
    assert!(before.values().all(|&n| n == 1), "{before:?}");
    // dan on B reads up to f10, then his connection is gone before the
    // failover: he resumes after it.
    let (dan, dan_resume) = {
        let mut dan = Member::open(&on_b, chat_request(room, None), "dan")
            .await
            .expect("dan on B");
        let (mut epoch, mut last) = (String::new(), 0);
        while last == 0 || epoch.is_empty() {
            match dan.next().await {
                Ok(Some(server_event::Event::ChatMessage(m))) if m.message == "f10" => last = m.id,
                Ok(Some(server_event::Event::SystemEvent(e))) if e.end_of_history => {
                    epoch = e.epoch;
                }
                Ok(Some(_)) => {}
                other => panic!("dan: {other:?}"),
            }
        }
        (dan, (last, epoch))
    };
    drop(dan);

    let key = format!("chat:{{{room}}}:log");
    let master = cluster.owner_of(&key).expect("the room's shard");
    cluster.wait_replicated(master);
    cluster.kill(master);
    // Said while the shard has no master: delivered on A at once, and to B
    // once A can write them.
    for i in 11..=20 {
        ann.say(&text(i)).await.unwrap();
    }
    let promoted = cluster.wait_ok_owning(&key, WAIT);
    assert_ne!(promoted, master);
    for on in [&on_a, &on_b] {
        wait_until("SERVING after the failover", async || {
            health(on).await.status == "SERVING"
        })
        .await;
    }
    for i in 21..=30 {
        ann.say(&text(i)).await.unwrap();
    }

    let bobs = collect_texts(&mut bob, &all[10..]).await;
    assert!(
        bobs.values().all(|&n| n == 1),
        "bob on B, each message once: {bobs:?}"
    );
    let anns = collect_texts(&mut ann, &all).await;
    assert!(
        anns.values().all(|&n| n == 1),
        "ann on A, each of her messages once: {anns:?}"
    );
    // dan resumes from f10 on the promoted replica's history: whole.
    let mut request = chat_request(room, None);
    let metadata = request.metadata_mut();
    metadata
        .insert("chat-last-id", &dan_resume.0.to_string())
        .unwrap();
    metadata.insert("chat-epoch", &dan_resume.1).unwrap();
    let mut dan = Member::open(&on_a, request, "dan")
        .await
        .expect("dan resumes on A");
    let resumed = collect_texts(&mut dan, &all[10..]).await;
    assert_eq!(
        resumed.len(),
        20,
        "dan's resume: f11 to f30, nothing before: {resumed:?}"
    );
    assert!(
        resumed.values().all(|&n| n == 1),
        "dan's resume: {resumed:?}"
    );
    // History on the promoted replica has them all: a newcomer is whole.
    let mut carol = Member::open(&on_b, chat_request(room, None), "carol")
        .await
        .expect("carol on B");
    let replayed = collect_texts(&mut carol, &all).await;
    assert!(
        replayed.values().all(|&n| n == 1),
        "carol's replay: {replayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_is_repaired() {
    let redis = RedisServer::start();
    let a = server(&redis, "15");
    let b = server(&redis, "15");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    let room = "cut";
    let mut ann = try_join(&on_a, room, "ann").await.expect("ann on A");
    let mut bob = try_join(&on_b, room, "bob").await.expect("bob on B");
    let all: Vec<String> = (1..=40).map(|i| format!("c{i}")).collect();
    for text in &all[..10] {
        ann.say(text).await.unwrap();
    }
    collect_texts(&mut bob, &all[..10]).await;
    // Redis closes B's Pub/Sub connection (as it does to a subscriber that
    // falls too far behind); every other connection stays, so A goes on
    // sequencing and publishing while B is not listening. B started second:
    // its subscriber has the higher client id.
    let mut conn = redis.connection();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut conn)
        .expect("CLIENT LIST");
    let ids: Vec<u64> = list
        .lines()
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 2, "one subscriber per server: {list}");
    let b_subscriber = ids.iter().max().copied().unwrap_or_default();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(b_subscriber)
        .query(&mut conn)
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    // Spread over more than the 0.5 s B waits before subscribing again.
    for text in &all[10..] {
        ann.say(text).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let bobs = collect_texts(&mut bob, &all[10..]).await;
    assert!(bobs.values().all(|&n| n == 1), "bob, each once: {bobs:?}");
    let anns = collect_texts(&mut ann, &all).await;
    assert!(anns.values().all(|&n| n == 1), "ann, each once: {anns:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_let_go_while_redis_was_away_is_free_when_it_is_back() {
    let redis = RedisServer::start();
    // A reaches Redis through a proxy that can cut it off.
    let proxy = Proxy::start(redis.port);
    let a = chat_server(&[
        "--rate-limit",
        "0",
        "--redis",
        &format!("redis://127.0.0.1:{}", proxy.port),
        "--name-lease-secs",
        "60",
    ]);
    let b = server(&redis, "60");
    let (on_a, on_b) = (channel(&a).await, channel(&b).await);
    let ann = try_join(&on_a, "away", "ann").await.expect("ann on A");

    proxy.cut(true);
    wait_until("A DEGRADED", async || {
        health(&on_a).await.status.starts_with("DEGRADED")
    })
    .await;
    // ann leaves while A cannot tell Redis.
    drop(ann);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.open();
    let back = Instant::now();
    // Her lease would run for up to a minute; A lets the name go as soon as
    // it can (its keeper's next round, a third of the lease at most).
    wait_until("ann free on B", async || {
        try_join(&on_b, "away", "ann").await.is_ok()
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(25),
        "{:?}",
        back.elapsed()
    );
}
