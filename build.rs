//! Code generation: protobuf messages with prost, services with our own generator.
//!
//! `protox` compiles the `.proto` files in pure Rust (no system `protoc` needed),
//! `prost-build` turns the messages into Rust structs, and [`ServiceGen`] below
//! turns every `service` into two things our framework wants:
//!
//! * a **server trait** with one method per RPC, plus a `…Server<T>` router that
//!   implements `crate::server::Service` and dispatches by method name;
//! * a **typed client** `…Client` over `crate::client::Channel`.
//!
//! The shape of each RPC decides the signatures:
//!
//! | proto                          | server method                                      | client method                     |
//! |--------------------------------|----------------------------------------------------|-----------------------------------|
//! | `rpc M(A) returns (B)`         | `m(Request<A>) -> Result<Response<B>, Status>`     | `m(Request<A>) -> Response<B>`    |
//! | `rpc M(A) returns (stream B)`  | `m(Request<A>, ResponseSink<B>) -> Result<(), Status>` | `m(Request<A>) -> Response<Streaming<B>>` |
//! | `rpc M(stream A) returns (B)`  | `m(Request<Streaming<A>>) -> Result<Response<B>, Status>` | `m(Request<()>) -> ClientStreamingCall<A, B>` |
//! | `rpc M(stream A) returns (stream B)` | `m(Request<Streaming<A>>, ResponseSink<B>) -> Result<(), Status>` | `m(Request<()>) -> BidiCall<A, B>` |
//!
//! The file descriptor set is also written to `$OUT_DIR/descriptors.bin`, for
//! server reflection.

use std::fmt::Write as _;
use std::path::PathBuf;

use prost_build::{Method, Service, ServiceGenerator};

const PROTOS: &[&str] = &[
    "chat.proto",
    "grpc/testing/test.proto",
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
    "google/rpc/status.proto",
    "connectrpc/conformance/v1/config.proto",
    "connectrpc/conformance/v1/service.proto",
    "connectrpc/conformance/v1/server_compat.proto",
    "connectrpc/conformance/v1/client_compat.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out_dir.join("descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    prost_build::Config::new()
        .service_generator(Box::new(ServiceGen))
        .compile_fds(fds)?;
    Ok(())
}

/// Emits the server trait, router and client for each service.
struct ServiceGen;

impl ServiceGenerator for ServiceGen {
    fn generate(&mut self, service: Service, buf: &mut String) {
        // `write!` into a String cannot fail; the results are ignored on purpose.
        let _ = server(&service, buf);
        let _ = client(&service, buf);
    }
}

fn full_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

fn doc(comments: &[String], indent: &str, buf: &mut String) -> std::fmt::Result {
    for line in comments {
        writeln!(buf, "{indent}///{}", line.trim_end())?;
    }
    Ok(())
}

/// The server trait and its router.
fn server(service: &Service, buf: &mut String) -> std::fmt::Result {
    let name = &service.name;
    let full = full_name(service);
    writeln!(buf, "/// Server side of `{full}`: implement this trait,")?;
    writeln!(
        buf,
        "/// then serve it with [`{name}Server`] in a `crate::server::Server`."
    )?;
    if !service.comments.leading.is_empty() {
        writeln!(buf, "///")?;
        doc(&service.comments.leading, "", buf)?;
    }
    writeln!(buf, "pub trait {name}: Send + Sync + 'static {{")?;
    for m in &service.methods {
        doc(&m.comments.leading, "    ", buf)?;
        let (input, output) = (&m.input_type, &m.output_type);
        let req = if m.client_streaming {
            format!("crate::rpc::Request<crate::rpc::Streaming<{input}>>")
        } else {
            format!("crate::rpc::Request<{input}>")
        };
        if m.server_streaming {
            writeln!(
                buf,
                "    fn {}(&self, request: {req}, sink: crate::server::ResponseSink<{output}>) \
                 -> impl ::core::future::Future<Output = Result<(), crate::Status>> + Send;",
                m.name
            )?;
        } else {
            writeln!(
                buf,
                "    fn {}(&self, request: {req}) -> impl ::core::future::Future<Output = \
                 Result<crate::rpc::Response<{output}>, crate::Status>> + Send;",
                m.name
            )?;
        }
    }
    writeln!(buf, "}}\n")?;

    writeln!(
        buf,
        "/// Routes calls of `{full}` to an implementation of [`{name}`]."
    )?;
    writeln!(
        buf,
        "pub struct {name}Server<T> {{\n    inner: std::sync::Arc<T>,\n}}\n"
    )?;
    writeln!(buf, "impl<T: {name}> {name}Server<T> {{")?;
    writeln!(
        buf,
        "    /// The fully qualified service name, as in `:path`."
    )?;
    writeln!(buf, "    pub const NAME: &'static str = \"{full}\";")?;
    writeln!(buf, "    /// Serves `inner`.")?;
    writeln!(
        buf,
        "    pub fn new(inner: T) -> Self {{\n        Self::from_arc(std::sync::Arc::new(inner))\n    }}"
    )?;
    writeln!(
        buf,
        "    /// Serves an implementation shared with other owners."
    )?;
    writeln!(
        buf,
        "    pub fn from_arc(inner: std::sync::Arc<T>) -> Self {{\n        Self {{ inner }}\n    }}"
    )?;
    writeln!(buf, "}}\n")?;

    writeln!(
        buf,
        "impl<T: {name}> crate::server::Service for {name}Server<T> {{"
    )?;
    writeln!(
        buf,
        "    fn name(&self) -> &'static str {{\n        Self::NAME\n    }}\n"
    )?;
    writeln!(
        buf,
        "    fn call(&self, method: &str, call: crate::server::ServerCall) -> crate::server::Dispatch {{"
    )?;
    writeln!(
        buf,
        "        let inner = std::sync::Arc::clone(&self.inner);"
    )?;
    writeln!(buf, "        match method {{")?;
    for m in &service.methods {
        let helper = match (m.client_streaming, m.server_streaming) {
            (false, false) => "unary",
            (false, true) => "server_streaming",
            (true, false) => "client_streaming",
            (true, true) => "bidi_streaming",
        };
        let args = if m.server_streaming {
            "req, sink"
        } else {
            "req"
        };
        let params = if m.server_streaming {
            "|req, sink|"
        } else {
            "|req|"
        };
        if m.client_streaming && m.server_streaming {
            // A long-lived stream's future keeps every captured value for
            // its whole life, even once moved out: the request is captured
            // boxed (8 bytes) rather than inline, and unboxed at the call by
            // a function that takes the box, so its memory is freed then —
            // `*req` would free it only when the future ends.
            writeln!(
                buf,
                "            \"{}\" => crate::server::{helper}(call, move |req, sink| {{ let req = Box::new(req); async move {{ inner.{}(crate::server::unbox(req), sink).await }} }}),",
                m.proto_name, m.name
            )?;
            continue;
        }
        writeln!(
            buf,
            "            \"{}\" => crate::server::{helper}(call, move {params} async move {{ inner.{}({args}).await }}),",
            m.proto_name, m.name
        )?;
    }
    writeln!(buf, "            _ => call.unimplemented_method(),")?;
    writeln!(buf, "        }}\n    }}\n}}\n")?;
    Ok(())
}

/// The typed client.
fn client(service: &Service, buf: &mut String) -> std::fmt::Result {
    let name = &service.name;
    let full = full_name(service);
    writeln!(
        buf,
        "/// Typed client of `{full}` over a [`crate::client::Channel`]."
    )?;
    writeln!(buf, "#[derive(Clone, Debug)]")?;
    writeln!(
        buf,
        "pub struct {name}Client {{\n    channel: crate::client::Channel,\n}}\n"
    )?;
    writeln!(buf, "impl {name}Client {{")?;
    writeln!(
        buf,
        "    /// Calls go over `channel` (cheap to clone: calls share its connection)."
    )?;
    writeln!(
        buf,
        "    pub fn new(channel: crate::client::Channel) -> Self {{\n        Self {{ channel }}\n    }}"
    )?;
    for m in &service.methods {
        client_method(&full, m, buf)?;
    }
    writeln!(buf, "}}\n")?;
    Ok(())
}

fn client_method(full: &str, m: &Method, buf: &mut String) -> std::fmt::Result {
    let path = format!("/{full}/{}", m.proto_name);
    let (input, output) = (&m.input_type, &m.output_type);
    writeln!(buf)?;
    doc(&m.comments.leading, "    ", buf)?;
    match (m.client_streaming, m.server_streaming) {
        (false, false) => writeln!(
            buf,
            "    pub async fn {}(&self, request: impl Into<crate::rpc::Request<{input}>>) \
             -> Result<crate::rpc::Response<{output}>, crate::Status> {{\n        \
             self.channel.unary(\"{path}\", request.into()).await\n    }}",
            m.name
        ),
        (false, true) => writeln!(
            buf,
            "    pub async fn {}(&self, request: impl Into<crate::rpc::Request<{input}>>) \
             -> Result<crate::rpc::Response<crate::rpc::Streaming<{output}>>, crate::Status> {{\n        \
             self.channel.server_streaming(\"{path}\", request.into()).await\n    }}",
            m.name
        ),
        (true, false) => writeln!(
            buf,
            "    pub async fn {}(&self, request: impl Into<crate::rpc::Request<()>>) \
             -> Result<crate::client::ClientStreamingCall<{input}, {output}>, crate::Status> {{\n        \
             self.channel.client_streaming(\"{path}\", request.into()).await\n    }}",
            m.name
        ),
        (true, true) => writeln!(
            buf,
            "    pub async fn {}(&self, request: impl Into<crate::rpc::Request<()>>) \
             -> Result<crate::client::BidiCall<{input}, {output}>, crate::Status> {{\n        \
             self.channel.bidi_streaming(\"{path}\", request.into()).await\n    }}",
            m.name
        ),
    }
}
