//! One call of the session: dialling, opening `Chat` in a room (with the
//! token, the room and the resume point as metadata, `USER_JOINED`, and
//! the wait for the server's first event), what a joined call holds, and
//! the one-off calls beside it (`Who`, `Rooms`).

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::failure::reason;
use super::resume::Resume;
use super::session_config::{DEFAULT_CONNECT_TIMEOUT, SessionConfig, Transport};
use crate::Status;
use crate::chat::history::{EPOCH_METADATA_KEY, LAST_ID_METADATA_KEY};
use crate::chat::{AUTHORIZATION_METADATA_KEY, ROOM_METADATA_KEY};
use crate::client::{Channel, RequestSink};
use crate::pb::chat::{
    ChatServiceClient, ClientEvent, ServerEvent, UserEvent, UserEventType, client_event,
};
use crate::rpc::Request;

/// Events buffered between the connection and the session task. When the
/// UI falls this far behind, reading stops and HTTP/2 flow control pushes
/// back on the server.
const INBOUND_BUFFER: usize = 256;

/// A joined call.
pub(super) struct Joined {
    pub(super) client: ChatServiceClient,
    pub(super) sink: RequestSink<ClientEvent>,
    /// Events (and finally the end) read by `reader`.
    pub(super) inbound: mpsc::Receiver<Result<ServerEvent, Status>>,
    reader: JoinHandle<()>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        // Dropping the response stream in the reader cancels the call
        // (RST_STREAM) if it is still open.
        self.reader.abort();
    }
}

pub(super) fn event(event: client_event::Event) -> ClientEvent {
    ClientEvent { event: Some(event) }
}

pub(super) fn user_event(kind: UserEventType, user: &str) -> ClientEvent {
    event(client_event::Event::UserEvent(UserEvent {
        r#type: kind.into(),
        username: user.to_owned(),
        timestamp: 0,
    }))
}

/// A request carrying the token, if there is one.
pub(super) fn authorized<T>(message: T, transport: &Transport) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    if let Some(token) = &transport.token {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_METADATA_KEY, &format!("Bearer {token}"))
            .map_err(|_| {
                Status::invalid_argument("the token must be printable ASCII without spaces")
            })?;
    }
    Ok(request)
}

/// Dials the server.
pub(super) async fn dial(config: &SessionConfig) -> Result<ChatServiceClient, Status> {
    let mut builder = Channel::builder(config.address.clone());
    builder.connect_timeout(config.connect_timeout);
    let transport = &config.transport;
    if let Some((interval, timeout)) = transport.keepalive {
        builder.keepalive(interval, timeout);
    }
    if let Some(tls) = &transport.tls {
        builder.tls(std::sync::Arc::clone(tls));
    }
    if let Some(name) = &transport.server_name {
        builder.server_name(name.clone());
    }
    if let Some(trace) = &transport.wire_trace {
        builder.wire_trace(trace.clone());
    }
    Ok(ChatServiceClient::new(builder.connect().await?))
}

/// Opens `Chat` in `room` on a connection (resuming from `resume`), sends
/// `USER_JOINED` and waits for the first event.
pub(super) async fn open(
    config: &SessionConfig,
    client: ChatServiceClient,
    room: &str,
    resume: &mut Resume,
) -> Result<(Joined, ServerEvent), Status> {
    resume.new_call();
    let mut request = authorized((), &config.transport)?;
    request
        .metadata_mut()
        .insert(ROOM_METADATA_KEY, room)
        .map_err(|_| {
            // gRPC's ASCII metadata: printable ASCII, 0x20-0x7E.
            Status::invalid_argument(format!(
                "room name {room:?} cannot be sent: the chat-room metadata takes printable \
                 ASCII only"
            ))
        })?;
    if let Some(id) = resume.last_id {
        // Digits and the server's own epoch: valid header values; a
        // failure would only mean a fresh join.
        let _ = request
            .metadata_mut()
            .insert(LAST_ID_METADATA_KEY, &id.to_string());
        if let Some(epoch) = &resume.epoch {
            let _ = request.metadata_mut().insert(EPOCH_METADATA_KEY, epoch);
        }
    }
    let (mut sink, mut stream) = client.chat(request).await?.split();
    // If the server refuses the call it may end it before reading: the
    // send then fails, and the reason is the response's status.
    let sent = sink
        .send(&user_event(UserEventType::UserJoined, &config.user))
        .await;
    let first = match stream.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return Err(Status::unavailable("the server ended the call at once")),
        Err(status) => return Err(status),
    };
    sent?;
    let (tx, inbound) = mpsc::channel(INBOUND_BUFFER);
    let reader = tokio::spawn(async move {
        loop {
            let item = match stream.message().await {
                Ok(Some(event)) => Ok(event),
                Ok(None) => Err(Status::unavailable("the server ended the chat")),
                Err(status) => Err(status),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok((
        Joined {
            client,
            sink,
            inbound,
            reader,
        },
        first,
    ))
}

/// Dials, then [`open`]s the chat in `room`, within the connect timeout.
pub(super) async fn join(
    config: &SessionConfig,
    room: &str,
    resume: &mut Resume,
) -> Result<(Joined, ServerEvent), Status> {
    let attempt = async { open(config, dial(config).await?, room, resume).await };
    timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "timed out joining at {}",
                config.address
            )))
        })
}

/// A `/who` or `/rooms` answer for the user: the response, or why not.
pub(super) async fn answer<Q, A>(
    request: Result<Request<Q>, Status>,
    call: impl AsyncFnOnce(Request<Q>) -> Result<crate::rpc::Response<A>, Status>,
) -> Result<A, String> {
    let request = request.map_err(|status| reason(&status))?;
    match timeout(DEFAULT_CONNECT_TIMEOUT, call(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(reason(&status)),
        Err(_) => Err("timed out".to_owned()),
    }
}
