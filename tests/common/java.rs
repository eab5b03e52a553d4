//! grpc-java's interop peers, for the tests that run them: its
//! `TestServiceClient` (Netty or OkHttp transport) and `TestServiceServer`,
//! from the jars `scripts/setup-java.sh` copies into
//! `tests/interop/java/lib/`.
//!
//! * [`ensure_java_setup`] runs the script once per test process (it returns
//!   at once when lib/ is up to date; the first run needs Java, Maven and
//!   Maven Central).
//! * [`client_args`] / [`server_args`] build a `java` command line for either
//!   class; run it with [`run_client`](super::run_client) or
//!   [`Server::spawn`](super::Server::spawn) and [`JAVA`].
//! * [`Transport`] picks the client's HTTP/2 stack.

use std::path::Path;
use std::sync::OnceLock;

use super::repo_root;

/// The program that runs the peers (`java` from `PATH`).
pub const JAVA: &str = "java";

/// The version of `io.grpc:grpc-interop-testing` that
/// `tests/interop/java/pom.xml` pins.
pub const GRPC_JAVA_VERSION: &str = "1.79.0";

/// JVM options for a short-lived peer: C1 only (a case runs for about a
/// second; the C2 compiler's warm-up would cost more than it saves).
const JVM_OPTIONS: &[&str] = &["-XX:TieredStopAtLevel=1"];

/// The client's HTTP/2 transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// grpc-netty (`--use_okhttp=false`), the server-side and desktop stack.
    Netty,
    /// grpc-okhttp (`--use_okhttp=true`), the stack Android apps use.
    OkHttp,
}

impl Transport {
    /// The name used in test output and conformance lines.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Netty => "Netty",
            Transport::OkHttp => "OkHttp",
        }
    }
}

/// Runs `scripts/setup-java.sh` once per test process.
pub fn ensure_java_setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    super::run_setup_once(
        &SETUP,
        "setup-java.sh",
        "Java >= 11, Maven, and Maven Central reachable on the first run",
    );
}

/// `-cp <lib>/*` and the JVM options, after running the setup.
fn jvm_args(class: &str) -> Vec<String> {
    ensure_java_setup();
    let lib = repo_root().join("tests/interop/java/lib");
    assert!(
        lib.join(format!("grpc-interop-testing-{GRPC_JAVA_VERSION}.jar"))
            .is_file(),
        "{} has no grpc-interop-testing jar even after scripts/setup-java.sh \
         succeeded; try `scripts/setup-java.sh --force`",
        lib.display()
    );
    let mut args: Vec<String> = JVM_OPTIONS.iter().map(|s| s.to_string()).collect();
    // The JVM expands `dir/*` itself: every jar in the directory.
    args.push("-cp".into());
    args.push(format!("{}/*", lib.display()));
    args.push(format!("io.grpc.testing.integration.{class}"));
    args
}

/// `java … TestServiceClient` running `case` against 127.0.0.1:`port` in
/// plaintext over `transport`. grpc-java's flags must be `--name=value`.
/// The soak cases are bounded to a few iterations with generous per-call
/// latency, so they finish in seconds on a loaded machine.
pub fn client_args(port: u16, case: &str, transport: Transport) -> Vec<String> {
    let mut args = jvm_args("TestServiceClient");
    args.extend([
        "--server_host=127.0.0.1".to_owned(),
        format!("--server_port={port}"),
        format!("--test_case={case}"),
        "--use_tls=false".to_owned(),
        format!("--use_okhttp={}", transport == Transport::OkHttp),
        "--soak_iterations=5".to_owned(),
        "--soak_per_iteration_max_acceptable_latency_ms=5000".to_owned(),
        "--soak_overall_timeout_seconds=40".to_owned(),
    ]);
    args
}

/// `java … TestServiceServer` on `port`, plaintext.
pub fn server_args(port: u16) -> Vec<String> {
    let mut args = jvm_args("TestServiceServer");
    args.extend([format!("--port={port}"), "--use_tls=false".to_owned()]);
    args
}

/// The `java` program, as a path for [`run_client`](super::run_client) and
/// [`Server::spawn`](super::Server::spawn) (found on `PATH`).
pub fn java() -> &'static Path {
    Path::new(JAVA)
}
