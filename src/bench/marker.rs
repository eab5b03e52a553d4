//! The marker chat-bench writes into every message text, and reads back.
//!
//! The chat protocols carry free text and nothing else a benchmark could use
//! to recognise its own messages (a server may renumber, restamp or rename),
//! so everything chat-bench needs travels in the text itself, after a tag:
//!
//! ```text
//! ~cl~J|7                          member 7 joined (ChatStream only)
//! ~cl~P|1|42                       warm-up probe 42 from member 1
//! ~cl~M|3|118|2048551234|xxxxxx    member 3's message 118, sent at 2048551234 ns
//!      ^ kind, then fields split by '|'; padding up to --payload bytes
//! ```
//!
//! The tag is searched for anywhere in the text, so a server may prefix or
//! wrap the text. It is the same tag and layout as the independent yardstick
//! `chatload` (`../shared/bench`) uses: the two tools measure the same thing
//! the same way, so their figures can be compared row by row.
//!
//! Pure: strings in, strings out.

/// Starts every marker.
pub const TAG: &str = "~cl~";

/// What a marked message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// The member announced itself (first message on `ChatStream`).
    Join {
        /// The member that joined.
        member: usize,
    },
    /// A warm-up probe, sent until every member has heard someone.
    Probe {
        /// The member that probed.
        member: usize,
    },
    /// A measured message.
    Data {
        /// The sending member.
        sender: usize,
        /// Position in the sender's sequence, from 0.
        seq: usize,
        /// The benchmark clock when the message was handed to the stream.
        sent_ns: u64,
    },
}

impl Marker {
    /// The member that sent the marked message.
    pub fn from(&self) -> usize {
        match *self {
            Marker::Join { member } | Marker::Probe { member } => member,
            Marker::Data { sender, .. } => sender,
        }
    }
}

/// The text of member `member`'s join message.
pub fn join(member: usize) -> String {
    format!("{TAG}J|{member}")
}

/// The text of probe number `n` from `member`.
pub fn probe(member: usize, n: u64) -> String {
    format!("{TAG}P|{member}|{n}")
}

/// The text of a measured message, padded with `x` to at least `payload`
/// bytes (a marker longer than `payload` is sent unpadded).
pub fn data(sender: usize, seq: usize, sent_ns: u64, payload: usize) -> String {
    let mut text = format!("{TAG}M|{sender}|{seq}|{sent_ns}|");
    if text.len() < payload {
        let pad = payload - text.len();
        text.extend(std::iter::repeat_n('x', pad));
    }
    text
}

/// The marker in `text`, if there is a well-formed one. Anything else
/// (another client's chat, a server notice, a malformed field) is `None`.
pub fn parse(text: &str) -> Option<Marker> {
    let at = text.find(TAG)? + TAG.len();
    let mut fields = text[at..].split('|');
    let kind = fields.next()?;
    let member: usize = fields.next()?.parse().ok()?;
    match kind {
        "J" => Some(Marker::Join { member }),
        "P" => Some(Marker::Probe { member }),
        "M" => Some(Marker::Data {
            sender: member,
            seq: fields.next()?.parse().ok()?,
            sent_ns: fields.next()?.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse(&join(7)), Some(Marker::Join { member: 7 }));
        assert_eq!(parse(&probe(1, 42)), Some(Marker::Probe { member: 1 }));
        let text = data(3, 118, 2_048_551_234, 64);
        assert_eq!(text.len(), 64);
        assert_eq!(
            parse(&text),
            Some(Marker::Data {
                sender: 3,
                seq: 118,
                sent_ns: 2_048_551_234
            })
        );
    }

    #[test]
    fn short_payload_is_not_truncated() {
        // The marker itself is longer than 4 bytes: it is sent whole.
        assert_eq!(data(0, 0, 5, 4), "~cl~M|0|0|5|");
    }

    #[test]
    fn found_inside_wrapped_text() {
        // A server that prefixes the sender's name still delivers the marker.
        let text = format!("[bob] {}", data(2, 9, 10, 0));
        assert_eq!(parse(&text).map(|m| m.from()), Some(2));
    }

    #[test]
    fn foreign_and_malformed_text_is_none() {
        for text in [
            "",
            "hello",
            "~cl~",
            "~cl~X|1",
            "~cl~J|",
            "~cl~J|-1",
            "~cl~M|1|2",
            "~cl~M|1|x|3",
            "~cl~M|1|2|99999999999999999999999",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
