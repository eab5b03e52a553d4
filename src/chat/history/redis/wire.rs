//! The bytes a batch travels in between servers (the published payload)
//! and the replies of the page script: pure parsing, bytes in, values out.

use super::*;

// ---------------------------------------------------------------------------
// The payload of a published batch.
//
// ```text
// "<first id> <epoch> <WireBatch, protobuf>"
// ```
//
// The first id and the epoch are written by the script (the sender cannot
// know them); the rest is the sender's, passed through as bytes.

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct WireBatch {
    #[prost(string, tag = "1")]
    pub(super) room: String,
    #[prost(uint64, tag = "2")]
    pub(super) origin: u64,
    #[prost(uint64, tag = "3")]
    pub(super) sender: u64,
    #[prost(string, tag = "4")]
    pub(super) user: String,
    #[prost(int64, tag = "5")]
    pub(super) timestamp: i64,
    #[prost(message, repeated, tag = "6")]
    pub(super) events: Vec<WireEvent>,
    /// Delivered by its origin while Redis was down.
    #[prost(bool, tag = "7")]
    pub(super) flushed: bool,
    /// For flushed batches: the id of the first message, as delivered.
    #[prost(uint64, tag = "8")]
    pub(super) first_id: u64,
    /// The origin's own number for the batch.
    #[prost(uint64, tag = "9")]
    pub(super) seq_no: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct WireEvent {
    /// 1 message, 2 typing started, 3 typing stopped, 4 joined, 5 left.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    text: String,
}

pub(super) fn to_wire(events: &[Event]) -> Vec<WireEvent> {
    events
        .iter()
        .map(|e| match e {
            Event::Message { text } => WireEvent {
                kind: 1,
                text: text.clone(),
            },
            Event::Typing { started } => WireEvent {
                kind: if *started { 2 } else { 3 },
                text: String::new(),
            },
            Event::Joined => WireEvent {
                kind: 4,
                text: String::new(),
            },
            Event::Left => WireEvent {
                kind: 5,
                text: String::new(),
            },
        })
        .collect()
}

pub(super) fn from_wire(events: Vec<WireEvent>) -> Vec<Event> {
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            1 => Some(Event::Message { text: e.text }),
            2 => Some(Event::Typing { started: true }),
            3 => Some(Event::Typing { started: false }),
            4 => Some(Event::Joined),
            5 => Some(Event::Left),
            // A newer server's event kind: skipped rather than misread.
            _ => None,
        })
        .collect()
}

/// Parses a published payload. Pure: bytes in, batch out.
pub(super) fn parse_published(payload: &[u8]) -> Result<(Sequenced, u64), String> {
    let mut parts = payload.splitn(3, |&b| b == b' ');
    let (Some(first), Some(epoch), Some(blob)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("payload without id and epoch".into());
    };
    let first: u64 = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("payload id is not a number")?;
    let epoch = std::str::from_utf8(epoch)
        .map_err(|_| "payload epoch is not text")?
        .to_owned();
    let wire = WireBatch::decode(blob).map_err(|e| format!("payload batch: {e}"))?;
    // A flushed batch's prefix is the first id history gave it (the flush
    // script keeps the ids it was delivered with when they are free, else
    // gives the batch new ones after the room's last); 0 from a server
    // that does not say.
    let first_id = if wire.flushed && first == 0 {
        wire.first_id
    } else {
        first
    };
    Ok((
        Sequenced {
            room: wire.room,
            origin: wire.origin,
            sender: wire.sender,
            user: wire.user,
            timestamp: wire.timestamp,
            first_id,
            epoch,
            events: from_wire(wire.events),
            flushed: wire.flushed,
        },
        wire.seq_no,
    ))
}

/// Parses the page script's reply `{epoch, head, entries newest first}`.
pub(super) fn parse_page(value: Value) -> Result<Page, String> {
    let Value::Array(mut parts) = value else {
        return Err(format!("page reply is not an array: {value:?}"));
    };
    if parts.len() != 3 {
        return Err(format!("page reply has {} parts, not 3", parts.len()));
    }
    let entries = parts.pop().unwrap_or(Value::Nil);
    let head = match parts.pop() {
        Some(Value::Int(n)) => u64::try_from(n).map_err(|_| "negative head id")?,
        other => return Err(format!("page head is not a number: {other:?}")),
    };
    let epoch = match parts.pop() {
        Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| "epoch is not text")?,
        Some(Value::SimpleString(s)) => s,
        other => return Err(format!("page epoch is not text: {other:?}")),
    };
    let entries = match entries {
        Value::Array(entries) => entries,
        Value::Nil => Vec::new(),
        other => return Err(format!("page entries are not an array: {other:?}")),
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries.into_iter().rev() {
        messages.push(parse_entry(entry)?);
    }
    Ok(Page {
        epoch,
        head,
        messages,
    })
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One stream entry: `["<id>-0", [field, value, ...]]`.
pub(super) fn parse_entry(entry: Value) -> Result<StoredMessage, String> {
    parse_entry_from(entry).map(|(message, _)| message)
}

/// What a repair read returns: the room's epoch, and each message with
/// where it came from.
pub(super) type Gap = (String, Vec<(StoredMessage, Written)>);

/// Who wrote a stream entry, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Written {
    /// The server (field `n`).
    pub(super) by: Option<u64>,
    /// From its outage queue (field `f`): its members had it from it, under
    /// the id it gave then.
    pub(super) flushed: bool,
}

/// The gap script's reply `{epoch, entries oldest first}`: each message
/// with the server that wrote it (field `n`).
pub(super) fn parse_gap(value: Value) -> Result<Gap, String> {
    let Value::Array(mut parts) = value else {
        return Err(format!("gap reply is not an array: {value:?}"));
    };
    let entries = match parts.pop() {
        Some(Value::Array(entries)) => entries,
        Some(Value::Nil) | None => Vec::new(),
        Some(other) => return Err(format!("gap entries are not an array: {other:?}")),
    };
    let epoch = parts.pop().as_ref().and_then(text).unwrap_or_default();
    let messages = entries
        .into_iter()
        .map(parse_entry_from)
        .collect::<Result<Vec<_>, String>>()?;
    Ok((epoch, messages))
}

/// One stream entry, and who wrote it.
fn parse_entry_from(entry: Value) -> Result<(StoredMessage, Written), String> {
    let Value::Array(parts) = entry else {
        return Err("stream entry is not an array".into());
    };
    let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
        return Err("stream entry without id and fields".into());
    };
    let id = text(id).ok_or("stream entry id is not text")?;
    let id: u64 = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| format!("stream entry id {id:?}"))?;
    let mut message = StoredMessage {
        id,
        user: String::new(),
        text: String::new(),
        timestamp: 0,
    };
    let mut written = Written::default();
    for pair in fields.chunks(2) {
        let (Some(key), Some(value)) = (pair.first().and_then(text), pair.get(1).and_then(text))
        else {
            continue;
        };
        match key.as_str() {
            "u" => message.user = value,
            "t" => message.text = value,
            "ts" => message.timestamp = value.parse().unwrap_or(0),
            "n" => written.by = value.parse().ok(),
            "f" => written.flushed = value == "1",
            _ => {}
        }
    }
    Ok((message, written))
}

// ---------------------------------------------------------------------------
// The subscriber: every server's one way in for sequenced batches.

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn published_batches_round_trip() {
        let wire = WireBatch {
            room: "lobby".into(),
            origin: 7,
            sender: 3,
            user: "ann".into(),
            timestamp: 1_700_000_000,
            events: to_wire(&[
                Event::Typing { started: false },
                Event::Message {
                    text: "hi there".into(),
                },
                Event::Message {
                    text: "again".into(),
                },
                Event::Left,
            ]),
            flushed: false,
            first_id: 0,
            seq_no: 12,
        };
        // What the script publishes: "<first id> <epoch> <batch>".
        let mut payload = b"41 00aa11bb22cc33dd ".to_vec();
        payload.extend(wire.encode_to_vec());
        let (batch, seq_no) = parse_published(&payload).unwrap();
        assert_eq!(seq_no, 12);
        assert_eq!(
            (batch.first_id, batch.epoch.as_str()),
            (41, "00aa11bb22cc33dd")
        );
        assert_eq!(
            (batch.origin, batch.sender, batch.user.as_str()),
            (7, 3, "ann")
        );
        assert_eq!(batch.events.len(), 4);
        assert!(matches!(&batch.events[1], Event::Message { text } if text == "hi there"));
        assert!(matches!(batch.events[3], Event::Left));

        // A flushed batch keeps the ids it was delivered with.
        let flushed = WireBatch {
            flushed: true,
            first_id: 9,
            ..wire
        };
        let mut payload = b"0 e1 ".to_vec();
        payload.extend(flushed.encode_to_vec());
        let (batch, _) = parse_published(&payload).unwrap();
        assert!(batch.flushed);
        assert_eq!(batch.first_id, 9);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(parse_published(b"").is_err());
        assert!(parse_published(b"12 only").is_err());
        assert!(parse_published(b"x e \x08\x01").is_err());
        // A truncated protobuf.
        assert!(parse_published(b"1 e \x0a\x10ab").is_err());
    }

    #[test]
    fn pages_parse_newest_first_into_oldest_first() {
        let entry = |id: &str, text: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![
                    bulk("u"),
                    bulk("ann"),
                    bulk("t"),
                    bulk(text),
                    bulk("ts"),
                    bulk("17"),
                    bulk("n"),
                    bulk("99"),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            bulk("ep"),
            Value::Int(12),
            Value::Array(vec![entry("12-0", "c"), entry("11-0", "b")]),
        ]);
        let page = parse_page(reply).unwrap();
        assert_eq!(page.epoch, "ep");
        assert_eq!(page.head, 12);
        let got: Vec<(u64, &str)> = page
            .messages
            .iter()
            .map(|m| (m.id, m.text.as_str()))
            .collect();
        assert_eq!(got, vec![(11, "b"), (12, "c")]);
        assert_eq!(page.messages[0].timestamp, 17);

        let empty = Value::Array(vec![bulk("ep"), Value::Int(0), Value::Array(vec![])]);
        assert!(parse_page(empty).unwrap().messages.is_empty());
        assert!(parse_page(Value::Int(3)).is_err());
        assert!(parse_page(Value::Array(vec![bulk("ep"), Value::Int(-1), Value::Nil])).is_err());
    }
}
