//! `chat.ChatService`: the generated service trait, each call handed to its
//! adapter in [`calls`], plus `Who` and `HealthCheck`, which
//! only read the hub.

use std::sync::Arc;

use super::auth::TokenTable;
use super::calls::{self, events, pipeline, session, stream};
use super::core::{Hub, Protocol};
use super::history::{Store, StoreHealth};
use super::{ChatConfig, DEFAULT_ROOM};
use crate::framing::Status;
use crate::pb::chat::{
    ChatMessage, ClientEvent, HealthCheckRequest, HealthCheckResponse, RoomInfo, RoomsRequest,
    RoomsResponse, SendMessageRequest, SendMessageResponse, ServerEvent, SetTypingRequest,
    SetTypingResponse, SubscribeEvent, SubscribeRequest, WhoRequest, WhoResponse,
};
use crate::rpc::{Request, Response, Streaming};
use crate::server::ResponseSink;

pub use super::calls::session::Sessions;

/// The chat service. Cheap to clone: clones share the hub.
#[derive(Debug, Clone)]
pub struct ChatService {
    hub: Arc<Hub>,
    /// Sessions of `Subscribe` callers.
    sessions: Arc<Sessions>,
    /// When set, every call needs a token, and the token names the user.
    tokens: Option<Arc<TokenTable>>,
}

impl ChatService {
    /// A service with its own hub and the embedded history store.
    pub fn new(config: ChatConfig) -> Self {
        ChatService::from_hub(Hub::new(config, calls::encoders()))
    }

    /// A service with its own hub keeping history in `store` (e.g.
    /// [`RedisHistory`](super::history::redis::RedisHistory)), which also
    /// numbers the rooms' batches. Call inside a Tokio runtime: the store's
    /// background work starts here.
    pub fn with_history<S: Store + 'static>(config: ChatConfig, store: Arc<S>) -> Self {
        ChatService::from_hub(Hub::with_store(config, store, calls::encoders()))
    }

    fn from_hub(hub: Arc<Hub>) -> Self {
        ChatService {
            hub,
            sessions: Arc::default(),
            tokens: None,
        }
    }

    /// Requires a token from `tokens` on every call (`HealthCheck` aside, so
    /// load balancers need none); the token's user is the member's name.
    pub fn with_tokens(mut self, tokens: TokenTable) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// The hub of rooms (for shutdown and figures).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The open `Subscribe` sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    fn config(&self) -> &ChatConfig {
        self.hub.config()
    }

    fn tokens(&self) -> Option<&TokenTable> {
        self.tokens.as_deref()
    }
}

impl crate::pb::chat::ChatService for ChatService {
    // Not an `async fn`: the request is taken apart before the future is
    // made, so the future holds the message stream once rather than also a
    // dead copy of the whole request (an idle member's call state is most
    // of what it costs).
    fn chat_stream(
        &self,
        request: Request<Streaming<ChatMessage>>,
        mut sink: ResponseSink<ChatMessage>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        let admitted = pipeline::admit(self.tokens(), request.metadata(), self.config());
        let (_, mut stream) = request.into_parts();
        async move {
            let admission = admitted.as_ref().map_err(|status| Status::clone(status))?;
            // A member from the moment the stream opens: it reads the room
            // before it has said anything (and so before it has a name).
            // In a block: the replay's storage then ends with the block
            // instead of staying in the future for the call's life. Joining
            // is boxed for the same reason: it waits on the store (the
            // name's claim, the room's subscription, the history page), and
            // an idle member's call should keep no room for those waits.
            let (participant, _counted) = {
                let joined = Box::pin(pipeline::join(
                    &self.hub,
                    &admission.room,
                    admission.resume.clone(),
                    Protocol::Stream,
                    None,
                    &mut sink,
                ))
                .await?;
                let frames = stream::replay_frames(&joined.replay);
                Box::pin(pipeline::welcome(
                    &joined.participant,
                    joined.replay,
                    frames,
                    &mut sink,
                ))
                .await?;
                (joined.participant, joined.counted)
            };
            let reader = std::pin::pin!(stream::read(
                &participant,
                &mut stream,
                admission.token_user.as_deref()
            ));
            pipeline::run(&participant, reader, &mut sink).await
        }
    }

    // Not an `async fn`, for the reason given at `chat_stream`.
    fn chat(
        &self,
        request: Request<Streaming<ClientEvent>>,
        mut sink: ResponseSink<ServerEvent>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        let admitted = pipeline::admit(self.tokens(), request.metadata(), self.config());
        let (_, mut stream) = request.into_parts();
        async move {
            let admission = admitted.as_ref().map_err(|status| Status::clone(status))?;
            let (participant, _counted) = {
                let name = events::joining_name(stream.message().await?)?;
                let joined = Box::pin(pipeline::join(
                    &self.hub,
                    &admission.room,
                    admission.resume.clone(),
                    Protocol::Events,
                    Some((&name, admission.token_user.as_deref())),
                    &mut sink,
                ))
                .await?;
                let frames = events::replay_frames(&joined.replay);
                Box::pin(pipeline::welcome(
                    &joined.participant,
                    joined.replay,
                    frames,
                    &mut sink,
                ))
                .await?;
                (joined.participant, joined.counted)
            };
            let reader = std::pin::pin!(events::read(&participant, &mut stream));
            pipeline::run(&participant, reader, &mut sink).await
        }
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.hub.is_draining() {
            "DRAINING".to_owned()
        } else {
            match self.hub.history().health() {
                StoreHealth::Ok => "SERVING".to_owned(),
                StoreHealth::Degraded(why) => format!("DEGRADED: {why}"),
            }
        };
        let census = self.hub.census().await.unwrap_or_default();
        Ok(Response::new(HealthCheckResponse {
            status,
            active_clients: i32::try_from(self.hub.active_members()).unwrap_or(i32::MAX),
            uptime_seconds: i64::try_from(self.hub.uptime().as_secs()).unwrap_or(i64::MAX),
            servers: i32::try_from(census.servers).unwrap_or(i32::MAX),
            cluster_clients: i64::try_from(census.members).unwrap_or(i64::MAX),
        }))
    }

    async fn who(&self, request: Request<WhoRequest>) -> Result<Response<WhoResponse>, Status> {
        pipeline::authenticate(self.tokens(), request.metadata())?;
        let asked = request.into_inner().room;
        let room = if asked.is_empty() {
            DEFAULT_ROOM.to_owned()
        } else {
            pipeline::room_from(&asked, self.config())?
        };
        let presence = self.hub.presence_everywhere(&room).await;
        Ok(Response::new(WhoResponse {
            room,
            users: presence.names,
            listeners: u32::try_from(presence.listeners).unwrap_or(u32::MAX),
            local_users: presence.here,
        }))
    }

    async fn rooms(
        &self,
        request: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        pipeline::authenticate(self.tokens(), request.metadata())?;
        let rooms = self
            .hub
            .rooms()
            .into_iter()
            .map(|(name, members)| RoomInfo {
                name,
                members: u32::try_from(members).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(Response::new(RoomsResponse { rooms }))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
        sink: ResponseSink<SubscribeEvent>,
    ) -> Result<(), Status> {
        session::subscribe(&self.hub, &self.sessions, self.tokens(), request, sink).await
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        session::send_message(&self.sessions, self.tokens(), &request)?;
        Ok(Response::new(SendMessageResponse {}))
    }

    async fn set_typing(
        &self,
        request: Request<SetTypingRequest>,
    ) -> Result<Response<SetTypingResponse>, Status> {
        session::set_typing(&self.sessions, self.tokens(), &request)?;
        Ok(Response::new(SetTypingResponse {}))
    }
}
