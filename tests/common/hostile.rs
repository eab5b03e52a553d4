//! A chat server that sends what the real one refuses to relay (names,
//! messages and notices full of terminal escape sequences), for the
//! `chat-client` tests in line mode and in a terminal.

use grpc_chat::Status;
use grpc_chat::pb::chat::{
    ChatMessage, ChatMessageEvent, ChatService, ChatServiceServer, ClientEvent, HealthCheckRequest,
    HealthCheckResponse, RoomsRequest, RoomsResponse, ServerEvent, SystemEvent, WhoRequest,
    WhoResponse, client_event, server_event,
};
use grpc_chat::pb::chat::{
    SendMessageRequest, SendMessageResponse, SetTypingRequest, SetTypingResponse, SubscribeEvent,
    SubscribeRequest,
};
use grpc_chat::rpc::{Request, Response, Streaming};
use grpc_chat::server::ResponseSink;

use super::in_process::InProcessServer;

/// A `Chat` call that sends `on_join` once the client has joined, then
/// `on_message` once it says something (its first ChatMessage), then only
/// reads until the client ends the call. The other methods are
/// UNIMPLEMENTED.
pub struct Hostile {
    pub on_join: Vec<ServerEvent>,
    pub on_message: Vec<ServerEvent>,
}

impl Hostile {
    /// Serves it on a free port in this process (see [`InProcessServer`]).
    pub fn start(self) -> InProcessServer {
        InProcessServer::start(ChatServiceServer::new(self))
    }
}

/// A chat message from `username` (at a fixed time, id 1).
pub fn message(username: &str, message: &str) -> ServerEvent {
    ServerEvent {
        event: Some(server_event::Event::ChatMessage(ChatMessageEvent {
            username: username.into(),
            message: message.into(),
            timestamp: 1_700_000_000,
            id: 1,
        })),
    }
}

/// A system notice (at a fixed time).
pub fn notice(message: &str) -> ServerEvent {
    ServerEvent {
        event: Some(server_event::Event::SystemEvent(SystemEvent {
            message: message.into(),
            timestamp: 1_700_000_000,
            ..Default::default()
        })),
    }
}

impl ChatService for Hostile {
    async fn chat_stream(
        &self,
        _request: Request<Streaming<ChatMessage>>,
        _sink: ResponseSink<ChatMessage>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn chat(
        &self,
        request: Request<Streaming<ClientEvent>>,
        mut sink: ResponseSink<ServerEvent>,
    ) -> Result<(), Status> {
        let (_, mut stream) = request.into_parts();
        // The join.
        stream.message().await?;
        for event in &self.on_join {
            sink.send(event).await?;
        }
        if !self.on_message.is_empty() {
            loop {
                match stream.message().await? {
                    None => return Ok(()),
                    Some(ClientEvent {
                        event: Some(client_event::Event::ChatMessage(_)),
                    }) => break,
                    Some(_) => {}
                }
            }
            for event in &self.on_message {
                sink.send(event).await?;
            }
        }
        while stream.message().await?.is_some() {}
        Ok(())
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn who(&self, _request: Request<WhoRequest>) -> Result<Response<WhoResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn rooms(
        &self,
        _request: Request<RoomsRequest>,
    ) -> Result<Response<RoomsResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
        _sink: ResponseSink<SubscribeEvent>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn send_message(
        &self,
        _request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }

    async fn set_typing(
        &self,
        _request: Request<SetTypingRequest>,
    ) -> Result<Response<SetTypingResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}
