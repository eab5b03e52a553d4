//! Test helpers: an encoder that writes one readable line per event, so
//! tests of the core read what each member would be shown.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::event::{Batch, Encode, Encoders, Event, Frames, Need, Notice};
use super::member::Member;

/// Lines like `events ann#42 hello`, `stream notice welcome …`. Follows the
/// real protocols' rules of who sees what: `stream` members see other
/// people's messages and notices (but not the shutdown notice), `events`
/// members see everything, their own messages and joins included, but not
/// their own typing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextEncoder(&'static str);

impl TextEncoder {
    pub(crate) const STREAM: TextEncoder = TextEncoder("stream");
    pub(crate) const EVENTS: TextEncoder = TextEncoder("events");

    fn line(&self, out: &mut BytesMut, text: &str) {
        out.extend_from_slice(format!("{} {text}\n", self.0).as_bytes());
    }
}

impl Encode for TextEncoder {
    fn batch(&self, batch: &Batch<'_>, need: Need) -> Frames {
        let stream = self.0 == "stream";
        let (mut others, mut sender) = (BytesMut::new(), BytesMut::new());
        for (id, event) in batch.numbered() {
            let user = batch.user;
            let (text, echoed) = match (event, id) {
                (Event::Message { text }, Some(id)) => (format!("{user}#{id} {text}"), true),
                (Event::Typing { started }, _) if !stream => {
                    (format!("{user} typing {started}"), false)
                }
                (Event::Joined, _) if !stream => (format!("{user} joined"), true),
                (Event::Left, _) if !stream => (format!("{user} left"), true),
                _ => continue,
            };
            if need.others {
                self.line(&mut others, &text);
            }
            if need.sender && echoed && !stream {
                self.line(&mut sender, &text);
            }
        }
        Frames {
            others: others.freeze(),
            sender: sender.freeze(),
        }
    }

    fn notice(&self, notice: &Notice) -> Bytes {
        let mut out = BytesMut::new();
        match notice {
            Notice::ShuttingDown(_) if self.0 == "stream" => {}
            Notice::Say(text) | Notice::ShuttingDown(text) => {
                self.line(&mut out, &format!("notice {text}"));
            }
            Notice::EpochChanged { text, .. } => self.line(&mut out, &format!("notice {text}")),
        }
        out.freeze()
    }
}

/// The two test encoders.
pub(crate) fn encoders() -> Encoders {
    [Arc::new(TextEncoder::STREAM), Arc::new(TextEncoder::EVENTS)]
}

/// Every line waiting for `member` now (room and private notices).
pub(crate) fn drain(member: &Member) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(bytes) = member.take_now() {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}
