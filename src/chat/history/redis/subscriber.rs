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
//! **No gap when a subscription starts.** Redis delivers a published batch
//! to the subscriptions in place when it runs `PUBLISH`. The member that
//! made a server subscribe reads its history page only after Redis has
//! confirmed the subscription (`SUBSCRIBE`'s reply), so every batch is in
//! the page, or arrives live, or both — and the replay rule (live ids up to
//! the page's head are skipped) keeps "both" to once.

use std::collections::HashSet;

use super::wire::parse_published;
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

pub(super) async fn subscriber(
    shared: Arc<Shared>,
    hub: Weak<dyn Deliver>,
    mut follows: mpsc::UnboundedReceiver<Follow>,
) {
    // The rooms to receive, kept across reconnections.
    let mut rooms: HashSet<String> = HashSet::new();
    let mut reported = false;
    loop {
        let connected = async {
            let (mut sink, stream) = shared.client.get_async_pubsub().await?.split();
            // After a reconnection: every room we still have members in.
            let channels: Vec<String> = rooms.iter().map(|r| channel(r)).collect();
            if !channels.is_empty() {
                sink.subscribe(&channels).await?;
            }
            Ok::<_, redis::RedisError>((sink, stream))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connected).await {
            Ok(Ok((mut sink, mut messages))) => {
                info!(rooms = rooms.len(), "redis: subscribed");
                reported = false;
                shared.subscriber_up.store(true, Ordering::SeqCst);
                loop {
                    let next = std::future::poll_fn(|cx| {
                        futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
                    });
                    tokio::select! {
                        message = next => {
                            let Some(message) = message else { break };
                            let Some(hub) = hub.upgrade() else { return };
                            deliver(&shared, &*hub, message.get_payload_bytes());
                        }
                        follow = follows.recv() => {
                            let Some(follow) = follow else { return };
                            if let Err(e) = apply(&mut sink, &mut rooms, follow).await {
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
                        rooms.remove(&room);
                    }
                    None => return,
                },
            }
        }
    }
}

/// Subscribes or unsubscribes one room, on a live connection.
async fn apply(
    sink: &mut redis::aio::PubSubSink,
    rooms: &mut HashSet<String>,
    follow: Follow,
) -> redis::RedisResult<()> {
    match follow {
        Follow::Start(room, done) => {
            if !rooms.contains(&room) {
                let sent = sink.subscribe(channel(&room)).await;
                // Noted even if it failed: the reconnection subscribes it.
                rooms.insert(room);
                sent?;
            }
            let _ = done.send(());
        }
        Follow::Stop(room) => {
            if rooms.remove(&room) {
                sink.unsubscribe(channel(&room)).await?;
            }
        }
    }
    Ok(())
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
                shared.own_seen.fetch_max(seq_no, Ordering::SeqCst);
            }
            hub.sequenced(batch);
        }
        Err(why) => {
            shared.error("redis: bad published batch", &why);
            warn!(%why, "redis: published batch ignored");
        }
    }
}
