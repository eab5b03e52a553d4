//! What a chat-bench run found, and its two renderings: a summary table for
//! people and one JSON line for scripts.
//!
//! The JSON field names of the figures that `chatload` (`../shared/bench`)
//! also reports are the same as its own (`delivered`, `lost`, `p99_us`,
//! `server_vmhwm_kb`, ...), so one script can read both tools' lines.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::Protocol;

/// How the measured messages spread over their receivers.
///
/// The latency percentiles of a [`Report`] are taken over deliveries; these
/// are taken over messages. For each message, the first and the last of its
/// deliveries are what count, and the time between them is how long the
/// server (and the receiving side) took to fan that one message out. In a
/// room of 100 members, a delivery latency's p99 is mostly the last
/// deliveries of each message: its `last_us` and `spread_us` say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Messages delivered to at least one member.
    pub messages: u64,
    /// Latency of each message's first delivery, µs: p50, p99.
    pub first_us: [u64; 2],
    /// Latency of each message's last delivery, µs: p50, p99.
    pub last_us: [u64; 2],
    /// Last minus first delivery of each message, µs: p50, p99.
    pub spread_us: [u64; 2],
}

impl Fanout {
    /// Summarises `(first, last)` delivery latencies in nanoseconds, one pair
    /// per message; `None` when no pair has a delivery (`first > last`, as
    /// for a message nobody received, is skipped).
    pub fn from_latencies_ns(pairs: impl IntoIterator<Item = (u64, u64)>) -> Option<Fanout> {
        let mut first = latency_histogram();
        let mut last = latency_histogram();
        let mut spread = latency_histogram();
        let mut messages = 0;
        for (lo, hi) in pairs {
            if lo > hi {
                continue;
            }
            messages += 1;
            first.saturating_record((lo / 1000).max(1));
            last.saturating_record((hi / 1000).max(1));
            spread.saturating_record(((hi - lo) / 1000).max(1));
        }
        let pair = |h: &Histogram<u64>| [h.value_at_quantile(0.5), h.value_at_quantile(0.99)];
        (messages > 0).then(|| Fanout {
            messages,
            first_us: pair(&first),
            last_us: pair(&last),
            spread_us: pair(&spread),
        })
    }
}

/// Largest latency the histograms hold, µs (larger values are clamped to it).
pub(crate) const MAX_LATENCY_US: u64 = 120_000_000;

/// An empty latency histogram, µs, 3 significant figures.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Cannot fail: 1 <= low, high >= 2 * low, 3 significant figures is in 0..=5.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!())
}

/// One room's figures, in a run over several rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomFigures {
    /// The room's name.
    pub name: String,
    /// Deliveries expected in it.
    pub expected: u64,
    /// Distinct measured deliveries in it.
    pub delivered: u64,
}

/// One server's figures, in a run over several servers: what its members
/// received, wherever it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFigures {
    /// Its address.
    pub addr: String,
    /// Members connected to it.
    pub members: usize,
    /// Distinct measured deliveries to its members.
    pub delivered: u64,
    /// Their latency, p50 and p99, µs.
    pub latency_us: [u64; 2],
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per room, when the run had more than one (else empty).
    pub per_room: Vec<RoomFigures>,
    /// Per server, when the run had more than one (else empty).
    pub per_server: Vec<ServerFigures>,
    /// Free text naming the run (`--label`).
    pub label: String,
    /// Which RPC the members used.
    pub protocol: Protocol,
    /// Members.
    pub clients: usize,
    /// HTTP/2 connections the members shared.
    pub conns: usize,
    /// Members that sent measured messages.
    pub senders: usize,
    /// Measured messages per sender.
    pub messages: usize,
    /// Bytes of message text.
    pub payload: usize,
    /// Messages per second per sender (0: as fast as the server accepts).
    pub rate: f64,
    /// Members that stopped reading after the warm-up.
    pub stalled: usize,
    /// Measured messages handed to the calls.
    pub sent: u64,
    /// Deliveries expected: every measured message to every reading member
    /// but its sender.
    pub expected: u64,
    /// Distinct measured messages received by members other than their sender.
    pub delivered: u64,
    /// Measured messages received again by the same member.
    pub dups: u64,
    /// Members' own measured messages sent back to them (the `Chat` echo).
    pub echoes: u64,
    /// Chat texts without a marker of this run.
    pub foreign: u64,
    /// Chat messages replayed from the room's history on joining: earlier
    /// traffic, not counted (not as deliveries, nor as duplicates).
    pub replayed: u64,
    /// Other events received (`Chat`: notices, joins, leaves, typing).
    pub events: u64,
    /// Members whose call failed (stalled members not included).
    pub stream_errors: usize,
    /// The first such failure.
    pub first_error: Option<String>,
    /// Members that heard another member during the warm-up.
    pub ready: usize,
    /// Seconds from start to the end of the warm-up.
    pub warmup_s: f64,
    /// Seconds from the first to the last measured send.
    pub send_s: f64,
    /// Seconds from the first measured send to the last delivery.
    pub elapsed_s: f64,
    /// Latency percentiles and maximum, µs: 50, 90, 99, 99.9, 100.
    pub latency_us: [u64; 5],
    /// Per message: first and last delivery, and the spread between them
    /// (`None` when the run had too many messages to track one by one, or
    /// none arrived).
    pub fanout: Option<Fanout>,
    /// The run hit `--timeout-s` before every delivery arrived.
    pub timed_out: bool,
    /// Stalled members whose call the server ended.
    pub stalled_disconnected: usize,
    /// How the first of them ended.
    pub first_stall_end: Option<String>,
    /// The server's peak resident set (VmHWM, whole lifetime), kB.
    pub server_vmhwm_kb: Option<u64>,
    /// The server's resident set at the end, kB.
    pub server_vmrss_kb: Option<u64>,
    /// The server's CPU seconds (user + system) over the load phase.
    pub server_cpu_s: Option<f64>,
    /// chat-bench's own CPU seconds over the load phase.
    pub load_cpu_s: Option<f64>,
}

impl Report {
    /// Expected deliveries that did not arrive.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Delivered messages per second of `elapsed_s`.
    pub fn deliveries_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.delivered as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Server CPU seconds per million deliveries.
    pub fn server_cpu_s_per_million(&self) -> Option<f64> {
        let cpu = self.server_cpu_s?;
        (self.delivered > 0).then(|| cpu * 1e6 / self.delivered as f64)
    }

    /// One JSON object on one line. Fields are only ever added, at the end.
    pub fn to_json(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency_us;
        let mut fields: Vec<(&str, String)> = vec![
            ("label", json_string(&self.label)),
            ("protocol", json_string(self.protocol.as_str())),
            ("clients", self.clients.to_string()),
            ("conns", self.conns.to_string()),
            ("senders", self.senders.to_string()),
            ("messages", self.messages.to_string()),
            ("payload", self.payload.to_string()),
            ("rate", json_f64(self.rate, 3)),
            ("sent", self.sent.to_string()),
            ("expected", self.expected.to_string()),
            ("delivered", self.delivered.to_string()),
            ("lost", self.lost().to_string()),
            ("echoes", self.echoes.to_string()),
            ("dups", self.dups.to_string()),
            ("foreign", self.foreign.to_string()),
            ("replayed", self.replayed.to_string()),
            ("events", self.events.to_string()),
            ("stream_errors", self.stream_errors.to_string()),
            (
                "first_error",
                json_option_string(self.first_error.as_deref()),
            ),
            ("ready", self.ready.to_string()),
            ("warmup_s", json_f64(self.warmup_s, 3)),
            ("send_s", json_f64(self.send_s, 3)),
            ("elapsed_s", json_f64(self.elapsed_s, 3)),
            ("deliveries_per_s", json_f64(self.deliveries_per_s(), 0)),
            ("p50_us", p50.to_string()),
            ("p90_us", p90.to_string()),
            ("p99_us", p99.to_string()),
            ("p999_us", p999.to_string()),
            ("max_us", max.to_string()),
            ("timed_out", self.timed_out.to_string()),
            ("stalled", self.stalled.to_string()),
            (
                "stalled_disconnected",
                self.stalled_disconnected.to_string(),
            ),
            (
                "first_stall_end",
                json_option_string(self.first_stall_end.as_deref()),
            ),
            ("server_vmhwm_kb", json_option(self.server_vmhwm_kb)),
            ("server_vmrss_kb", json_option(self.server_vmrss_kb)),
            (
                "server_cpu_s",
                self.server_cpu_s.map_or("null".into(), |v| json_f64(v, 2)),
            ),
            (
                "server_cpu_s_per_m",
                self.server_cpu_s_per_million()
                    .map_or("null".into(), |v| json_f64(v, 3)),
            ),
            (
                "load_cpu_s",
                self.load_cpu_s.map_or("null".into(), |v| json_f64(v, 2)),
            ),
        ];
        let fanout = |pick: fn(&Fanout) -> u64| json_option(self.fanout.as_ref().map(pick));
        fields.extend([
            ("fanout_first_p50_us", fanout(|f| f.first_us[0])),
            ("fanout_first_p99_us", fanout(|f| f.first_us[1])),
            ("fanout_last_p50_us", fanout(|f| f.last_us[0])),
            ("fanout_last_p99_us", fanout(|f| f.last_us[1])),
            ("fanout_spread_p50_us", fanout(|f| f.spread_us[0])),
            ("fanout_spread_p99_us", fanout(|f| f.spread_us[1])),
        ]);
        let list = |values: Vec<u64>| {
            let items: Vec<String> = values.iter().map(u64::to_string).collect();
            format!("[{}]", items.join(","))
        };
        let room = |pick: fn(&RoomFigures) -> u64| list(self.per_room.iter().map(pick).collect());
        let server =
            |pick: fn(&ServerFigures) -> u64| list(self.per_server.iter().map(pick).collect());
        let addrs: Vec<String> = self
            .per_server
            .iter()
            .map(|s| json_string(&s.addr))
            .collect();
        fields.extend([
            ("rooms", self.per_room.len().max(1).to_string()),
            ("per_room_expected", room(|r| r.expected)),
            ("per_room_delivered", room(|r| r.delivered)),
            ("servers", format!("[{}]", addrs.join(","))),
            ("per_server_delivered", server(|s| s.delivered)),
            ("per_server_p50_us", server(|s| s.latency_us[0])),
            ("per_server_p99_us", server(|s| s.latency_us[1])),
        ]);
        let body: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("\"{key}\":{value}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// The summary table, several lines, for a terminal.
    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        let [p50, p90, p99, p999, max] = self.latency_us;
        let rate = if self.rate > 0.0 {
            format!("{} msg/s per sender", self.rate)
        } else {
            "unpaced".to_owned()
        };
        let lost_pct = if self.expected > 0 {
            self.lost() as f64 * 100.0 / self.expected as f64
        } else {
            0.0
        };
        let mut rows: Vec<(&str, String)> = vec![
            (
                "run",
                format!(
                    "{} C={} ({} conns) S={} M={} payload {} B, {rate}",
                    self.protocol.as_str(),
                    self.clients,
                    self.conns,
                    self.senders,
                    self.messages,
                    self.payload
                ),
            ),
            (
                "warm-up",
                format!(
                    "{:.3} s, {}/{} members ready",
                    self.warmup_s, self.ready, self.clients
                ),
            ),
            (
                "delivered",
                format!("{} / {} expected", self.delivered, self.expected),
            ),
            ("lost", format!("{} ({lost_pct:.2} %)", self.lost())),
            ("duplicated", self.dups.to_string()),
            ("echoes (not counted)", self.echoes.to_string()),
            (
                "elapsed",
                format!(
                    "{:.3} s (sending {:.3} s){}",
                    self.elapsed_s,
                    self.send_s,
                    if self.timed_out { ", TIMED OUT" } else { "" }
                ),
            ),
            ("deliveries/s", format!("{:.0}", self.deliveries_per_s())),
            (
                "latency ms",
                format!(
                    "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    ms(p999),
                    ms(max)
                ),
            ),
        ];
        if let Some(f) = &self.fanout {
            rows.push((
                "per message, ms",
                format!(
                    "first delivery p50 {} · p99 {}; last p50 {} · p99 {}; spread p50 {} · p99 {}",
                    ms(f.first_us[0]),
                    ms(f.first_us[1]),
                    ms(f.last_us[0]),
                    ms(f.last_us[1]),
                    ms(f.spread_us[0]),
                    ms(f.spread_us[1]),
                ),
            ));
        }
        if self.foreign + self.events + self.replayed > 0 {
            rows.push((
                "other traffic",
                format!(
                    "{} foreign texts, {} events, {} replayed from history (not counted)",
                    self.foreign, self.events, self.replayed
                ),
            ));
        }
        for room in &self.per_room {
            rows.push((
                "room",
                format!(
                    "{}: {} / {} delivered",
                    room.name, room.delivered, room.expected
                ),
            ));
        }
        for server in &self.per_server {
            rows.push((
                "server",
                format!(
                    "{}: {} members, {} delivered to them, latency ms p50 {} · p99 {}",
                    server.addr,
                    server.members,
                    server.delivered,
                    ms(server.latency_us[0]),
                    ms(server.latency_us[1])
                ),
            ));
        }
        if self.stream_errors > 0 {
            rows.push((
                "call errors",
                format!(
                    "{} (first: {})",
                    self.stream_errors,
                    self.first_error.as_deref().unwrap_or("?")
                ),
            ));
        }
        if self.stalled > 0 {
            rows.push((
                "stalled members",
                format!(
                    "{}, {} disconnected by the server{}",
                    self.stalled,
                    self.stalled_disconnected,
                    self.first_stall_end
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(cpu) = self.server_cpu_s {
            let per_m = self
                .server_cpu_s_per_million()
                .map(|v| format!(", {v:.3} s per M deliveries"))
                .unwrap_or_default();
            rows.push(("server CPU", format!("{cpu:.2} s{per_m}")));
        }
        if let Some(kb) = self.server_vmhwm_kb {
            rows.push(("server peak RSS", format!("{:.1} MiB", kb as f64 / 1024.0)));
        }
        if let Some(cpu) = self.load_cpu_s {
            rows.push(("chat-bench CPU", format!("{cpu:.2} s")));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        if !self.label.is_empty() {
            let _ = writeln!(out, "{}", self.label);
        }
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        out
    }
}

fn json_f64(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "null".into()
    }
}

fn json_option(v: Option<u64>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

fn json_option_string(v: Option<&str>) -> String {
    v.map_or("null".into(), json_string)
}

/// A JSON string literal (RFC 8259 section 7: quote, backslash and control
/// characters escaped).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            per_room: Vec::new(),
            per_server: Vec::new(),
            label: "a \"b\"\n".into(),
            protocol: Protocol::Chat,
            clients: 3,
            conns: 3,
            senders: 1,
            messages: 10,
            payload: 64,
            rate: 0.0,
            stalled: 0,
            sent: 10,
            expected: 20,
            delivered: 18,
            dups: 1,
            echoes: 10,
            foreign: 0,
            replayed: 0,
            events: 4,
            stream_errors: 0,
            first_error: None,
            ready: 3,
            warmup_s: 0.5,
            send_s: 0.01,
            elapsed_s: 0.5,
            latency_us: [100, 200, 300, 400, 500],
            fanout: None,
            timed_out: false,
            stalled_disconnected: 0,
            first_stall_end: None,
            server_vmhwm_kb: Some(2048),
            server_vmrss_kb: None,
            server_cpu_s: Some(0.09),
            load_cpu_s: None,
        }
    }

    #[test]
    fn json_fields() {
        let json = report().to_json();
        assert!(
            json.starts_with("{\"label\":\"a \\\"b\\\"\\u000a\","),
            "{json}"
        );
        for field in [
            "\"protocol\":\"chat\"",
            "\"lost\":2",
            "\"dups\":1",
            "\"deliveries_per_s\":36",
            "\"first_error\":null",
            "\"server_vmrss_kb\":null",
            "\"server_cpu_s_per_m\":5000.000",
            "\"fanout_spread_p99_us\":null",
        ] {
            assert!(json.contains(field), "{field} in {json}");
        }
    }

    #[test]
    fn fanout_is_over_messages_not_deliveries() {
        // Three messages: first delivery after 100, 200 and 300 µs; last
        // after 1.0, 1.5 and 2.0 ms (below 2048 µs the histograms are exact
        // to the µs). A fourth was never delivered (first > last).
        let pairs = [
            (100_000, 1_000_000),
            (200_000, 1_500_000),
            (300_000, 2_000_000),
            (u64::MAX, 0),
        ];
        let f = Fanout::from_latencies_ns(pairs).expect("three messages arrived");
        assert_eq!(f.messages, 3);
        assert_eq!(f.first_us, [200, 300]);
        assert_eq!(f.last_us, [1500, 2000]);
        // Spreads of 900, 1300 and 1700 µs.
        assert_eq!(f.spread_us, [1300, 1700]);
        assert_eq!(Fanout::from_latencies_ns([(u64::MAX, 0)]), None);

        let mut r = report();
        r.fanout = Some(f);
        let json = r.to_json();
        assert!(
            json.contains("\"fanout_spread_p50_us\":1300,\"fanout_spread_p99_us\":1700,"),
            "{json}"
        );
        // Fields are only added at the end: the per-room and per-server ones
        // came last.
        assert!(json.ends_with("\"per_server_p99_us\":[]}"), "{json}");
        let table = r.table();
        assert!(table.contains("spread p50 1.30 · p99 1.70"), "{table}");
    }

    #[test]
    fn table_mentions_the_figures() {
        let table = report().table();
        assert!(table.contains("18 / 20 expected"), "{table}");
        assert!(table.contains("2 (10.00 %)"), "{table}");
        assert!(table.contains("server peak RSS"), "{table}");
        assert!(!table.contains("stalled"), "{table}");
    }
}
