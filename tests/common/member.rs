//! A `Chat` member on our client layer, for tests that watch a room from
//! the inside (dead peers, shutdown, tokens): join, say, and read events
//! with a deadline.

use std::time::Duration;

use grpc_chat::Status;
use grpc_chat::client::{BidiCall, Channel};
use grpc_chat::pb::chat::{
    ChatMessageEvent, ChatServiceClient, ClientEvent, ServerEvent, UserEvent, UserEventType,
    client_event, server_event,
};
use grpc_chat::rpc::Request;
use tokio::time::timeout;

/// A member's call.
pub struct Member {
    pub name: String,
    pub call: BidiCall<ClientEvent, ServerEvent>,
}

/// `USER_JOINED` for `name`.
pub fn join_event(name: &str) -> ClientEvent {
    ClientEvent {
        event: Some(client_event::Event::UserEvent(UserEvent {
            r#type: UserEventType::UserJoined.into(),
            username: name.into(),
            timestamp: 0,
        })),
    }
}

/// A chat message.
pub fn text_event(text: &str) -> ClientEvent {
    ClientEvent {
        event: Some(client_event::Event::ChatMessage(ChatMessageEvent {
            message: text.into(),
            ..Default::default()
        })),
    }
}

/// A `Chat` request for `room`, with `authorization: Bearer <token>` if given.
pub fn chat_request(room: &str, token: Option<&str>) -> Request<()> {
    let mut request = Request::new(());
    request.metadata_mut().insert("chat-room", room).unwrap();
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", &format!("Bearer {token}"))
            .unwrap();
    }
    request
}

impl Member {
    /// Opens `Chat` on `channel` in `room` and sends `USER_JOINED` as `name`;
    /// waits for the welcome notice, so the member is in the room on return.
    pub async fn join(channel: &Channel, room: &str, name: &str) -> Member {
        Member::try_join(channel, chat_request(room, None), name)
            .await
            .unwrap_or_else(|status| panic!("{name} could not join {room}: {status:?}"))
    }

    /// Like [`Member::join`] with a request of the caller's making; the
    /// status the call ended with if it did not get in.
    pub async fn try_join(
        channel: &Channel,
        request: Request<()>,
        name: &str,
    ) -> Result<Member, Status> {
        let mut member = Member::open(channel, request, name).await?;
        loop {
            match member.next().await? {
                Some(server_event::Event::SystemEvent(_)) => return Ok(member),
                Some(_) => continue,
                None => return Err(Status::unavailable("the call ended before the welcome")),
            }
        }
    }

    /// Opens `Chat` with `request` and sends `USER_JOINED` as `name`,
    /// without waiting for anything: every event of the call, the replay
    /// included, is still to be read.
    pub async fn open(
        channel: &Channel,
        request: Request<()>,
        name: &str,
    ) -> Result<Member, Status> {
        let client = ChatServiceClient::new(channel.clone());
        let mut call = client.chat(request).await?;
        // A refused call may end before reading: the status is what counts.
        let _ = call.send(&join_event(name)).await;
        Ok(Member {
            name: name.to_owned(),
            call,
        })
    }

    /// The next event, `None` at the end of the call; panics if none comes
    /// within 15 s.
    pub async fn next(&mut self) -> Result<Option<server_event::Event>, Status> {
        match timeout(Duration::from_secs(15), self.call.message()).await {
            Ok(Ok(Some(event))) => Ok(event.event),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("{}: no event within 15 s", self.name),
        }
    }

    /// Reads until a user event of `kind` for `user`; panics if the call
    /// ends first or nothing comes within `within`.
    pub async fn wait_user_event(&mut self, user: &str, kind: UserEventType, within: Duration) {
        let name = self.name.clone();
        let found = timeout(within, async {
            loop {
                match self.next().await {
                    Ok(Some(server_event::Event::UserEvent(u)))
                        if u.username == user && u.r#type == kind as i32 =>
                    {
                        return;
                    }
                    Ok(Some(_)) => continue,
                    other => panic!("{name}: call ended waiting for {user} {kind:?}: {other:?}"),
                }
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "{name}: no {kind:?} event for {user} within {within:?}"
        );
    }

    /// Sends a chat message.
    pub async fn say(&mut self, text: &str) -> Result<(), Status> {
        self.call.send(&text_event(text)).await
    }
}
