//! The browser's session RPCs (`Subscribe`, `SendMessage`) from a test:
//! subscribe and read the session, read the next event, a call's code.

use grpc_chat::pb::chat::{ChatServiceClient, SubscribeEvent, SubscribeRequest, subscribe_event};
use grpc_chat::rpc::{Request, Streaming};
use grpc_chat::{Code, Status};
use tokio::time::timeout;

use super::WAIT;

/// The next event of a `Subscribe` stream (within [`WAIT`]).
pub async fn next_event(stream: &mut Streaming<SubscribeEvent>) -> subscribe_event::Event {
    timeout(WAIT, stream.message())
        .await
        .expect("an event within the deadline")
        .expect("the stream goes on")
        .expect("not the end")
        .event
        .expect("an event")
}

/// Subscribes `name` to `room`; the session token and the stream, the
/// `SessionStarted` event read.
pub async fn subscribe(
    client: &ChatServiceClient,
    name: &str,
    room: &str,
) -> (String, Streaming<SubscribeEvent>) {
    let mut stream = client
        .subscribe(Request::new(SubscribeRequest {
            username: name.into(),
            room: room.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let subscribe_event::Event::SessionStarted(session) = next_event(&mut stream).await else {
        panic!("the first event is not the session");
    };
    assert_eq!(session.username, name);
    assert_eq!(session.room, room);
    (session.token, stream)
}

/// The status code of a call's outcome (`Ok` for a success).
pub fn code_of<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}
