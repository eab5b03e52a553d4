//! A room's log: a singly linked list of published batches ([`Node`]s),
//! each encoded once per protocol and shared by every member.
//!
//! ```text
//!  the room's log:   [node 41] ─▶ [node 42] ─▶ [node 43] ─▶ (tail)
//!                        ▲             ▲                        ▲
//!                     a slow        a member                 members that
//!                     member        catching up              are up to date
//! ```
//!
//! Nobody gets a copy or even a queue entry: a member holds a cursor (an
//! `Arc` of the last node it took, see [`member`](super::member)) and
//! follows the `next` links. Nodes behind every cursor are freed by `Arc`;
//! a member that stops reading keeps the nodes after its cursor alive, which
//! is why how far behind it may fall is bounded (the room disconnects it,
//! see [`room`](super::room)).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::event::{Frames, Protocol};

/// One published batch: a node of the room's log.
#[derive(Debug, Default)]
pub struct Node {
    /// The member who published it (0: the server itself, or a member of
    /// another server sharing the history store).
    pub(super) sender: u64,
    /// Id of its first chat message (0: it has none).
    pub(super) first_id: u64,
    /// Id of its last chat message (0: it has none). A member that joined
    /// with a replay from history skips nodes the replay already holds.
    pub(super) last_id: u64,
    /// Its bytes per protocol, indexed by [`Protocol::index`].
    pub(super) frames: [Frames; 2],
    /// Bytes published to the room up to and including this node: a
    /// member's lag is the tail's offset minus the offset of its cursor.
    pub(super) end_offset: u64,
    /// The next node, once published.
    pub(super) next: OnceLock<Arc<Node>>,
}

impl Node {
    /// A node carrying these frames, from `sender` (its offset and link are
    /// set when appended).
    pub(super) fn new(sender: u64, frames: [Frames; 2]) -> Self {
        Node {
            sender,
            first_id: 0,
            last_id: 0,
            frames,
            end_offset: 0,
            next: OnceLock::new(),
        }
    }

    /// The bytes of this node that member `member` (speaking `protocol`)
    /// must receive.
    pub(super) fn frames_for(&self, member: u64, protocol: Protocol) -> &Bytes {
        let frames = &self.frames[protocol.index()];
        if self.sender == member {
            &frames.sender
        } else {
            &frames.others
        }
    }

    /// How many bytes it adds to the room's offset: the larger encoding
    /// (an estimate of what a member must hold for it).
    pub(super) fn size(&self) -> u64 {
        let [stream, events] = &self.frames;
        stream.others.len().max(events.others.len()) as u64
    }
}

impl Drop for Node {
    /// Frees a long chain of nodes iteratively: the default recursive drop
    /// of `next` could overflow the stack when a slow member let thousands
    /// of nodes pile up behind its cursor.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(node) = next {
            next = match Arc::try_unwrap(node) {
                Ok(mut node) => node.next.take(),
                Err(_) => None,
            };
        }
    }
}

/// The newest end of a room's log, where nodes are appended (under the
/// room's lock) and new members start reading.
#[derive(Debug)]
pub struct Tail {
    node: Arc<Node>,
}

impl Default for Tail {
    fn default() -> Self {
        Tail {
            node: Arc::new(Node::default()),
        }
    }
}

impl Tail {
    /// The newest node: a member starting here receives everything
    /// appended after now.
    pub(super) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Links `node` after the tail and makes it the tail. `None` only if
    /// the log was appended to behind our back (it cannot be: the room's
    /// lock holder is the only appender).
    pub(super) fn append(&mut self, mut node: Node) -> Option<Arc<Node>> {
        node.end_offset = self.node.end_offset + node.size();
        let node = Arc::new(node);
        self.node.next.set(Arc::clone(&node)).ok()?;
        self.node = Arc::clone(&node);
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(text: &'static str) -> [Frames; 2] {
        let bytes = Bytes::from_static(text.as_bytes());
        let both = Frames {
            others: bytes.clone(),
            sender: Bytes::new(),
        };
        [both.clone(), both]
    }

    #[test]
    fn appended_nodes_are_linked_with_growing_offsets() {
        let mut tail = Tail::default();
        let start = Arc::clone(tail.node());
        tail.append(Node::new(1, frames("abc"))).unwrap();
        tail.append(Node::new(2, frames("de"))).unwrap();
        let first = start.next.get().unwrap();
        let second = first.next.get().unwrap();
        assert_eq!((first.end_offset, second.end_offset), (3, 5));
        assert!(Arc::ptr_eq(second, tail.node()));
    }

    #[test]
    fn a_sender_gets_its_own_copy() {
        let node = Node::new(7, frames("x"));
        assert_eq!(&node.frames_for(8, Protocol::Events)[..], b"x");
        assert!(node.frames_for(7, Protocol::Events).is_empty());
    }

    #[test]
    fn a_long_chain_drops_without_recursion() {
        let mut tail = Tail::default();
        let start = Arc::clone(tail.node());
        for _ in 0..200_000 {
            tail.append(Node::new(1, frames("x"))).unwrap();
        }
        drop(tail);
        drop(start);
    }
}
