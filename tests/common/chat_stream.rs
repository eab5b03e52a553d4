//! ChatStream members on our own client, for tests that need people in a
//! room: open calls, name them, and know when they are really members.

use grpc_chat::client::{BidiCall, Channel};
use grpc_chat::pb::chat::{ChatMessage, ChatServiceClient, WhoRequest};
use grpc_chat::rpc::Request;
use tokio::time::timeout;

use super::WAIT;

/// A ChatStream call.
pub type Member = BidiCall<ChatMessage, ChatMessage>;

/// A ChatStream message from `user`.
pub fn say(user: &str, message: &str) -> ChatMessage {
    ChatMessage {
        user: user.into(),
        message: message.into(),
        ..Default::default()
    }
}

/// The next message `call` receives.
pub async fn next(call: &mut Member) -> ChatMessage {
    timeout(WAIT, call.message())
        .await
        .expect("no message in time")
        .expect("the call failed")
        .expect("the call ended")
}

/// The next message `call` receives from `user`, skipping others.
pub async fn next_from(call: &mut Member, user: &str) -> ChatMessage {
    loop {
        let message = next(call).await;
        if message.user == user {
            return message;
        }
    }
}

/// Waits until `Who(room)` lists every one of `names`. A ChatStream member
/// joins its room in its own server task, so "the call is open" does not yet
/// mean "the member receives"; a name listed by `Who` does.
pub async fn wait_named(client: &ChatServiceClient, room: &str, names: &[&str]) {
    super::wait_until(format_args!("{names:?} all in room {room}"), async || {
        let who = client
            .who(WhoRequest { room: room.into() })
            .await
            .expect("Who")
            .into_inner();
        names.iter().all(|n| who.users.iter().any(|u| u == n))
    })
    .await;
}

/// ChatStream members of `room` at 127.0.0.1:`port`, on one connection,
/// named `names` (each has sent "<name> is here"), once `Who` lists them all.
pub async fn members(port: u16, room: &str, names: &[&str]) -> Vec<Member> {
    let channel = Channel::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let client = ChatServiceClient::new(channel);
    let mut calls = Vec::new();
    for name in names {
        let mut request = Request::new(());
        request.metadata_mut().insert("chat-room", room).unwrap();
        let mut call = client.chat_stream(request).await.unwrap();
        call.send(&say(name, &format!("{name} is here")))
            .await
            .unwrap();
        calls.push(call);
    }
    wait_named(&client, room, names).await;
    calls
}
