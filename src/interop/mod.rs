//! The gRPC interoperability test service and cases.
//!
//! * [`server`] — `grpc.testing.TestService` as the interop test descriptions
//!   ask a server to behave; served by the `interop-server` binary.
//! * [`client`] — the standard test cases (`empty_unary`, `large_unary`, …);
//!   run by the `interop-client` binary against any interop server.

pub mod client;
pub mod server;
