//! Who holds which name, across every server sharing a store: the
//! [`Roster`] contract.
//!
//! A room's names are unique ignoring case. On one server the room checks
//! that under its lock (`Room::claim`). Servers sharing a store must also
//! agree, or `ann` on server A and `ann` on server B would both speak as
//! `ann`. So before a member takes a name on its server, the name is
//! **claimed** in the roster; it stays held while the member is connected
//! and is **released** when it leaves.
//!
//! A claim is a **lease**: the server holding it renews it while its member
//! is connected, so a server that dies (and cannot release anything) loses
//! its names within one lease period, and they can be taken again.
//!
//! ```text
//!   claim ──▶ Held ──(renewed every lease/3)──▶ … ──▶ release (left)
//!     │                       │
//!     │ Redis unreachable     │ server dies: nobody renews;
//!     ▼                       ▼ free after one lease period
//!   Unconfirmed: the member gets the name on this server now;
//!   the claim is made when the store is back, and if another
//!   server's member holds the name by then, this member loses
//!   it (told why, its call ended) — `Deliver::name_lost`
//! ```
//!
//! The same store answers **presence**: the named members of a room on
//! every server ([`Roster::names`]) and how many members each server has
//! ([`Roster::census`]). The embedded store has no other server to agree
//! with: every claim is held, and presence is what this server knows.

use super::BoxFuture;

/// Who holds a claim: a member on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The server ([`super::Deliver::node_id`]).
    pub node: u64,
    /// The member's id on that server.
    pub member: u64,
}

impl Holder {
    /// How the holder is written in the store: `<node hex>.<member>`.
    pub fn key(&self) -> String {
        format!("{:x}.{}", self.node, self.member)
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Held by this member, on every server.
    Held,
    /// Another member (on another server) holds it.
    Taken,
    /// The store cannot be asked now (it is unreachable): the member may
    /// have the name on this server, and the claim is made once the store
    /// is back. Says why.
    Unconfirmed(String),
}

/// Every server's members, as the store knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Servers that reported within a lease period.
    pub servers: u32,
    /// Their members, named or not.
    pub members: u64,
}

/// Names and presence across servers. See the module docs.
pub trait Roster: Send + Sync + std::fmt::Debug {
    /// Claims `name` in `room` for `holder`. The caller has checked the
    /// name's rules; on [`Claim::Held`] or [`Claim::Unconfirmed`] it binds
    /// the name on this server, and must [`Roster::release`] it later
    /// (also when binding fails).
    fn claim<'a>(&'a self, room: &'a str, name: &'a str, holder: Holder) -> BoxFuture<'a, Claim>;

    /// Gives up a name (its member left). Never blocks: the store is told
    /// in the background.
    fn release(&self, room: &str, name: &str, holder: Holder);

    /// The named members of `room` on every server, sorted; `None` when
    /// only this server's own are known (the embedded store, or the shared
    /// one is unreachable).
    fn names<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Option<Vec<String>>>;

    /// Members on every server sharing the store; `None` as for
    /// [`Roster::names`].
    fn census(&self) -> BoxFuture<'_, Option<Census>>;
}
