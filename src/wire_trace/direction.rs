//! Which way bytes travel ([`Direction`]) and which end of the connection a
//! tap sits on ([`Side`]): a server's reads are what the client sent, a
//! client's reads are what the server sent.
//!
//! The distinction matters to the decoder, not only to the reader: each
//! direction of an HTTP/2 connection has its own byte stream, its own HPACK
//! state (RFC 7541 §2.2: a decoder's table follows the encoder at the other
//! end) and, for gRPC, its own message types (request or response).

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the client to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl Direction {
    /// 0 or 1: where this direction's state sits in per-direction arrays.
    pub(super) fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }

    /// `client → server` or `server → client`.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client → server",
            Direction::ServerToClient => "server → client",
        }
    }

    /// The end that sends in this direction: `client` or `server`.
    pub(super) fn sender(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client",
            Direction::ServerToClient => "server",
        }
    }
}

/// Which end of the connection a [`Tap`](super::Tap) sits on: it decides
/// which direction reads and writes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reads are client → server.
    Server,
    /// Reads are server → client.
    Client,
}

impl Side {
    /// The direction of what this end reads.
    pub(super) fn inbound(self) -> Direction {
        match self {
            Side::Server => Direction::ClientToServer,
            Side::Client => Direction::ServerToClient,
        }
    }

    /// The direction of what this end writes.
    pub(super) fn outbound(self) -> Direction {
        match self {
            Side::Server => Direction::ServerToClient,
            Side::Client => Direction::ClientToServer,
        }
    }
}
