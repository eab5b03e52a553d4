//! The core's errors: why a member could not join or take a name
//! ([`ChatError`]), and why one message was not delivered ([`Refusal`]).
//!
//! Plain data with the sentence a user reads as `Display`. The adapters
//! decide what each becomes on the wire (a gRPC status, or a notice on the
//! member's own stream): see `calls::status_of`.

use std::fmt;
use std::time::Duration;

use crate::chat::validate::Invalid;

/// Why a member cannot join, or cannot have the name it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatError {
    /// The server is shutting down: nobody joins, nothing is published.
    ShuttingDown,
    /// The room holds its most members already.
    RoomFull {
        /// The room.
        room: String,
        /// How many it may hold.
        max: usize,
    },
    /// A live member of the room has this name (compared ignoring case).
    NameTaken {
        /// The name asked for.
        name: String,
        /// The room.
        room: String,
    },
    /// The name (of a user or a room) breaks the rules of `validate`.
    InvalidName {
        /// `"user name"` or `"room name"`.
        what: &'static str,
        /// What is wrong with it.
        why: Invalid,
    },
    /// The caller's token names another user than the one asked for.
    NotYourName {
        /// The token's user.
        token_user: String,
        /// The name asked for.
        asked: String,
    },
}

impl fmt::Display for ChatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatError::ShuttingDown => f.write_str("the server is shutting down"),
            ChatError::RoomFull { room, max } => write!(f, "room {room:?} is full ({max} members)"),
            ChatError::NameTaken { name, room } => {
                write!(f, "the name {name:?} is in use in room {room:?}")
            }
            ChatError::InvalidName { what, why } => write!(f, "{what} {why}"),
            ChatError::NotYourName { token_user, asked } => {
                write!(f, "your token belongs to {token_user:?}, not {asked:?}")
            }
        }
    }
}

impl std::error::Error for ChatError {}

/// Why one chat message was not delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Nothing but whitespace: dropped without a word.
    Empty,
    /// Too long, or a character that has no place in a chat line.
    Invalid(Invalid),
    /// Over the member's rate limit.
    RateLimited {
        /// Messages per second allowed.
        rate: f64,
        /// How long until the next one would be accepted.
        wait: Duration,
    },
    /// The member has no name yet (a `ChatStream` member is named by its
    /// first message; nothing else can speak before its name).
    Unnamed,
    /// The server is shutting down.
    ShuttingDown,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("message not delivered: ")?;
        match self {
            Refusal::Empty => f.write_str("it is empty"),
            Refusal::Invalid(why) => write!(f, "it {why}"),
            Refusal::RateLimited { rate, wait } => write!(
                f,
                "rate limited (at most {rate} messages per second); try again in {} ms",
                wait.as_millis().max(1)
            ),
            Refusal::Unnamed => f.write_str("you have no name yet"),
            Refusal::ShuttingDown => f.write_str("the server is shutting down"),
        }
    }
}
