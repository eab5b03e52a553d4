//! `grpc.reflection.v1.ServerReflection` (and its older name
//! `grpc.reflection.v1alpha.ServerReflection`): lets tools such as `grpcurl`
//! ask a running server which services it has and what their messages look
//! like, without a copy of the `.proto` files.
//!
//! The answers come from the `FileDescriptorSet` that `build.rs` compiles from
//! `proto/` ([`crate::pb::FILE_DESCRIPTOR_SET`]), loaded once into a
//! [`prost_reflect::DescriptorPool`] to look symbols up by name.
//!
//! The protocol is one bidirectional stream: each request holds one question,
//! and is answered by exactly one response, in order:
//!
//! ```text
//! list_services                   → the services registered on this server
//! file_by_filename "chat.proto"   → that file + every file it imports, transitively
//! file_containing_symbol "chat.ChatMessage"
//!                                 → the file defining the symbol (service, method,
//!                                   message, field, enum, enum value, extension)
//!                                   + its imports
//! file_containing_extension (T, n)→ the file defining extension n of message T
//! all_extension_numbers_of_type T → T's extension numbers
//! anything not found              → error_response NOT_FOUND (the stream goes on)
//! ```
//!
//! Why send the imports too? A client turns the bytes back into descriptors,
//! and a `FileDescriptorProto` names its imports only by file name: without
//! them it cannot resolve a field whose type lives in another file. Sending
//! every transitive import with each answer is what the reference
//! implementations do and what `grpcurl` expects.
//!
//! `v1alpha` is the same protocol under an older package name: the two
//! packages' messages have identical field numbers, so a `v1alpha` request is
//! re-read as a `v1` one and the answer re-read the other way — the bytes on
//! the wire are the same.

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message as _;
use prost_reflect::{DescriptorError, DescriptorPool, FileDescriptor};

use crate::pb::grpc_reflection_v1 as v1;
use crate::pb::grpc_reflection_v1alpha as v1alpha;
use crate::rpc::{Request, Streaming};
use crate::server::ResponseSink;
use crate::{Code, Status};

use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

pub use v1::ServerReflectionServer as ServerReflectionV1Server;
pub use v1alpha::ServerReflectionServer as ServerReflectionV1AlphaServer;

/// Fully qualified name of the v1 service.
pub const V1_SERVICE: &str = "grpc.reflection.v1.ServerReflection";
/// Fully qualified name of the v1alpha service.
pub const V1ALPHA_SERVICE: &str = "grpc.reflection.v1alpha.ServerReflection";

/// What every clone of a [`ReflectionService`] shares.
#[derive(Debug)]
struct Index {
    /// Every file of the descriptor set, resolved.
    pool: DescriptorPool,
    /// The services `list_services` names, sorted.
    services: Vec<String>,
}

/// Answers reflection questions from a descriptor set. Cheap to clone.
///
/// ```
/// use grpc_chat::reflection::ReflectionService;
/// let reflection = ReflectionService::new(
///     grpc_chat::pb::FILE_DESCRIPTOR_SET,
///     ["chat.ChatService", grpc_chat::reflection::V1_SERVICE],
/// )
/// .expect("build.rs wrote a valid descriptor set");
/// // server.add_service(reflection.v1()).add_service(reflection.v1alpha());
/// # let _ = (reflection.v1(), reflection.v1alpha());
/// ```
#[derive(Debug, Clone)]
pub struct ReflectionService {
    index: Arc<Index>,
}

impl ReflectionService {
    /// Loads `descriptor_set` (an encoded `google.protobuf.FileDescriptorSet`)
    /// and lists `services` (fully qualified names) as the server's. Fails if
    /// the set does not decode or its files do not resolve.
    pub fn new<S: Into<String>>(
        descriptor_set: &[u8],
        services: impl IntoIterator<Item = S>,
    ) -> Result<Self, DescriptorError> {
        let pool = DescriptorPool::decode(descriptor_set)?;
        let mut services: Vec<String> = services.into_iter().map(Into::into).collect();
        services.sort();
        services.dedup();
        Ok(ReflectionService {
            index: Arc::new(Index { pool, services }),
        })
    }

    /// The `grpc.reflection.v1.ServerReflection` router.
    pub fn v1(&self) -> ServerReflectionV1Server<ReflectionService> {
        ServerReflectionV1Server::new(self.clone())
    }

    /// The `grpc.reflection.v1alpha.ServerReflection` router.
    pub fn v1alpha(&self) -> ServerReflectionV1AlphaServer<ReflectionService> {
        ServerReflectionV1AlphaServer::new(self.clone())
    }

    /// The answer to one request (pure: no I/O).
    pub fn answer(&self, request: &v1::ServerReflectionRequest) -> v1::ServerReflectionResponse {
        let response = match &request.message_request {
            Some(question) => self.index.answer(question),
            None => error(Code::InvalidArgument, "the request asks nothing"),
        };
        v1::ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request.clone()),
            message_response: Some(response),
        }
    }
}

fn error(code: Code, message: impl Into<String>) -> MessageResponse {
    MessageResponse::ErrorResponse(v1::ErrorResponse {
        error_code: code as i32,
        error_message: message.into(),
    })
}

impl Index {
    fn answer(&self, question: &MessageRequest) -> MessageResponse {
        match question {
            MessageRequest::ListServices(_) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| v1::ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            MessageRequest::FileByFilename(name) => match self.pool.get_file_by_name(name) {
                Some(file) => with_imports(&file),
                None => error(Code::NotFound, format!("no file named {name:?}")),
            },
            MessageRequest::FileContainingSymbol(symbol) => match self.file_of_symbol(symbol) {
                Some(file) => with_imports(&file),
                None => error(Code::NotFound, format!("no symbol {symbol:?}")),
            },
            MessageRequest::FileContainingExtension(request) => {
                let Some(message) = self
                    .pool
                    .get_message_by_name(strip_dot(&request.containing_type))
                else {
                    return error(
                        Code::NotFound,
                        format!("no message type {:?}", request.containing_type),
                    );
                };
                let number = u32::try_from(request.extension_number).ok();
                match message
                    .extensions()
                    .find(|extension| Some(extension.number()) == number)
                {
                    Some(extension) => with_imports(&extension.parent_file()),
                    None => error(
                        Code::NotFound,
                        format!(
                            "{} has no extension number {}",
                            message.full_name(),
                            request.extension_number
                        ),
                    ),
                }
            }
            MessageRequest::AllExtensionNumbersOfType(name) => {
                match self.pool.get_message_by_name(strip_dot(name)) {
                    Some(message) => {
                        let mut numbers: Vec<i32> = message
                            .extensions()
                            .filter_map(|extension| i32::try_from(extension.number()).ok())
                            .collect();
                        numbers.sort_unstable();
                        MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                            base_type_name: message.full_name().to_owned(),
                            extension_number: numbers,
                        })
                    }
                    None => error(Code::NotFound, format!("no message type {name:?}")),
                }
            }
        }
    }

    /// The file defining `symbol`, a fully qualified name (a leading `.` is
    /// accepted): a service, method, message (nested too), field, oneof, enum,
    /// enum value or extension.
    fn file_of_symbol(&self, symbol: &str) -> Option<FileDescriptor> {
        let symbol = strip_dot(symbol);
        let pool = &self.pool;
        if let Some(service) = pool.get_service_by_name(symbol) {
            return Some(service.parent_file());
        }
        if let Some(message) = pool.get_message_by_name(symbol) {
            return Some(message.parent_file());
        }
        if let Some(enumeration) = pool.get_enum_by_name(symbol) {
            return Some(enumeration.parent_file());
        }
        if let Some(extension) = pool.get_extension_by_name(symbol) {
            return Some(extension.parent_file());
        }
        // Members: `parent.member`, where the parent is a service (methods),
        // a message (fields, oneofs) or — protobuf scoping — the scope that
        // holds an enum (enum values are siblings of their enum).
        let (parent, member) = symbol.rsplit_once('.')?;
        if let Some(service) = pool.get_service_by_name(parent) {
            return service
                .methods()
                .any(|method| method.name() == member)
                .then(|| service.parent_file());
        }
        if let Some(message) = pool.get_message_by_name(parent) {
            let found = message.get_field_by_name(member).is_some()
                || message.oneofs().any(|oneof| oneof.name() == member)
                || message
                    .child_enums()
                    .any(|e| e.get_value_by_name(member).is_some());
            if found {
                return Some(message.parent_file());
            }
        }
        // A top-level enum's values live in the package scope.
        pool.all_enums()
            .find(|e| {
                e.parent_message().is_none()
                    && e.package_name() == parent
                    && e.get_value_by_name(member).is_some()
            })
            .map(|e| e.parent_file())
    }
}

fn strip_dot(name: &str) -> &str {
    name.strip_prefix('.').unwrap_or(name)
}

/// A `FileDescriptorResponse`: `file` first, then every file it imports,
/// directly or not, each once.
fn with_imports(file: &FileDescriptor) -> MessageResponse {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut stack = vec![file.clone()];
    while let Some(next) = stack.pop() {
        if !seen.insert(next.name().to_owned()) {
            continue;
        }
        stack.extend(next.dependencies());
        order.push(next.file_descriptor_proto().encode_to_vec());
    }
    MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
        file_descriptor_proto: order,
    })
}

/// Re-reads a message as another type with the same field numbers (the v1 and
/// v1alpha messages). Both are generated from protos with identical numbers,
/// so this cannot fail for them; a failure is reported as INTERNAL anyway.
fn convert<A: prost::Message, B: prost::Message + Default>(message: &A) -> Result<B, Status> {
    B::decode(message.encode_to_vec().as_slice())
        .map_err(|e| Status::internal(format!("reflection message conversion: {e}")))
}

impl v1::ServerReflection for ReflectionService {
    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1::ServerReflectionRequest>>,
        mut sink: ResponseSink<v1::ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let mut requests = request.into_inner();
        while let Some(question) = requests.message().await? {
            sink.send(&self.answer(&question)).await?;
        }
        Ok(())
    }
}

impl v1alpha::ServerReflection for ReflectionService {
    async fn server_reflection_info(
        &self,
        request: Request<Streaming<v1alpha::ServerReflectionRequest>>,
        mut sink: ResponseSink<v1alpha::ServerReflectionResponse>,
    ) -> Result<(), Status> {
        let mut requests = request.into_inner();
        while let Some(question) = requests.message().await? {
            let answer = self.answer(&convert(&question)?);
            sink.send(&convert(&answer)?).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::prost_types::FileDescriptorProto;

    fn service() -> ReflectionService {
        ReflectionService::new(
            crate::pb::FILE_DESCRIPTOR_SET,
            ["grpc.health.v1.Health", "chat.ChatService", V1_SERVICE],
        )
        .unwrap()
    }

    fn ask(question: MessageRequest) -> MessageResponse {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        let response = service().answer(&request);
        assert_eq!(response.original_request, Some(request));
        response.message_response.unwrap()
    }

    /// The file names in a FileDescriptorResponse, in order.
    fn files(response: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(files) = response else {
            panic!("expected files, got {response:?}");
        };
        files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                FileDescriptorProto::decode(bytes.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    fn error_code(response: MessageResponse) -> i32 {
        match response {
            MessageResponse::ErrorResponse(e) => e.error_code,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn lists_the_registered_services_sorted() {
        let MessageResponse::ListServicesResponse(list) =
            ask(MessageRequest::ListServices(String::new()))
        else {
            panic!("expected a service list");
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["chat.ChatService", "grpc.health.v1.Health", V1_SERVICE]
        );
    }

    #[test]
    fn finds_files_by_symbol_with_their_imports() {
        for symbol in [
            "chat.ChatService",
            ".chat.ChatService",
            "chat.ChatService.ChatStream",
            "chat.ChatMessage",
            "chat.ChatMessage.user",
        ] {
            assert_eq!(
                files(ask(MessageRequest::FileContainingSymbol(symbol.into()))),
                ["chat.proto"],
                "{symbol}"
            );
        }
        // test.proto imports empty.proto and messages.proto: all three come.
        let mut test = files(ask(MessageRequest::FileContainingSymbol(
            "grpc.testing.TestService".into(),
        )));
        assert_eq!(test.remove(0), "grpc/testing/test.proto");
        test.sort();
        assert_eq!(
            test,
            ["grpc/testing/empty.proto", "grpc/testing/messages.proto"]
        );
        // A nested enum and one of its values.
        assert_eq!(
            files(ask(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.HealthCheckResponse.ServingStatus".into()
            ))),
            ["grpc/health/v1/health.proto"]
        );
        assert_eq!(
            files(ask(MessageRequest::FileContainingSymbol(
                "grpc.health.v1.HealthCheckResponse.SERVING".into()
            ))),
            ["grpc/health/v1/health.proto"]
        );
    }

    #[test]
    fn finds_files_by_name() {
        assert_eq!(
            files(ask(MessageRequest::FileByFilename(
                "grpc/reflection/v1/reflection.proto".into()
            ))),
            ["grpc/reflection/v1/reflection.proto"]
        );
    }

    #[test]
    fn unknown_names_get_not_found_errors() {
        let not_found = Code::NotFound as i32;
        for question in [
            MessageRequest::FileByFilename("nope.proto".into()),
            MessageRequest::FileContainingSymbol("chat.Nope".into()),
            MessageRequest::FileContainingSymbol("chat.ChatService.Nope".into()),
            MessageRequest::FileContainingSymbol("".into()),
            MessageRequest::AllExtensionNumbersOfType("chat.Nope".into()),
            MessageRequest::FileContainingExtension(v1::ExtensionRequest {
                containing_type: "chat.ChatMessage".into(),
                extension_number: 100,
            }),
            MessageRequest::FileContainingExtension(v1::ExtensionRequest {
                containing_type: "chat.Nope".into(),
                extension_number: 100,
            }),
        ] {
            assert_eq!(error_code(ask(question.clone())), not_found, "{question:?}");
        }
    }

    #[test]
    fn extension_numbers_of_a_known_type() {
        // Our protos define no extensions: a known type has an empty list.
        let MessageResponse::AllExtensionNumbersResponse(numbers) = ask(
            MessageRequest::AllExtensionNumbersOfType(".chat.ChatMessage".into()),
        ) else {
            panic!("expected extension numbers");
        };
        assert_eq!(numbers.base_type_name, "chat.ChatMessage");
        assert!(numbers.extension_number.is_empty());
    }

    #[test]
    fn an_empty_request_is_invalid() {
        let response = service().answer(&v1::ServerReflectionRequest::default());
        assert_eq!(
            error_code(response.message_response.unwrap()),
            Code::InvalidArgument as i32
        );
    }

    #[test]
    fn v1alpha_messages_convert_both_ways() {
        let request = v1alpha::ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "chat.ChatMessage".into(),
                ),
            ),
        };
        let as_v1: v1::ServerReflectionRequest = convert(&request).unwrap();
        assert_eq!(
            as_v1.message_request,
            Some(MessageRequest::FileContainingSymbol(
                "chat.ChatMessage".into()
            ))
        );
        let back: v1alpha::ServerReflectionResponse = convert(&service().answer(&as_v1)).unwrap();
        assert_eq!(back.original_request, Some(request));
        assert!(matches!(
            back.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ));
    }
}
