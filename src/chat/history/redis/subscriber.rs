//! The subscriber task: every batch Redis sequenced, from any server,
//! delivered to this server's rooms in Redis's order.

use super::wire::parse_published;
use super::*;

pub(super) async fn subscriber(shared: Arc<Shared>, hub: Weak<dyn Deliver>) {
    let mut reported = false;
    loop {
        let connected = async {
            let mut pubsub = shared.client.get_async_pubsub().await?;
            pubsub.subscribe(EVENTS_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connected).await {
            Ok(Ok(pubsub)) => {
                info!(channel = EVENTS_CHANNEL, "redis: subscribed");
                reported = false;
                shared.subscriber_up.store(true, Ordering::SeqCst);
                let mut messages = pubsub.into_on_message();
                loop {
                    let next = std::future::poll_fn(|cx| {
                        futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
                    })
                    .await;
                    let Some(message) = next else {
                        break;
                    };
                    let Some(hub) = hub.upgrade() else {
                        return;
                    };
                    match parse_published(message.get_payload_bytes()) {
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
        tokio::time::sleep(RETRY).await;
    }
}

// ---------------------------------------------------------------------------
// The writer: sequences submissions, or delivers them here while Redis is
// down, and writes the outage queue when it is back.
