//! The replay rule: what a joining member is sent from history before live
//! traffic, so that it sees **no gap and no duplicate**.
//!
//! A member is in the room's live log from the moment it joins, and its
//! history is read after that. So some messages may be both in the page
//! read from history and in the member's live log. The rule:
//!
//! 1. Read the page: the newest N messages (a fresh join), or everything
//!    after the id the client last saw (a resume; see
//!    [`history`](crate::chat::history) for the contract and the epoch).
//! 2. The page says the newest id history held when read (`head`). Live
//!    nodes whose messages all have ids up to `head` are in the page: the
//!    member's cursor skips them (the one check is in
//!    `Member::take_from_log`). A node is one batch, numbered atomically,
//!    so it is wholly in the page or not at all.
//! 3. If the read came late (a busy room, a slow store), the newest-N
//!    window may start after live messages the member already holds: those
//!    would be skipped by step 2 yet not be in the page. Then read again
//!    from the oldest of them.
//!
//! Each step is here; nothing else decides what a member was sent.

use std::time::Duration;

use tracing::warn;

use super::hub::Membership;
use crate::chat::ChatConfig;
use crate::chat::history::{History, Since, StoredMessage};

/// How long a joining member waits for history before it gets live
/// messages only (the store may be unreachable).
pub const HISTORY_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a reconnecting client asks to resume: the last id it saw and the
/// epoch of that id (`None`: a fresh join).
pub type Resume = Option<(u64, Option<String>)>;

/// What a joining member is sent before live traffic.
#[derive(Debug, Default)]
pub struct Replay {
    /// The room's history epoch (`None`: history could not be read).
    pub epoch: Option<String>,
    /// Messages from history, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Notices about what could not be replayed.
    pub notices: Vec<String>,
}

/// Reads what `membership`'s member gets from history, as `resume` asks,
/// and makes its live log skip what the replay holds. Call before the
/// member's writer starts.
pub async fn read(
    history: &dyn History,
    membership: &Membership,
    resume: Resume,
    config: &ChatConfig,
) -> Replay {
    let room = membership.room_name();
    let latest = Since::Latest {
        limit: config.history_replay,
    };
    let since = match resume {
        Some((id, _)) => Since::After {
            id,
            limit: config.history_len,
        },
        None => latest,
    };
    let read = |since| async move {
        match tokio::time::timeout(HISTORY_READ_TIMEOUT, history.page(room, since)).await {
            Ok(Ok(page)) => Some(page),
            Ok(Err(error)) => {
                warn!(room, %error, "history unavailable for a joining member");
                None
            }
            Err(_) => {
                warn!(room, "history read timed out for a joining member");
                None
            }
        }
    };
    // Step 1.
    let Some(mut page) = read(since).await else {
        return Replay {
            notices: vec!["history is unavailable right now: live messages only".to_owned()],
            ..Replay::default()
        };
    };
    let mut notices = Vec::new();
    let resume_id = resume.as_ref().map(|(id, _)| *id);
    if let Some((id, epoch)) = resume {
        match epoch {
            Some(epoch) if epoch != page.epoch => {
                notices.push(format!(
                    "history was lost since you were last here (history epoch {epoch} is now {}): \
                     showing the latest messages",
                    page.epoch
                ));
                let Some(latest) = read(latest).await else {
                    return Replay {
                        epoch: Some(page.epoch),
                        notices,
                        ..Replay::default()
                    };
                };
                page = latest;
            }
            _ => {
                let missing = page.missing_after(id);
                match missing {
                    0 => {}
                    1 => notices.push("1 message you missed is no longer in history".to_owned()),
                    n => notices.push(format!("{n} messages you missed are no longer in history")),
                }
            }
        }
    }
    // Step 3 (a resume already reads everything after its id that history
    // keeps).
    let member = membership.member();
    let reaches_back_to = page.messages.first().map_or(page.head + 1, |m| m.id);
    if let (None, Some(first_live)) = (resume_id, member.first_live_id()) {
        if first_live < reaches_back_to {
            let wider = Since::After {
                id: first_live - 1,
                limit: config.history_len,
            };
            if let Some(wider) = read(wider).await {
                if wider.epoch == page.epoch {
                    page = wider;
                }
            }
        }
    }
    // Step 2.
    membership.note_epoch(&page.epoch);
    membership.note_head(page.head);
    member.skip_replayed(page.head);
    Replay {
        epoch: Some(page.epoch),
        messages: page.messages,
        notices,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::encoders;
    use super::*;
    use crate::chat::core::{Hub, Participant, Protocol};
    use crate::chat::history::memory::MemoryHistory;

    fn config(history_replay: usize) -> ChatConfig {
        ChatConfig {
            history_replay,
            rate_limit: crate::chat::ratelimit::RateLimit {
                rate: 0.0,
                burst: 0.0,
            },
            ..ChatConfig::default()
        }
    }

    async fn speaker(hub: &Arc<Hub>, name: &str) -> Participant {
        let p = Participant::new(hub.join("r", Protocol::Events).unwrap());
        p.take_name(name, None).await.unwrap();
        p
    }

    fn say(p: &Participant, n: usize) {
        for i in 0..n {
            let mut turn = p.turn();
            turn.say(&format!("m{i}")).unwrap();
            turn.finish();
        }
    }

    fn ids(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|m| m.id).collect()
    }

    /// A member that joined before a burst, whose history read comes only
    /// after it (a busy room, a slow store), still gets every message of
    /// the burst: the newest-N window alone would start in its middle.
    #[tokio::test]
    async fn a_late_history_read_reaches_back_to_the_join() {
        let hub = Hub::new(config(5), encoders());
        let ann = speaker(&hub, "ann").await;
        let listener = Participant::new(hub.join("r", Protocol::Events).unwrap());
        say(&ann, 40);
        let replay = read(
            hub.history().as_ref(),
            listener.membership(),
            None,
            hub.config(),
        )
        .await;
        assert_eq!(ids(&replay), (1..=40).collect::<Vec<u64>>());
        // …and none of them again live.
        assert!(super::super::testing::drain(listener.member()).is_empty());
    }

    /// Without a late read, a fresh join gets the newest N and no more.
    #[tokio::test]
    async fn a_fresh_join_gets_the_newest_messages() {
        let hub = Hub::new(config(5), encoders());
        let ann = speaker(&hub, "ann").await;
        say(&ann, 40);
        let listener = Participant::new(hub.join("r", Protocol::Events).unwrap());
        let replay = read(
            hub.history().as_ref(),
            listener.membership(),
            None,
            hub.config(),
        )
        .await;
        assert_eq!(ids(&replay), (36..=40).collect::<Vec<u64>>());
        assert!(replay.notices.is_empty());
    }

    /// A resume gets exactly what came after its id; what was trimmed is
    /// counted in a notice (with the grammar of one).
    #[tokio::test]
    async fn a_resume_gets_what_it_missed_and_hears_of_what_is_gone() {
        let store = Arc::new(MemoryHistory::with_epoch(10, "e1"));
        let hub = Hub::with_store(config(5), store, encoders());
        let ann = speaker(&hub, "ann").await;
        say(&ann, 12);
        let back = Participant::new(hub.join("r", Protocol::Events).unwrap());
        let resume = Some((1, Some("e1".to_owned())));
        let replay = read(
            hub.history().as_ref(),
            back.membership(),
            resume,
            hub.config(),
        )
        .await;
        assert_eq!(ids(&replay), (3..=12).collect::<Vec<u64>>());
        assert_eq!(
            replay.notices,
            ["1 message you missed is no longer in history"]
        );
        assert_eq!(replay.epoch.as_deref(), Some("e1"));
    }

    /// A resume from another epoch: history was lost; the newest N, and a
    /// notice saying so.
    #[tokio::test]
    async fn a_resume_from_a_lost_epoch_gets_the_newest_and_a_notice() {
        let store = Arc::new(MemoryHistory::with_epoch(100, "e2"));
        let hub = Hub::with_store(config(3), store, encoders());
        let ann = speaker(&hub, "ann").await;
        say(&ann, 10);
        let back = Participant::new(hub.join("r", Protocol::Events).unwrap());
        let resume = Some((4, Some("e1".to_owned())));
        let replay = read(
            hub.history().as_ref(),
            back.membership(),
            resume,
            hub.config(),
        )
        .await;
        assert_eq!(ids(&replay), [8, 9, 10]);
        assert!(replay.notices[0].starts_with("history was lost since you were last here"));
    }
}
