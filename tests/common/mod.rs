//! Helpers shared by the Rust integration tests that drive external peers
//! (grpc-go's interop client/server, our Go compression client, later the
//! Python chat peers).
//!
//! * [`interop_bin`] locates a binary built by `scripts/setup-interop.sh` in
//!   `tests/interop/bin/`, running the script once per test process first
//!   (it returns in a fraction of a second when everything is up to date).
//! * [`cargo_bin`] locates one of this package's binaries (`interop-server`,
//!   `interop-client`, ...).
//! * [`Server::spawn`] starts a server on a free 127.0.0.1 port, waits until
//!   the port accepts connections and kills the process when dropped.
//! * [`run_client`] runs a client to completion with a timeout.
//! * [`Peer`] runs a long-lived, scripted peer (the chat peers of
//!   `tests/interop/chat/`): lines to its stdin, each stdout line handed to a
//!   callback on a reader thread; killed when dropped.
//! * [`interop_python`] / [`interop_path`] locate the venv's Python and files
//!   under `tests/interop/` (after running the setup script).
//! * [`chat_server`] / [`chat_server_on`] start a `chat-server` process.
//! * [`ChatPeer`] / [`chat_peer_args`] run a Go or Python chat peer.
//! * [`Collected`] holds what a reader thread received, and waits for it.
//! * [`chat_stream`] opens named ChatStream members on our client;
//!   [`session`] subscribes browser sessions (`Subscribe`) natively.
//! * [`java`] runs grpc-java's interop client and server (after
//!   `scripts/setup-java.sh`).
//! * [`wait`]: the one bound every test waits with, [`WAIT`], and
//!   [`wait_until`] (async) / [`wait_until_blocking`] (threads), which wait
//!   for a condition instead of sleeping a fixed time.
//! * [`json`] reads the peers' flat JSON lines; [`in_process`] serves one of
//!   our services in this process (its [`in_process::start`] is the one
//!   way a test starts a server of ours in process); [`hostile`] is a chat server that sends
//!   escape sequences; [`raw`] speaks raw HTTP/2 (the `h2` crate, or frames
//!   written by hand) for tests that play a misbehaving client.
//!
//! Only `std` is used here and in [`json`] (tokio in the modules that need
//! it). Each test file includes this with
//! `mod common;`, and not every file uses every helper.
#![allow(dead_code)]

pub mod chat_stream;
pub mod hostile;
pub mod in_process;
pub mod java;
pub mod json;
pub mod member;
pub mod raw;
pub mod redis;
pub mod redis_cluster;
pub mod session;
pub mod tls;
pub mod wait;

#[allow(unused_imports)] // not every test file waits
pub use wait::{WAIT, wait_until, wait_until_blocking};

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a client (one interop case) may run before it is killed.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to accept connections after being spawned.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// The package root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/interop/bin`, where `scripts/setup-interop.sh` puts the Go peers.
pub fn interop_bin_dir() -> PathBuf {
    repo_root().join("tests/interop/bin")
}

/// Runs the setup script `scripts/<name>` (which installs peers and
/// returns at once when they are up to date) at most once per test process,
/// whatever asks for it: `once` is the caller's own cell. Panics with the
/// script's output, and what it `needs`, if it fails.
pub fn run_setup_once(once: &'static OnceLock<Result<(), String>>, name: &str, needs: &str) {
    let result = once.get_or_init(|| {
        let script = repo_root().join("scripts").join(name);
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            eprint!("{text}");
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}); it needs {needs}. Output:\n{text}",
                script.display(),
                out.status
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Runs `scripts/setup-interop.sh` once per test process.
pub fn ensure_interop_setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    run_setup_once(
        &SETUP,
        "setup-interop.sh",
        "Go >= 1.24 and Python 3 with venv, and the Go module proxy / PyPI reachable on \
         the first run",
    );
}

/// Runs `scripts/setup-conformance.sh` once per test process: installs the
/// pinned Connect conformance runner (`connectconformance`) from the Go
/// module proxy into `tests/conformance/bin/` (quick when up to date).
/// Returns the runner's path.
pub fn conformance_runner() -> PathBuf {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    run_setup_once(
        &SETUP,
        "setup-conformance.sh",
        "Go and the Go module proxy reachable on the first run",
    );
    repo_root().join("tests/conformance/bin/connectconformance")
}

/// Path of a peer built by `scripts/setup-interop.sh` (`go-interop-client`,
/// `go-interop-server`, `go-compression-client`, `go-compression-server`,
/// `ghz`, `grpc-health-probe`, ...). Runs the script first (once per process).
pub fn interop_bin(name: &str) -> PathBuf {
    ensure_interop_setup();
    let path = interop_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing even after scripts/setup-interop.sh succeeded; \
         try `scripts/setup-interop.sh --force`",
        path.display()
    );
    path
}

/// Path of one of this package's binaries. `compiled` is
/// `option_env!("CARGO_BIN_EXE_<name>")` evaluated in the test file (Cargo
/// sets it, and builds the binary, for every `[[bin]]` target of the package;
/// `option_env!` rather than `env!` keeps the test file compiling while a
/// binary target does not exist yet). Falls back to `<target dir>/debug/<name>`.
pub fn cargo_bin(name: &str, compiled: Option<&'static str>) -> PathBuf {
    if let Some(p) = compiled {
        return PathBuf::from(p);
    }
    // CARGO_TARGET_TMPDIR is <target dir>/tmp; the debug binaries are beside it.
    let fallback = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../debug")
        .join(name);
    assert!(
        fallback.is_file(),
        "binary `{name}` is not a target of this package yet (expected \
         src/bin/{name}.rs or a [[bin]] entry) and {} does not exist",
        fallback.display()
    );
    fallback
}

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released again
/// before returning, so there is a small window in which another process
/// could take it; [`Server::spawn`] retries on a different port if so).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// A unique file under Cargo's per-target temp dir for a child's output.
fn log_path(label: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("peer-logs");
    std::fs::create_dir_all(&dir).expect("create peer log dir");
    let safe: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!(
        "{}-{}-{safe}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn file_name(bin: &Path) -> String {
    bin.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Starts `bin args...` with no stdin, its stdout and stderr going to a new
/// log file; returns the child and the log's path.
fn spawn_logged(bin: &Path, args: &[String]) -> (Child, PathBuf) {
    let log = log_path(&file_name(bin));
    let out = File::create(&log).expect("create log");
    let err = out.try_clone().expect("clone log handle");
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
    (child, log)
}

/// A server child process listening on 127.0.0.1:`port`. Killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub name: String,
    log: PathBuf,
}

impl Server {
    /// Spawns `bin` with `args(port)` on a free port and waits until
    /// 127.0.0.1:port accepts a TCP connection. Retries on another port if the
    /// server exits early (e.g. the port was taken in the meantime); panics
    /// with the server's output if it never comes up.
    pub fn spawn(bin: &Path, args: impl Fn(u16) -> Vec<String>) -> Server {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            match Server::try_spawn(bin, port, &args(port)) {
                Ok(server) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("server did not start: {last_err}");
    }

    /// Spawns `bin args...`, which is to listen on 127.0.0.1:`port` (one the
    /// caller chose, e.g. to restart a server where its clients expect it),
    /// and waits until it accepts a TCP connection; panics with the server's
    /// output if it does not.
    pub fn spawn_on(bin: &Path, port: u16, args: &[String]) -> Server {
        Server::try_spawn(bin, port, args).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    fn try_spawn(bin: &Path, port: u16, argv: &[String]) -> Result<Server, String> {
        let (child, log) = spawn_logged(bin, argv);
        let mut server = Server {
            child,
            port,
            name: file_name(bin),
            log,
        };
        match server.wait_ready() {
            Ok(()) => Ok(server),
            // Dropping `server` kills it if it is still running.
            Err(e) => Err(format!(
                "{} {argv:?}: {e}\n--- server output ---\n{}",
                bin.display(),
                read_log(&server.log)
            )),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited with {status} before accepting connections"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not accepting on {addr} after {SERVER_START_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id (to send it a signal with `kill`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// The server's stdout+stderr so far.
    pub fn output(&self) -> String {
        read_log(&self.log)
    }

    /// Panics (with its output) if the server has exited, e.g. crashed while
    /// serving a test.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "server {} exited with {status} during the test\n--- server output ---\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the log of a failed test (its path is in target/tmp/peer-logs).
        if !thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// This package's `chat-server`.
pub fn chat_server_bin() -> PathBuf {
    cargo_bin("chat-server", option_env!("CARGO_BIN_EXE_chat-server"))
}

fn chat_server_args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--addr".to_owned(), format!("127.0.0.1:{port}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `chat-server --addr 127.0.0.1:PORT <extra>` on a free port.
pub fn chat_server(extra: &[&str]) -> Server {
    Server::spawn(&chat_server_bin(), |port| chat_server_args(port, extra))
}

/// `chat-server --addr 127.0.0.1:PORT <extra>` on the given port.
pub fn chat_server_on(port: u16, extra: &[&str]) -> Server {
    Server::spawn_on(&chat_server_bin(), port, &chat_server_args(port, extra))
}

/// The outcome of [`run_client`].
pub struct ClientRun {
    pub status: Option<ExitStatus>, // None: killed after the timeout
    pub output: String,             // stdout and stderr, interleaved
    pub elapsed: Duration,
    pub command: String,
}

impl ClientRun {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `bin args...` to completion, killing it after `timeout`.
pub fn run_client(bin: &Path, args: &[String], timeout: Duration) -> ClientRun {
    let command = format!("{} {}", bin.display(), args.join(" "));
    let start = Instant::now();
    let (mut child, log) = spawn_logged(bin, args);
    let status = loop {
        match child.try_wait().expect("wait for client") {
            Some(status) => break Some(status),
            None if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    let output = read_log(&log);
    let _ = std::fs::remove_file(&log);
    ClientRun {
        status,
        output,
        elapsed: start.elapsed(),
        command,
    }
}

/// Runs a client against `server` and panics with both sides' output unless
/// the client exits 0 within [`CLIENT_TIMEOUT`] and the server is still up.
pub fn assert_client_passes(bin: &Path, args: &[String], server: &mut Server) {
    let run = run_client(bin, args, CLIENT_TIMEOUT);
    if !run.success() {
        let how = match run.status {
            Some(s) => format!("failed ({s})"),
            None => format!("timed out after {CLIENT_TIMEOUT:?} and was killed"),
        };
        panic!(
            "client {how} after {:.2?}\ncommand: {}\n--- client output ---\n{}\
             --- server ({} on 127.0.0.1:{}) output ---\n{}",
            run.elapsed,
            run.command,
            run.output,
            server.name,
            server.port,
            server.output()
        );
    }
    server.assert_running();
}

/// The Python of `tests/interop/.venv` (grpcio, grpcio-tools). Runs the setup
/// script first (once per process).
pub fn interop_python() -> PathBuf {
    interop_path(".venv/bin/python")
}

/// A file under `tests/interop/` that `scripts/setup-interop.sh` provides or
/// generates (`chat/py_client.py`, ...). Runs the script first.
pub fn interop_path(relative: &str) -> PathBuf {
    ensure_interop_setup();
    let path = repo_root().join("tests/interop").join(relative);
    assert!(
        path.exists(),
        "{} is missing even after scripts/setup-interop.sh succeeded; \
         try `scripts/setup-interop.sh --force`",
        path.display()
    );
    path
}

/// A chat peer of `tests/interop/chat/`, another gRPC implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatPeer {
    /// `py_client.py` (grpcio).
    Python,
    /// `go-chat-client` (grpc-go).
    Go,
}

impl ChatPeer {
    /// `py` or `go`, for labels.
    pub fn short(self) -> &'static str {
        match self {
            ChatPeer::Python => "py",
            ChatPeer::Go => "go",
        }
    }

    /// The program that runs this peer with `args`, and its arguments.
    /// Runs the setup script first.
    pub fn command(self, args: Vec<String>) -> (PathBuf, Vec<String>) {
        match self {
            ChatPeer::Python => {
                let script = interop_path("chat/py_client.py");
                let script = script.to_string_lossy().into_owned();
                (interop_python(), [vec![script], args].concat())
            }
            ChatPeer::Go => (interop_bin("go-chat-client"), args),
        }
    }
}

/// A chat peer's arguments to join `room` as `user` over `protocol`
/// (`chat-stream`, `chat`) on 127.0.0.1:`port`.
pub fn chat_peer_args(port: u16, room: &str, user: &str, protocol: &str) -> Vec<String> {
    [
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--room",
        room,
        "--user",
        user,
        "--protocol",
        protocol,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A long-lived peer process driven line by line: [`Peer::send_line`]
/// writes to its stdin, a reader thread hands every stdout line to the
/// callback given to [`Peer::spawn`], stderr goes to a log file. Killed when
/// dropped (its log is kept if the test is panicking).
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    pub label: String,
}

impl Peer {
    /// Starts `program args...`; `on_line` runs on a reader thread for each
    /// line of stdout, until the process closes it.
    pub fn spawn(
        program: &Path,
        args: &[String],
        label: &str,
        mut on_line: impl FnMut(String) + Send + 'static,
    ) -> Peer {
        let log = log_path(label);
        let err = File::create(&log).expect("create peer log");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", program.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        thread::Builder::new()
            .name(format!("{label} stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) => on_line(line),
                        Err(_) => break,
                    }
                }
            })
            .expect("spawn reader thread");
        Peer {
            stdin: child.stdin.take(),
            child,
            log,
            label: label.to_owned(),
        }
    }

    /// Writes `line` and a newline to the peer's stdin. Panics if the peer
    /// has closed it (exited), with its stderr.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin already closed", self.label));
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!(
                "{}: cannot write {line:?} to its stdin ({e}); stderr:\n{}",
                self.label,
                self.stderr()
            );
        }
    }

    /// The peer's process id (to send it a signal with `kill`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the peer's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// What the peer wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_log(&self.log)
    }

    /// Waits up to `timeout` for the peer to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// What a reader thread received so far (a child's stdout lines, a chat
/// member's events), shared with the test, which can wait for it.
pub struct Collected<T> {
    items: Mutex<Vec<T>>,
    changed: Condvar,
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Collected {
            items: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }
    }
}

impl<T: Clone> Collected<T> {
    pub fn push(&self, item: T) {
        self.items.lock().unwrap().push(item);
        self.changed.notify_all();
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }

    /// Waits up to `within` until `check` returns `Some` for the items so
    /// far.
    pub fn wait<R>(&self, within: Duration, mut check: impl FnMut(&[T]) -> Option<R>) -> Option<R> {
        let deadline = Instant::now() + within;
        let mut items = self.items.lock().unwrap();
        loop {
            if let Some(found) = check(&items) {
                return Some(found);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            items = self.changed.wait_timeout(items, left).unwrap().0;
        }
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
