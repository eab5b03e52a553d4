//! chat-bench: load and measurement for any server of `proto/chat.proto`.
//!
//! C members join one room; S of them send M marked messages each; every
//! member checks each message it receives against the marker in the text
//! ([`marker`]), so it counts each delivery once, spots duplicates and
//! measures latency on a clock shared by sender and receiver (they are in
//! this one process). The figures: deliveries per second, latency
//! percentiles (HdrHistogram), lost and duplicated messages, and with a
//! server PID the server's CPU time and peak memory.
//!
//! # A run, phase by phase
//!
//! 1. **Connect**: `conns` HTTP/2 connections (one per member by default),
//!    through our own client layer ([`crate::client`]).
//! 2. **Join**: each member queues its join, then opens its call.
//! 3. **Warm-up barrier**: members 0 and 1 send a probe every 100 ms until
//!    every member has received something from another member, so every
//!    call is registered and forwarding before anything is measured; then
//!    wait until no message arrived for 300 ms, so warm-up traffic does not
//!    mix with the load.
//! 4. **Stall** (`stall` > 0): the last N members stop reading.
//! 5. **Load**: the senders send, paced at `rate` per sender or as fast as
//!    the server's flow control lets them. Latency runs from handing a
//!    message to its member's outbox to a receiver decoding it, so with
//!    `rate` 0 it includes the wait in the sender's own queue: under a server
//!    that pushes back, that is where the wait shows.
//! 6. **Drain**: until every expected delivery arrived (and, under `Chat`,
//!    every sender's echo of its own messages), or nothing arrived for
//!    `drain` after the last send, or the run's `timeout` passed.
//!
//! This is the method of the independent yardstick `chatload` in
//! `../shared/bench` (same marker, same barrier, same clock points), so both
//! tools measure the same thing and can check each other.
//!
//! # Layout
//!
//! * `config.rs` — [`Config`] and its defaults, [`Protocol`], [`Error`].
//! * `mod.rs` (this file) — [`run`], its phases and the shared counters.
//! * [`marker`] — the text marker, pure.
//! * `member.rs` — one member: its call, writer and reader; the two
//!   protocols' differences.
//! * [`report`] — [`Report`], as a table and as one JSON line.
//! * [`procfs`] — the server's CPU time and memory from `/proc`.

mod config;
pub mod marker;
mod member;
pub mod procfs;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::client::Channel;
use crate::pb::chat::ChatServiceClient;
pub use config::*;
use member::{MemberSpec, MemberStats, Outbound, Phase};
pub use report::{Fanout, Report, RoomFigures, ServerFigures};
use report::{MAX_LATENCY_US, latency_histogram};

/// Capacity of each member's outbox, in messages.
const OUTBOX: usize = 64;

/// The latency histogram is split in this many shards (by receiving member)
/// so members rarely wait on each other's lock.
const HISTOGRAM_SHARDS: usize = 16;

/// Where a run is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting and joining.
    Connecting,
    /// The warm-up barrier.
    WarmingUp,
    /// Sending and receiving the measured messages.
    Load,
    /// Collecting the members' figures.
    Finishing,
}

/// A progress report, handed to [`run`]'s callback about ten times a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The phase.
    pub stage: Stage,
    /// Measured deliveries so far.
    pub delivered: u64,
    /// Deliveries expected in all.
    pub expected: u64,
    /// Members that passed the warm-up barrier so far.
    pub ready: usize,
    /// Members in all.
    pub clients: usize,
}

/// Counters and the clock shared by the main task and every member.
pub(crate) struct Shared {
    /// The benchmark clock's zero.
    start: Instant,
    /// Senders (S), for the dedup bits.
    senders: usize,
    /// Messages per sender (M).
    messages: usize,
    /// Every chat text received, of any kind (for the warm-up settle).
    received_any: AtomicU64,
    /// Members that received a marked message from another member.
    ready: AtomicUsize,
    /// Members whose call failed.
    failed: AtomicUsize,
    /// Distinct measured deliveries.
    delivered: AtomicU64,
    /// Members' own measured messages come back to them (`Chat` echoes).
    echoes: AtomicU64,
    /// Echoes the run waits for before it ends early: every measured
    /// message under `Chat`, which echoes; 0 under `ChatStream`.
    echoes_expected: u64,
    /// Measured messages handed to the outboxes.
    sent: AtomicU64,
    /// Clock at the first measured send; `u64::MAX` before it.
    first_send_ns: AtomicU64,
    /// Clock after the latest measured send.
    last_send_ns: AtomicU64,
    /// Clock at the latest delivery.
    last_delivery_ns: AtomicU64,
    /// Senders that have sent everything (or lost their call).
    senders_done: AtomicUsize,
    /// Stalled members that have stopped reading.
    stalled: AtomicUsize,
    /// Latency in µs, sharded by receiving member.
    histograms: Vec<Mutex<Histogram<u64>>>,
    /// Distinct measured deliveries per room (index: room).
    per_room: Vec<AtomicU64>,
    /// Per server (index into `addrs`): distinct measured deliveries to its
    /// members, and their latency (µs). Empty with a single server.
    per_server: Vec<(AtomicU64, Mutex<Histogram<u64>>)>,
    /// Per measured message (`sender * messages + seq`): the smallest and the
    /// largest delivery latency so far, ns (`u64::MAX` and 0 before the
    /// first). Empty when the run has more than [`MAX_TRACKED_MESSAGES`].
    fanout: Vec<[AtomicU64; 2]>,
}

impl Shared {
    /// Nanoseconds on the benchmark clock.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one delivery of measured message `index` to `member`, of
    /// room `room`, on server `server`.
    fn record_latency(
        &self,
        member: usize,
        room: usize,
        server: usize,
        index: usize,
        latency_ns: u64,
    ) {
        let us = (latency_ns / 1000).clamp(1, MAX_LATENCY_US);
        self.histograms[member % HISTOGRAM_SHARDS]
            .lock()
            .saturating_record(us);
        if let Some(delivered) = self.per_room.get(room) {
            delivered.fetch_add(1, Relaxed);
        }
        if let Some((delivered, histogram)) = self.per_server.get(server) {
            delivered.fetch_add(1, Relaxed);
            histogram.lock().saturating_record(us);
        }
        if let Some([first, last]) = self.fanout.get(index) {
            first.fetch_min(latency_ns, Relaxed);
            last.fetch_max(latency_ns, Relaxed);
        }
    }
}

/// Runs with more measured messages than this (16 bytes each) leave the
/// per-message fan-out figures out rather than hold them all.
pub const MAX_TRACKED_MESSAGES: usize = 1 << 20;

/// Runs the benchmark. `progress` is called about ten times a second.
///
/// Always returns by `config.timeout` plus a few seconds of connecting and
/// collecting, whatever the server does.
pub async fn run(config: &Config, mut progress: impl FnMut(Progress)) -> Result<Report, Error> {
    config.validate()?;
    let t0 = Instant::now();
    let deadline = t0 + config.timeout;
    let conns = config.conns();
    let readers = config.readers();
    // Every measured message is expected by every member of its room that
    // reads, but its sender.
    let expected_per_room = config.expected_per_room();
    let expected: u64 = expected_per_room.iter().sum();
    let mut report_progress = |stage, shared: &Shared| {
        progress(Progress {
            stage,
            delivered: shared.delivered.load(Relaxed),
            expected,
            ready: shared.ready.load(Relaxed),
            clients: config.clients,
        })
    };

    // One descriptor per connection, plus the runtime's own.
    let fds = conns as u64 + 64;
    if let Some((soft, hard)) = procfs::open_files_limits()
        && soft < fds
    {
        return Err(Error::Resources(format!(
            "{conns} connections need about {fds} open files, but the limit is {soft} \
             (hard limit {hard}): raise it first, e.g. `ulimit -n {hard}`"
        )));
    }

    let shared = Arc::new(Shared {
        start: t0,
        senders: config.senders,
        messages: config.messages,
        received_any: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        echoes: AtomicU64::new(0),
        echoes_expected: match config.protocol {
            Protocol::Chat => (config.senders * config.messages) as u64,
            Protocol::ChatStream => 0,
        },
        sent: AtomicU64::new(0),
        first_send_ns: AtomicU64::new(u64::MAX),
        last_send_ns: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        senders_done: AtomicUsize::new(0),
        stalled: AtomicUsize::new(0),
        histograms: (0..HISTOGRAM_SHARDS)
            .map(|_| Mutex::new(latency_histogram()))
            .collect(),
        per_room: (0..config.rooms).map(|_| AtomicU64::new(0)).collect(),
        per_server: if config.addrs.len() > 1 {
            (0..config.addrs.len())
                .map(|_| (AtomicU64::new(0), Mutex::new(latency_histogram())))
                .collect()
        } else {
            Vec::new()
        },
        fanout: {
            let n = config.senders.saturating_mul(config.messages);
            let n = if n <= MAX_TRACKED_MESSAGES { n } else { 0 };
            (0..n)
                .map(|_| [AtomicU64::new(u64::MAX), AtomicU64::new(0)])
                .collect()
        },
    });
    report_progress(Stage::Connecting, &shared);

    // 1. Connections, dialled concurrently. With one per member, connection
    // i carries member i, so the stalled members' connections are the last.
    let dials: Vec<_> = (0..conns)
        .map(|i| {
            let addr = &config.addrs[config.server_of_conn(i)];
            let mut builder = Channel::builder(addr.clone());
            builder
                .connect_timeout(CONNECT_TIMEOUT)
                .initial_connection_window_size(config.conn_window)
                .initial_stream_window_size(if i >= readers {
                    config.stall_window
                } else {
                    config.stream_window
                });
            tokio::spawn(async move { builder.connect().await })
        })
        .collect();
    let mut clients = Vec::with_capacity(conns);
    for dial in dials {
        let channel = match tokio::time::timeout_at(deadline.into(), dial).await {
            Ok(Ok(Ok(channel))) => channel,
            Ok(Ok(Err(status))) => {
                return Err(Error::Connect(format!(
                    "cannot connect: {}",
                    status.message()
                )));
            }
            Ok(Err(join)) => return Err(Error::Connect(format!("connecting failed: {join}"))),
            Err(_) => return Err(Error::Connect("timed out connecting".into())),
        };
        clients.push(ChatServiceClient::new(channel));
    }

    // 2. Members: each queues its join before its call opens.
    let (phase_tx, phase_rx) = watch::channel(Phase::Read);
    let mut outboxes = Vec::with_capacity(config.clients);
    let mut members = Vec::with_capacity(config.clients);
    for id in 0..config.clients {
        let (tx, rx) = mpsc::channel(OUTBOX);
        // Cannot fail: the channel is new and has room.
        let _ = tx.try_send(Outbound::Join);
        outboxes.push(tx);
        let spec = MemberSpec {
            id,
            name: format!("{}{id}", config.name_prefix),
            stalls: id >= readers,
            room: config.room_of(id),
            room_name: config.room_name(config.room_of(id)),
            server: config.server_of(id),
        };
        members.push(tokio::spawn(member::run(
            spec,
            clients[id % conns].clone(),
            config.protocol,
            rx,
            shared.clone(),
            phase_rx.clone(),
        )));
    }

    // 3. Warm-up barrier: every member must hear another member. The first
    // two members of each room (0 and 1 with one room) probe every 100 ms,
    // so everyone (they included) has something to hear even if joins are
    // not forwarded (`Chat` forwards no join text).
    let warm_deadline = (t0 + config.warmup).min(deadline);
    let mut probe = 0u64;
    while shared.ready.load(Relaxed) + shared.failed.load(Relaxed) < config.clients
        && Instant::now() < warm_deadline
    {
        for (id, outbox) in outboxes.iter().enumerate().take(2 * config.rooms) {
            let _ = outbox.try_send(Outbound::Text(marker::probe(id, probe)));
        }
        probe += 1;
        report_progress(Stage::WarmingUp, &shared);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = shared.ready.load(Relaxed);
    // Settle: no message at all for 300 ms (at most 5 s).
    let settle_deadline = (Instant::now() + Duration::from_secs(5)).min(deadline);
    let (mut last_count, mut last_change) = (shared.received_any.load(Relaxed), Instant::now());
    while Instant::now() < settle_deadline && last_change.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let count = shared.received_any.load(Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
    }
    let warmup_s = t0.elapsed().as_secs_f64();

    // 4. Stall: the stalled members stop reading before anything is measured
    // (waited for, at most 2 s).
    if config.stall > 0 {
        let _ = phase_tx.send(Phase::Stall);
        let until = Instant::now() + Duration::from_secs(2);
        while shared.stalled.load(Relaxed) < config.stall && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // 5. Load.
    let server_pid = config.server_pid.map(|p| p.to_string());
    let cpu_before = (
        server_pid.as_deref().and_then(procfs::cpu_s),
        procfs::cpu_s("self"),
    );
    let senders: Vec<_> = outboxes
        .iter()
        .take(config.senders)
        .enumerate()
        .map(|(id, outbox)| {
            tokio::spawn(send(
                id,
                outbox.clone(),
                shared.clone(),
                config.payload,
                config.rate,
            ))
        })
        .collect();

    // 6. Drain.
    let timed_out = loop {
        report_progress(Stage::Load, &shared);
        let tick = Instant::now() + Duration::from_millis(100);
        let mut outcome = None;
        while outcome.is_none() && Instant::now() < tick {
            tokio::time::sleep(Duration::from_millis(5)).await;
            outcome = finished(&shared, expected, config.drain, deadline);
        }
        if let Some(timed_out) = outcome {
            break timed_out;
        }
    };
    let cpu_after = (
        server_pid.as_deref().and_then(procfs::cpu_s),
        procfs::cpu_s("self"),
    );
    let difference = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    report_progress(Stage::Finishing, &shared);

    // 7. Stop the members and sum their figures (stalled ones take < 1.3 s
    // to look at their calls; nobody gets more than 3 s).
    let _ = phase_tx.send(Phase::Stop);
    for sender in &senders {
        sender.abort();
    }
    let mut total = Totals::default();
    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for member in members {
        match tokio::time::timeout_at(collect_deadline, member).await {
            Ok(Ok(stats)) => total.add(stats),
            Ok(Err(_)) | Err(_) => total.uncollected += 1,
        }
    }
    if total.uncollected > 0 {
        tracing::warn!(members = total.uncollected, "members did not stop in time");
    }

    let mut histogram = latency_histogram();
    for shard in &shared.histograms {
        // Cannot fail: every shard has the same bounds as `histogram`.
        let _ = histogram.add(&*shard.lock());
    }
    let quantile = |q: f64| {
        if histogram.is_empty() {
            0
        } else {
            histogram.value_at_quantile(q)
        }
    };
    let first = shared.first_send_ns.load(Relaxed);
    let last = shared.last_delivery_ns.load(Relaxed);
    let seconds = |from: u64, to: u64| {
        if from == u64::MAX || to <= from {
            0.0
        } else {
            (to - from) as f64 / 1e9
        }
    };
    let vm = |key| {
        config
            .server_pid
            .and_then(|pid| procfs::status_kb(pid, key))
    };
    let per_room = if config.rooms > 1 {
        expected_per_room
            .iter()
            .enumerate()
            .map(|(room, &expected)| RoomFigures {
                name: config.room_name(room).unwrap_or_default(),
                expected,
                delivered: shared.per_room[room].load(Relaxed),
            })
            .collect()
    } else {
        Vec::new()
    };
    let per_server = shared
        .per_server
        .iter()
        .enumerate()
        .map(|(server, (delivered, histogram))| {
            let histogram = histogram.lock();
            let at = |q| {
                if histogram.is_empty() {
                    0
                } else {
                    histogram.value_at_quantile(q)
                }
            };
            ServerFigures {
                addr: config.addrs[server].clone(),
                members: (0..config.clients)
                    .filter(|&m| config.server_of(m) == server)
                    .count(),
                delivered: delivered.load(Relaxed),
                latency_us: [at(0.5), at(0.99)],
            }
        })
        .collect();
    Ok(Report {
        per_room,
        per_server,
        label: config.label.clone(),
        protocol: config.protocol,
        clients: config.clients,
        conns,
        senders: config.senders,
        messages: config.messages,
        payload: config.payload,
        rate: config.rate,
        stalled: config.stall,
        sent: shared.sent.load(Relaxed),
        expected,
        delivered: shared.delivered.load(Relaxed),
        dups: total.stats.dups,
        echoes: total.stats.echoes,
        foreign: total.stats.foreign,
        replayed: total.stats.replayed,
        events: total.stats.events,
        stream_errors: total.errors,
        first_error: total.stats.error,
        ready,
        warmup_s,
        send_s: seconds(first, shared.last_send_ns.load(Relaxed)),
        elapsed_s: seconds(first, last),
        fanout: Fanout::from_latencies_ns(
            shared
                .fanout
                .iter()
                .map(|[first, last]| (first.load(Relaxed), last.load(Relaxed))),
        ),
        latency_us: [
            quantile(0.5),
            quantile(0.9),
            quantile(0.99),
            quantile(0.999),
            histogram.max(),
        ],
        timed_out,
        stalled_disconnected: total.stalled_disconnected,
        first_stall_end: total.stats.stall_end,
        server_vmhwm_kb: vm("VmHWM"),
        server_vmrss_kb: vm("VmRSS"),
        server_cpu_s: difference(cpu_before.0, cpu_after.0),
        load_cpu_s: difference(cpu_before.1, cpu_after.1),
    })
}

/// The members' figures summed; `stats.error` and `stats.stall_end` hold the
/// first of each.
#[derive(Default)]
struct Totals {
    stats: MemberStats,
    errors: usize,
    stalled_disconnected: usize,
    uncollected: usize,
}

impl Totals {
    fn add(&mut self, member: MemberStats) {
        self.stats.echoes += member.echoes;
        self.stats.dups += member.dups;
        self.stats.foreign += member.foreign;
        self.stats.replayed += member.replayed;
        self.stats.events += member.events;
        if let Some(error) = member.error {
            self.errors += 1;
            self.stats.error.get_or_insert(error);
        }
        if let Some(end) = member.stall_end {
            self.stalled_disconnected += 1;
            self.stats.stall_end.get_or_insert(end);
        }
    }
}

/// Whether the load phase is over: `Some(false)` when every delivery (and
/// every echo the protocol sends back) arrived or nothing arrived for `drain`
/// after the senders finished, `Some(true)` at the deadline, `None` while it
/// goes on.
fn finished(shared: &Shared, expected: u64, drain: Duration, deadline: Instant) -> Option<bool> {
    if shared.delivered.load(Relaxed) >= expected
        && shared.echoes.load(Relaxed) >= shared.echoes_expected
    {
        return Some(false);
    }
    if Instant::now() >= deadline {
        return Some(true);
    }
    if shared.senders_done.load(Relaxed) == shared.senders {
        let quiet_since = shared
            .last_delivery_ns
            .load(Relaxed)
            .max(shared.last_send_ns.load(Relaxed));
        let drain_ns = u64::try_from(drain.as_nanos()).unwrap_or(u64::MAX);
        if shared.now_ns().saturating_sub(quiet_since) > drain_ns {
            return Some(false);
        }
    }
    None
}

/// Sender `id`: M marked messages into its outbox, paced at `rate` per
/// second (0: as fast as the outbox takes them). The clock is read just
/// before the message is handed over.
async fn send(
    id: usize,
    outbox: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
    payload: usize,
    rate: f64,
) {
    let start = tokio::time::Instant::now();
    for seq in 0..shared.messages {
        if rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(seq as f64 / rate)).await;
        }
        let sent_ns = shared.now_ns();
        shared.first_send_ns.fetch_min(sent_ns, Relaxed);
        let text = marker::data(id, seq, sent_ns, payload);
        if outbox.send(Outbound::Text(text)).await.is_err() {
            break; // the member is gone; its reader reports why
        }
        shared.sent.fetch_add(1, Relaxed);
        shared.last_send_ns.fetch_max(shared.now_ns(), Relaxed);
    }
    shared.senders_done.fetch_add(1, Relaxed);
}
