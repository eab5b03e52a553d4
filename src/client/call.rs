//! Client calls: the four call shapes on a [`Channel`] (unary,
//! server-streaming, client-streaming, bidirectional), each opened as one
//! HTTP/2 stream whose request side is a [`RequestSink`] (`request.rs`) and
//! response side a [`ResponseStream`] (`response.rs`), with the call's
//! deadline over both.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::time::Instant;

use super::Channel;
use super::request::RequestSink;
use super::response::{ReadOptions, ResponseState, ResponseStream, single_response};
use crate::framing::{Encoding, MetadataMap, Status};
use crate::rpc::{Request, Response, Streaming};

/// A client-streaming call: send messages, then [`finish`](Self::finish) to
/// get the single response.
#[derive(Debug)]
pub struct ClientStreamingCall<In, Out> {
    sink: RequestSink<In>,
    response: ResponseStream<Out>,
}

impl<In: prost::Message, Out: prost::Message + Default> ClientStreamingCall<In, Out> {
    /// Sends one request message.
    pub async fn send(&mut self, message: &In) -> Result<(), Status> {
        self.sink.send(message).await
    }

    /// Sends one request message, choosing whether to compress it.
    pub async fn send_with(&mut self, message: &In, compress: bool) -> Result<(), Status> {
        self.sink.send_with(message, compress).await
    }

    /// Half-closes and waits for the response and status.
    pub async fn finish(mut self) -> Result<Response<Out>, Status> {
        self.sink.close()?;
        self.response.ready().await?;
        match self.response.state {
            ResponseState::Reading(metadata, stream) => single_response(metadata, *stream).await,
            _ => Err(Status::internal("the response headers failed")),
        }
    }

    /// Cancels the call (RST_STREAM(CANCEL)).
    pub fn cancel(mut self) {
        self.sink.cancel();
    }
}

/// A bidirectional-streaming call. Use it directly, or
/// [`split`](Self::split) it to send and receive from different tasks.
#[derive(Debug)]
pub struct BidiCall<In, Out> {
    sink: RequestSink<In>,
    response: ResponseStream<Out>,
}

impl<In: prost::Message, Out: prost::Message + Default> BidiCall<In, Out> {
    /// Sends one request message.
    pub async fn send(&mut self, message: &In) -> Result<(), Status> {
        self.sink.send(message).await
    }

    /// Sends one request message, choosing whether to compress it.
    pub async fn send_with(&mut self, message: &In, compress: bool) -> Result<(), Status> {
        self.sink.send_with(message, compress).await
    }

    /// Half-closes the request stream.
    pub fn close_send(&mut self) -> Result<(), Status> {
        self.sink.close()
    }

    /// The next response message; `Ok(None)` at a clean end.
    pub async fn message(&mut self) -> Result<Option<Out>, Status> {
        self.response.message().await
    }

    /// The response headers' custom metadata.
    pub async fn headers(&mut self) -> Result<&MetadataMap, Status> {
        self.response.headers().await
    }

    /// Trailing metadata, after the stream ended with OK.
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.response.trailers()
    }

    /// Cancels the call (RST_STREAM(CANCEL)).
    pub fn cancel(mut self) {
        self.sink.cancel();
    }

    /// The two halves, to use from different tasks.
    pub fn split(self) -> (RequestSink<In>, ResponseStream<Out>) {
        (self.sink, self.response)
    }
}

impl Channel {
    fn read_options(&self, request_timeout: Option<std::time::Duration>) -> ReadOptions {
        ReadOptions {
            max_recv_message_size: self.config().max_recv_message_size,
            deadline: request_timeout.map(|t| Instant::now() + t),
        }
    }

    async fn open_streaming<In, Out>(
        &self,
        path: &str,
        request: &Request<()>,
    ) -> Result<(RequestSink<In>, ResponseStream<Out>), Status> {
        let options = self.read_options(request.timeout());
        let cancelled = Arc::new(AtomicBool::new(false));
        let (future, stream) = self
            .open(
                path,
                request.metadata(),
                request.timeout(),
                request.compression(),
            )
            .await?;
        Ok((
            RequestSink {
                stream,
                cancelled: Arc::clone(&cancelled),
                compression: request.compression().filter(|e| *e != Encoding::Identity),
                max_send_message_size: self.config().max_send_message_size,
                deadline: options.deadline,
                closed: false,
                _message: PhantomData,
            },
            ResponseStream {
                state: ResponseState::Waiting(future),
                options,
                cancelled,
            },
        ))
    }

    /// A unary call: one request, one response.
    pub async fn unary<In, Out>(
        &self,
        path: &str,
        request: Request<In>,
    ) -> Result<Response<Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let message = request.get_ref();
        let header_only = request.headers_only();
        let (mut sink, mut response) = self.open_streaming::<In, Out>(path, &header_only).await?;
        let deadline = response.options.deadline;
        let work = async {
            // A server may answer before reading the request (an unknown
            // method, say) and close the stream: then the send fails, and the
            // status worth reporting is the server's, from the response.
            let sent = sink.send(message).await;
            sink.close()?;
            response.ready().await?;
            let answer = match std::mem::replace(&mut response.state, ResponseState::Failed) {
                ResponseState::Reading(metadata, stream) => {
                    single_response(metadata, *stream).await
                }
                _ => Err(Status::internal("the response headers failed")),
            };
            match (answer, sent) {
                (Ok(_), Err(send_error)) => Err(send_error),
                (answer, _) => answer,
            }
        };
        match deadline {
            Some(at) => tokio::time::timeout_at(at, work)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded"))),
            None => work.await,
        }
    }

    /// A server-streaming call: one request, then a stream of responses.
    pub async fn server_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<In>,
    ) -> Result<Response<Streaming<Out>>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let header_only = request.headers_only();
        let (mut sink, mut response) = self.open_streaming::<In, Out>(path, &header_only).await?;
        // As for unary: if the send fails, the server's status explains why.
        let sent = sink.send(request.get_ref()).await;
        sink.close()?;
        response.ready().await?;
        if let Err(send_error) = sent {
            if let ResponseState::Reading(_, stream) = &mut response.state {
                stream.message().await?;
            }
            return Err(send_error);
        }
        match response.state {
            ResponseState::Reading(metadata, stream) => {
                Ok(Response::from_parts(metadata, *stream, MetadataMap::new()))
            }
            _ => Err(Status::internal("the response headers failed")),
        }
    }

    /// Opens a client-streaming call.
    pub async fn client_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<()>,
    ) -> Result<ClientStreamingCall<In, Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let (sink, response) = self.open_streaming(path, &request).await?;
        Ok(ClientStreamingCall { sink, response })
    }

    /// Opens a bidirectional-streaming call.
    pub async fn bidi_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<()>,
    ) -> Result<BidiCall<In, Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let (sink, response) = self.open_streaming(path, &request).await?;
        Ok(BidiCall { sink, response })
    }
}
