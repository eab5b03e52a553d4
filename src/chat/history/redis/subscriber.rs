//! The subscriber task: every batch Redis sequenced in a room this server
//! has members in, from any server, delivered to the room in Redis's order.
//!
//! Each room has its own channel (`chat:{room}:events`), and a server
//! subscribes only to the rooms it has members in: the hub asks for a room
//! when its first local member joins ([`Follow::Start`], answered once the
//! subscription is in place) and lets it go after its last one leaves. So a
//! server spends nothing on rooms it has nobody in, and adding servers adds
//! capacity.
//!
//! On a Redis Cluster the channels are sharded (`SSUBSCRIBE`): each lives on
//! its room's shard, and the cluster connection subscribes on the right
//! node.
//!
//! **A lost subscription is repaired.** When the subscriber connects again
//! after losing its connection (Redis restarted, a network cut, a cluster
//! shard's failover), each room it follows reads its stream after the last
//! store-numbered id it delivered and delivers what it missed; a batch of
//! those that also arrives live is not delivered twice (`Room::apply`).
//!
//! **No gap when a subscription starts.** Redis delivers a published batch
//! to the subscriptions in place when it runs `PUBLISH`. The member that
//! made a server subscribe reads its history page only after Redis has
//! confirmed the subscription (`SUBSCRIBE`'s reply), so every batch is in
//! the page, or arrives live, or both — and the replay rule (live ids up to
//! the page's head are skipped) keeps "both" to once.

use std::collections::HashSet;

use super::backend::{self, Backend};
use super::wire::{self, parse_gap, parse_published};
use super::*;

/// What the hub asks of the subscriber.
pub(super) enum Follow {
    /// Receive this room's batches from now on; answered once they will be.
    Start(String, oneshot::Sender<()>),
    /// Stop receiving this room's batches (its last local member left).
    Stop(String),
}

/// The channel a room's sequenced batches are published on. It shares the
/// room's hash tag, so on a Redis Cluster it lives with the room's keys.
pub(super) fn channel(room: &str) -> String {
    format!("chat:{{{room}}}:events")
}

/// A subscriber connection: plain Pub/Sub on one instance, sharded Pub/Sub
/// (RESP3 pushes) on a cluster.
enum Subscription {
    Single(redis::aio::PubSubSink, redis::aio::PubSubStream),
    Cluster(
        redis::cluster_async::ClusterConnection,
        mpsc::UnboundedReceiver<redis::PushInfo>,
    ),
}

impl Subscription {
    /// Connects, and subscribes to `rooms` (after a reconnection: every
    /// room we still have members in).
    async fn open(shared: &Shared, rooms: &HashSet<String>) -> redis::RedisResult<Subscription> {
        let channels: Vec<String> = rooms.iter().map(|r| channel(r)).collect();
        let mut subscription = match &shared.backend {
            Backend::Single(client) => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Subscription::Single(sink, stream)
            }
            Backend::Cluster { seeds, .. } => {
                let (pushes, received) = mpsc::unbounded_channel();
                let client = backend::cluster_builder(seeds)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .build()?;
                Subscription::Cluster(client.get_async_connection().await?, received)
            }
        };
        if !channels.is_empty() {
            subscription.subscribe(&channels).await?;
        }
        Ok(subscription)
    }

    async fn subscribe(&mut self, channels: &[String]) -> redis::RedisResult<()> {
        match self {
            Subscription::Single(sink, _) => sink.subscribe(channels).await,
            // One slot per command: a room's channel is in its room's slot.
            Subscription::Cluster(conn, _) => {
                for channel in channels {
                    conn.ssubscribe(channel).await?;
                }
                Ok(())
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Subscription::Single(sink, _) => sink.unsubscribe(channel).await,
            Subscription::Cluster(conn, _) => conn.sunsubscribe(channel).await,
        }
    }

    /// The next thing the connection says; `None` once it is lost.
    async fn next(&mut self) -> Option<Heard> {
        match self {
            Subscription::Single(_, stream) => {
                let message = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut *stream), cx)
                })
                .await?;
                Some(Heard::Batch(message.get_payload_bytes().to_vec()))
            }
            Subscription::Cluster(_, pushes) => loop {
                let push = pushes.recv().await?;
                let mut data = push.data.into_iter();
                match push.kind {
                    // [channel, payload]
                    redis::PushKind::SMessage => {
                        if let Some(Value::BulkString(payload)) = data.nth(1) {
                            return Some(Heard::Batch(payload));
                        }
                    }
                    // [channel, count]: a subscription is in place — ours, or
                    // one the cluster connection made again by itself on a
                    // shard's new master after a failover.
                    redis::PushKind::SSubscribe => {
                        if let Some(channel) = data.next().as_ref().and_then(wire::text) {
                            return Some(Heard::Subscribed(channel));
                        }
                    }
                    // A node's connection dropped: what it published
                    // meanwhile is missed, so this counts as a lost
                    // subscription (the caller reconnects and resubscribes).
                    redis::PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}

/// What a subscriber connection says.
enum Heard {
    /// A published batch.
    Batch(Vec<u8>),
    /// A subscription to this channel is in place (cluster only).
    Subscribed(String),
}

/// The room of a channel named by [`channel`].
fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("chat:{")?.strip_suffix("}:events")
}

pub(super) async fn subscriber(
    shared: Arc<Shared>,
    hub: Weak<dyn Deliver>,
    mut follows: mpsc::UnboundedReceiver<Follow>,
) {
    // The rooms to receive, kept across reconnections.
    let mut rooms: HashSet<String> = HashSet::new();
    let mut reported = false;
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, Subscription::open(&shared, &rooms)).await {
            Ok(Ok(mut subscription)) => {
                info!(rooms = rooms.len(), "redis: subscribed");
                // Subscribed again after a loss: what was published in each
                // room meanwhile is in its stream. Read after the
                // subscription, so nothing falls between the two.
                if let Some(hub) = hub.upgrade() {
                    for room in &rooms {
                        repair(&shared, &*hub, room).await;
                    }
                }
                reported = false;
                shared.subscriber_up.store(true, Ordering::SeqCst);
                loop {
                    tokio::select! {
                        heard = subscription.next() => {
                            let Some(heard) = heard else { break };
                            let Some(hub) = hub.upgrade() else { return };
                            match heard {
                                Heard::Batch(payload) => deliver(&shared, &*hub, &payload),
                                // On a cluster a subscription can be made
                                // again without us (a shard's failover):
                                // whenever one is in place, what the room
                                // missed before it is repaired.
                                Heard::Subscribed(channel) => {
                                    if let Some(room) = room_of(&channel) {
                                        repair(&shared, &*hub, room).await;
                                    }
                                }
                            }
                        }
                        follow = follows.recv() => {
                            let Some(follow) = follow else { return };
                            if let Err(e) = apply(&shared, &mut subscription, &mut rooms, follow).await {
                                shared.error("redis subscribe", &e);
                                break;
                            }
                        }
                    }
                }
                shared.subscriber_up.store(false, Ordering::SeqCst);
                shared.lost.notify_waiters();
                shared.error("redis subscription", &"connection lost");
                warn!("redis: subscription lost; live chat goes on locally, retrying");
            }
            Ok(Err(e)) => {
                shared.error("redis subscribe", &e);
                if !reported {
                    warn!(error = %e, "redis: cannot subscribe; retrying every {RETRY:?}");
                    reported = true;
                }
            }
            Err(_) => {
                shared.error("redis subscribe", &"timed out");
                if !reported {
                    warn!("redis: subscribing timed out; retrying every {RETRY:?}");
                    reported = true;
                }
            }
        }
        if hub.strong_count() == 0 {
            return;
        }
        // Disconnected: the rooms asked for meanwhile are noted (and
        // answered: there is nothing to receive until Redis is back, when
        // they are all subscribed).
        let retry = tokio::time::sleep(RETRY);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = &mut retry => break,
                follow = follows.recv() => match follow {
                    Some(Follow::Start(room, done)) => {
                        rooms.insert(room);
                        let _ = done.send(());
                    }
                    Some(Follow::Stop(room)) => {
                        forget(&shared, &mut rooms, &room);
                    }
                    None => return,
                },
            }
        }
    }
}

/// A room no longer followed: nothing of it is kept.
fn forget(shared: &Shared, rooms: &mut HashSet<String>, room: &str) -> bool {
    shared.own_seen.lock().remove(room);
    rooms.remove(room)
}

/// Subscribes or unsubscribes one room, on a live connection.
async fn apply(
    shared: &Shared,
    subscription: &mut Subscription,
    rooms: &mut HashSet<String>,
    follow: Follow,
) -> redis::RedisResult<()> {
    match follow {
        Follow::Start(room, done) => {
            if !rooms.contains(&room) {
                let sent = subscription.subscribe(&[channel(&room)]).await;
                // Noted even if it failed: the reconnection subscribes it.
                rooms.insert(room);
                sent?;
            }
            let _ = done.send(());
        }
        Follow::Stop(room) => {
            if forget(shared, rooms, &room) {
                subscription.unsubscribe(&channel(&room)).await?;
            }
        }
    }
    Ok(())
}

/// Delivers to `room` what its stream holds after the last id it delivered
/// (`Deliver::store_high`), except what this server wrote from its outage
/// queue: its members had those already, from here (see `writer`). Its own
/// other batches are included: a script that ran while the subscription
/// was down (a cluster connection retrying through a failover) comes back
/// to nobody.
async fn repair(shared: &Shared, hub: &dyn Deliver, room: &str) {
    let Some(after) = hub.store_high(room) else {
        return;
    };
    let [_, log, epoch] = keys(room);
    let script = redis::Script::new(GAP_SCRIPT);
    let mut invocation = script.prepare_invoke();
    invocation
        .key(log)
        .key(epoch)
        .arg(after)
        .arg(shared.options.history_len);
    let Ok(reply) = shared.ask::<Value>("redis repair read", invocation).await else {
        return;
    };
    match parse_gap(reply) {
        Ok((epoch, entries)) => {
            let node = hub.node_id();
            let missed: Vec<StoredMessage> = entries
                .into_iter()
                .filter(|(_, written)| !(written.flushed && written.by == Some(node)))
                .map(|(message, _)| message)
                .collect();
            if !missed.is_empty() {
                hub.repair(room, &epoch, missed);
            }
        }
        Err(why) => shared.error("redis repair read", &why),
    }
}

/// One published batch, to the hub.
fn deliver(shared: &Shared, hub: &dyn Deliver, payload: &[u8]) {
    match parse_published(payload) {
        Ok((batch, seq_no)) => {
            let count = batch
                .events
                .iter()
                .filter(|e| matches!(e, Event::Message { .. }))
                .count() as u64;
            if count > 0 {
                shared.note_last_id(&batch.room, batch.first_id + count - 1);
            }
            if batch.origin == hub.node_id() && !batch.flushed {
                let mut seen = shared.own_seen.lock();
                match seen.get_mut(&batch.room) {
                    Some(last) => *last = (*last).max(seq_no),
                    None => {
                        seen.insert(batch.room.clone(), seq_no);
                    }
                }
            }
            hub.sequenced(batch);
        }
        Err(why) => {
            shared.error("redis: bad published batch", &why);
            warn!(%why, "redis: published batch ignored");
        }
    }
}
