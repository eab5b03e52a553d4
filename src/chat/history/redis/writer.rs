//! The writer task: has Redis sequence each batch (in pipelines), and
//! while Redis is unreachable has the rooms number them here, queueing
//! what they said to write once Redis is back.

use super::wire::{WireBatch, to_wire};
use super::*;

/// A batch delivered here while Redis was down, waiting to be written.
pub(super) struct Queued {
    batch: Submission,
    messages: Vec<StoredMessage>,
}

/// The writer's connection and its scripts.
pub(super) struct Link {
    conn: Conn,
    sequence: redis::Script,
    flush: redis::Script,
}

pub(super) async fn open_link(shared: &Shared) -> redis::RedisResult<Link> {
    let mut conn = shared.connect().await?;
    let sequence = shared.script(SEQUENCE_SCRIPT);
    let flush = shared.script(FLUSH_SCRIPT);
    // Loaded on every connection: a restarted Redis has lost its script cache.
    sequence.prepare_invoke().load_async(&mut conn).await?;
    flush.prepare_invoke().load_async(&mut conn).await?;
    Ok(Link {
        conn,
        sequence,
        flush,
    })
}

/// The script arguments both scripts share, after the keys.
pub(super) fn common_args(
    cmd: &mut redis::Cmd,
    shared: &Shared,
    batch: &Submission,
    payload: Vec<u8>,
    node: u64,
) {
    cmd.arg(new_epoch())
        .arg(shared.options.history_len)
        .arg(super::subscriber::channel(&batch.room))
        .arg(payload)
        .arg(&batch.user)
        .arg(batch.timestamp)
        .arg(node)
        .arg(batch.floor);
}

pub(super) fn evalsha(script: &redis::Script, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(3).arg(&keys(room)[..]);
    cmd
}

pub(super) async fn writer(
    shared: Arc<Shared>,
    hub: Weak<dyn Deliver>,
    mut inbox: mpsc::UnboundedReceiver<Work>,
) {
    let mut link: Option<Link> = None;
    let mut outage: VecDeque<Queued> = VecDeque::new();
    let mut next_try = Instant::now();
    let mut next_seq_no: u64 = 0;
    let mut reported_down = false;
    let mut last_report = Instant::now();
    loop {
        let Some(node) = hub.upgrade().map(|h| h.node_id()) else {
            return;
        };
        if link.is_none() && Instant::now() >= next_try {
            match open_link(&shared).await {
                Ok(l) => {
                    info!("redis: connected");
                    link = Some(l);
                }
                Err(e) => {
                    shared.error("redis connect", &e);
                    next_try = Instant::now() + RETRY;
                    if !reported_down || last_report.elapsed() > Duration::from_secs(30) {
                        warn!(error = %e, queued = shared.queued.load(Ordering::Relaxed),
                            "redis unreachable: live chat goes on, history writes are queued; retrying");
                        reported_down = true;
                        last_report = Instant::now();
                    }
                }
            }
        }
        let subscribed = shared.subscriber_up.load(Ordering::SeqCst);
        if let (Some(l), true, false) = (link.as_mut(), subscribed, outage.is_empty()) {
            match write_queued(&shared, l, &outage, node).await {
                Ok(()) => {
                    let written: usize = outage.iter().map(|q| q.messages.len()).sum();
                    info!(
                        messages = written,
                        "redis: queued messages written to history"
                    );
                    outage.clear();
                    shared.queued.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.error("redis flush", &e);
                    link = None;
                    next_try = Instant::now() + RETRY;
                }
            }
        }
        let up = link.is_some() && subscribed && outage.is_empty();
        if up && !shared.writer_up.swap(true, Ordering::SeqCst) && reported_down {
            info!("redis: back; history and scale-out resumed");
            reported_down = false;
        }
        if !up {
            shared.writer_up.store(false, Ordering::SeqCst);
        }

        // Wait for work; while down, also wake up to retry.
        let first = if up {
            tokio::select! {
                work = inbox.recv() => work,
                () = shared.lost.notified() => {
                    // Most likely Redis itself went away: start afresh.
                    link = None;
                    next_try = Instant::now();
                    continue;
                }
            }
        } else {
            tokio::select! {
                work = inbox.recv() => work,
                () = tokio::time::sleep(RETRY) => continue,
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batches = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(work) = next.take() {
            match work {
                Work::Submit(batch) => batches.push(batch),
                Work::Flush(ack) => acks.push(ack),
            }
            if batches.len() < MAX_PIPELINE {
                next = inbox.try_recv().ok();
            }
        }
        let numbered: Vec<(u64, Submission)> = batches
            .into_iter()
            .map(|b| {
                next_seq_no += 1;
                (next_seq_no, b)
            })
            .collect();

        let mut unsent = numbered;
        if let (true, Some(l)) = (up, link.as_mut()) {
            match sequence(&shared, l, &unsent, node).await {
                Ok(()) => unsent.clear(),
                Err(e) => {
                    shared.error("redis write", &e);
                    warn!(error = %e, "redis: write failed; delivering locally until it is back");
                    link = None;
                    shared.writer_up.store(false, Ordering::SeqCst);
                    reported_down = true;
                    last_report = Instant::now();
                    next_try = Instant::now() + RETRY;
                    // Batches whose script ran come back through the
                    // subscription (until it notices the loss too); give it
                    // a moment, then deliver the rest here.
                    let settle = Instant::now() + SETTLE;
                    while shared.subscriber_up.load(Ordering::SeqCst) && Instant::now() < settle {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    unsent.retain(|(n, batch)| *n > shared.own_seen(&batch.room));
                }
            }
        }
        if !unsent.is_empty() {
            let Some(hub) = hub.upgrade() else {
                return;
            };
            for (_, batch) in unsent {
                let mut messages = Vec::new();
                let delivered =
                    hub.number_here(batch.clone(), &mut |m| messages.extend_from_slice(m));
                if !delivered {
                    // Everyone left meanwhile (or the server is shutting
                    // down): nobody to deliver to, no room to number them.
                    let lost = batch.texts().count();
                    if lost > 0 {
                        warn!(room = %batch.room, lost, "history store unreachable and the room is gone: messages not kept");
                    }
                    continue;
                }
                queue(&shared, &mut outage, Queued { batch, messages });
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Adds to the outage queue, dropping the oldest beyond the bound.
pub(super) fn queue(shared: &Shared, outage: &mut VecDeque<Queued>, item: Queued) {
    let limit = shared.options.outage_queue;
    let mut queued = shared.queued.load(Ordering::Relaxed) + item.messages.len();
    outage.push_back(item);
    while queued > limit {
        let Some(dropped) = outage.pop_front() else {
            break;
        };
        queued -= dropped.messages.len();
        shared.error("redis outage queue", &"full: oldest messages dropped");
        warn!(
            dropped = dropped.messages.len(),
            limit, "redis outage queue full: oldest messages will not be in history"
        );
    }
    shared.queued.store(queued, Ordering::Relaxed);
}

/// Sends the sequence script for each batch, pipelined (see
/// `Conn::pipelined`).
pub(super) async fn sequence(
    shared: &Shared,
    link: &mut Link,
    batches: &[(u64, Submission)],
    node: u64,
) -> redis::RedisResult<()> {
    let mut commands = Vec::with_capacity(batches.len());
    for (seq_no, batch) in batches {
        let payload = WireBatch {
            room: batch.room.clone(),
            origin: node,
            sender: batch.sender,
            user: batch.user.clone(),
            timestamp: batch.timestamp,
            events: to_wire(&batch.events),
            flushed: false,
            first_id: 0,
            seq_no: *seq_no,
        }
        .encode_to_vec();
        let mut cmd = evalsha(&link.sequence, &batch.room);
        common_args(&mut cmd, shared, batch, payload, node);
        for text in batch.texts() {
            cmd.arg(text);
        }
        commands.push((batch.room.clone(), cmd));
    }
    debug!(batches = batches.len(), "redis: sequencing");
    link.conn.pipelined(commands).await.map(drop)
}

/// Writes the outage queue with the ids its messages were delivered with.
pub(super) async fn write_queued(
    shared: &Shared,
    link: &mut Link,
    outage: &VecDeque<Queued>,
    node: u64,
) -> redis::RedisResult<()> {
    let mut commands = Vec::with_capacity(outage.len());
    for queued in outage {
        let batch = &queued.batch;
        let payload = WireBatch {
            room: batch.room.clone(),
            origin: node,
            sender: batch.sender,
            user: batch.user.clone(),
            timestamp: batch.timestamp,
            events: to_wire(&batch.events),
            flushed: true,
            first_id: queued.messages.first().map_or(0, |m| m.id),
            seq_no: 0,
        }
        .encode_to_vec();
        let mut cmd = evalsha(&link.flush, &batch.room);
        // A new epoch continues from just before the first queued id.
        let floor = queued
            .messages
            .first()
            .map_or(batch.floor, |m| m.id.saturating_sub(1));
        let batch_floor = Submission {
            floor,
            ..batch.clone()
        };
        common_args(&mut cmd, shared, &batch_floor, payload, node);
        for message in &queued.messages {
            cmd.arg(message.id).arg(&message.text);
        }
        commands.push((batch.room.clone(), cmd));
    }
    link.conn.pipelined(commands).await.map(drop)
}
