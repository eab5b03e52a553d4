//! `chat-server`'s start-up failures, each by running the binary: exactly
//! one line on stderr that names the flag, its value and what to do; a
//! non-zero exit status; and nothing announced as listening (every listener
//! is bound, every file read, before the first "listening" line).
//!
//! Ports in use are held by a listener of this test; files are made in
//! Cargo's per-target temp dir. Every run is bounded by [`WAIT`]: a server
//! that starts instead of failing is killed and the test fails.

mod common;

use common::WAIT;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::tls::TestPki;

/// What one run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `chat-server ARGS` to its end (killed after [`WAIT`]).
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start chat-server");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "chat-server {args:?} started instead of failing:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `chat-server ARGS` and checks that it fails with exactly `line`
/// (after `chat-server: `) and exit status `code`.
fn fails(args: &[&str], line: &str, code: i32) {
    let run = run(args);
    assert_eq!(
        run.stderr,
        format!("chat-server: {line}\n"),
        "chat-server {args:?}"
    );
    assert_eq!(run.code, Some(code), "chat-server {args:?}: {}", run.stderr);
    assert!(
        !run.stdout.contains("listening"),
        "chat-server {args:?} announced a listener before failing:\n{}",
        run.stdout
    );
}

/// A port held by this test until the listener is dropped.
fn busy_port() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// A file under Cargo's temp dir holding `text`.
fn file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("server-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const FREE: [&str; 2] = ["--addr", "127.0.0.1:0"];

#[test]
fn an_address_in_use_names_its_flag() {
    let (_held, busy) = busy_port();
    let in_use = |flag: &str| {
        format!(
            "{flag} {busy}: the address is already in use; stop what listens there or \
             choose another port with {flag}"
        )
    };
    fails(&["--addr", &busy], &in_use("--addr"), 1);
    // Before, the gRPC port was announced as listening first.
    fails(
        &[&FREE[..], &["--web-addr", &busy]].concat(),
        &in_use("--web-addr"),
        1,
    );
    fails(
        &[&FREE[..], &["--metrics-addr", &busy]].concat(),
        &in_use("--metrics-addr"),
        1,
    );
    // An address no interface has.
    fails(
        &["--addr", "192.0.2.1:50053"],
        "--addr 192.0.2.1:50053: no interface of this machine has that address; use 0.0.0.0 \
         (every interface), 127.0.0.1 (this machine only) or one of its addresses with --addr",
        1,
    );
    // One address for two listeners.
    let (held, addr) = busy_port();
    drop(held);
    fails(
        &["--addr", &addr, "--metrics-addr", &addr],
        &format!("--metrics-addr {addr}: is also --addr; give each listener its own port"),
        1,
    );
}

#[test]
fn certificates_and_keys() {
    let missing = "/nonexistent/server.pem";
    fails(
        &[&FREE[..], &["--tls-cert", missing]].concat(),
        "--tls-cert /nonexistent/server.pem: needs --tls-key, the certificate's private key",
        1,
    );
    fails(
        &[&FREE[..], &["--tls-key", missing]].concat(),
        "--tls-key /nonexistent/server.pem: needs --tls-cert, the certificate it is the key of",
        1,
    );
    let pki = TestPki::generate();
    let cert = pki.cert.display().to_string();
    let key = pki.key.display().to_string();
    fails(
        &[&FREE[..], &["--tls-cert", missing, "--tls-key", &key]].concat(),
        "--tls-cert /nonexistent/server.pem: cannot read it (No such file or directory \
         (os error 2)); give a readable PEM file",
        1,
    );
    fails(
        &[&FREE[..], &["--tls-cert", &cert, "--tls-key", missing]].concat(),
        "--tls-key /nonexistent/server.pem: cannot read it (No such file or directory \
         (os error 2)); give a readable PEM file",
        1,
    );
    let garbage = file("garbage.pem", "not PEM at all\n");
    let garbage = garbage.display().to_string();
    fails(
        &[&FREE[..], &["--tls-cert", &garbage, "--tls-key", &key]].concat(),
        &format!(
            "--tls-cert {garbage}: no certificate: expected at least one -----BEGIN \
             CERTIFICATE----- block; give the certificate chain in PEM"
        ),
        1,
    );
    // The certificate given as the key: readable, but no key in it.
    fails(
        &[&FREE[..], &["--tls-cert", &cert, "--tls-key", &cert]].concat(),
        &format!(
            "--tls-key {cert}: no usable private key: no items found; give the certificate's \
             private key in PEM"
        ),
        1,
    );
    // A key that is not the certificate's.
    let other = TestPki::generate();
    let other_key = other.key.display().to_string();
    fails(
        &[&FREE[..], &["--tls-cert", &cert, "--tls-key", &other_key]].concat(),
        &format!(
            "--tls-cert {cert} with --tls-key {other_key}: certificate and key do not make a \
             usable pair: keys may not be consistent: KeyMismatch; give the key that belongs \
             to the certificate"
        ),
        1,
    );
}

#[test]
fn token_files_redis_urls_and_durations() {
    fails(
        &[&FREE[..], &["--auth-tokens", "/nonexistent/tokens.txt"]].concat(),
        "--auth-tokens /nonexistent/tokens.txt: cannot read it (No such file or directory \
         (os error 2)); give a readable file of `<token> <user>` lines",
        1,
    );
    let tokens = file("tokens.txt", "# ok\nsecret-1 alice\nsecret-2\n");
    let tokens = tokens.display().to_string();
    fails(
        &[&FREE[..], &["--auth-tokens", &tokens]].concat(),
        &format!(
            "--auth-tokens {tokens}: line 3: expected `<token> <user name>`; each line is \
             `<token> <user>` (`#` starts a comment)"
        ),
        1,
    );
    fails(
        &[&FREE[..], &["--redis", "localhost:6379"]].concat(),
        "--redis localhost:6379: not a Redis URL (Redis URL did not parse - \
         InvalidClientConfig); give redis://HOST[:PORT][/DB]",
        1,
    );
    fails(
        &[&FREE[..], &["--slow-grace-secs=-1"]].concat(),
        "--slow-grace-secs -1: not a duration; give seconds, 0 or more",
        1,
    );
    // What clap rejects: its first line, and where to read more.
    fails(
        &["--addr", "localhost"],
        "invalid value 'localhost' for '--addr <ADDR>': invalid socket address syntax; \
         see chat-server --help",
        2,
    );
}
